"""The generative model p(z) p(x|z) and the guide q(z|x): priors, likelihoods, guide families, networks,
the VAE that joins them, and the component registry (each component class declares its name and options)."""
