"""Inference: the SVI objectives, the fast SVI step, the bounds (ELBO, IWAE), the hand-written analytic-KL
ELBO that cross-checks them, and posterior summaries."""
