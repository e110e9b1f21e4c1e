r"""Per-image bounds from Pyro traces, and their cross-check against the analytic-KL yardstick.

For particles :math:`z_k \sim q(z \mid x)` the log importance weights are
:math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`, read off a guide trace and the model
replayed on it, so they are exactly the summands of ``Trace_ELBO``. From them:

.. math::
    \mathrm{ELBO} \approx \frac1K \sum_k \log w_k, \qquad
    \mathrm{IWAE}_K = \log \frac1K \sum_k w_k \;\le\; \log p(x),

the second being the per-datapoint bound that ``RenyiELBO(alpha=0)`` optimises (Burda et al. 2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from .analytic import analytic_elbo
from .errors import AgreementError
from .vae import VAE

AGREEMENT_Z_LIMIT = 4.0
ROUNDING = 1e-6  # relative float32 error of a sum over ~1000 pixels: differences below it are not disagreement
_ELEMENTS_PER_CHUNK = 1 << 22  # decoder outputs held at once in the IWAE pass (16 MiB of float32)


def log_weights(vae: VAE, x: Tensor, num_particles: int = 1) -> Tensor:
    r""":math:`\log p(x, z_k) - \log q(z_k \mid x)` of shape ``(num_particles, batch)``, from Pyro traces."""
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    total = x.new_zeros(num_particles, x.shape[0])
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                total = total + sign * site["log_prob"]
    return total


def iwae_bound(vae: VAE, x: Tensor, k: int) -> Tensor:
    """The importance-weighted bound per datapoint with ``k`` samples, in particle chunks of bounded memory."""
    chunk = max(1, min(k, _ELEMENTS_PER_CHUNK // max(1, x.shape[0] * x.shape[-1])))
    parts = [log_weights(vae, x, min(chunk, k - start)) for start in range(0, k, chunk)]
    return torch.logsumexp(torch.cat(parts), dim=0) - math.log(k)


def _mean_stderr(values: Tensor) -> tuple[float, float]:
    values = values.double()
    stderr = values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else float("nan")
    return values.mean().item(), stderr


@dataclass
class Evaluation:
    """Per-image values (CPU tensors of shape ``(n,)``) and their summaries, in nats per image."""

    elbo: Tensor  # Pyro, num_particles samples
    elbo_analytic: Tensor  # hand-written, same random draws
    recon: Tensor
    kl: Tensor
    iwae: Tensor | None
    num_particles: int
    iwae_k: int
    kl_method: str
    seed: int
    data_dim: int = 784
    discrete: bool = False  # the likelihood is a probability mass: bounds also in bits/dim

    @property
    def agreement_z(self) -> float:
        """Mean paired difference (Pyro - analytic) over its standard error; ~N(0, 1) when both are right.

        Where both sides compute the same numbers (a Monte Carlo KL on shared draws) the paired
        differences are float32 rounding with a tiny spread; the standard error is floored at
        ``ROUNDING * mean |ELBO|`` so rounding alone never fails the check. NaN for a single image
        (no standard error): agreement cannot be assessed then.
        """
        mean, stderr = _mean_stderr(self.elbo - self.elbo_analytic)
        if math.isnan(stderr):
            return math.nan
        stderr = max(stderr, ROUNDING * self.elbo.double().abs().mean().item())
        if stderr == 0:
            return 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return mean / stderr

    def summary(self) -> dict:
        elbo, elbo_se = _mean_stderr(self.elbo)
        an, an_se = _mean_stderr(self.elbo_analytic)
        out = {
            "n": self.elbo.numel(),
            "elbo": elbo,
            "elbo_stderr": elbo_se,
            "elbo_analytic": an,
            "elbo_analytic_stderr": an_se,
            "agreement_z": self.agreement_z,
            "recon": _mean_stderr(self.recon)[0],
            "kl": _mean_stderr(self.kl)[0],
            "kl_method": self.kl_method,
            "num_particles": self.num_particles,
            "seed": self.seed,
        }
        if self.iwae is not None:
            iwae, iwae_se = _mean_stderr(self.iwae)
            out.update(iwae=iwae, iwae_stderr=iwae_se, iwae_k=self.iwae_k)
        if self.discrete:
            out["elbo_bits_per_dim"] = self.bits_per_dim(elbo)
            if self.iwae is not None:
                out["iwae_bits_per_dim"] = self.bits_per_dim(out["iwae"])
        return out

    def bits_per_dim(self, nats_per_image: float) -> float:
        """A log-likelihood bound in nats per image as bits per pixel (lower is better)."""
        return -nats_per_image / (self.data_dim * math.log(2))

    def check_agreement(self, limit: float = AGREEMENT_Z_LIMIT) -> None:
        """Raise :class:`AgreementError` when the two ELBOs differ beyond ``limit`` standard errors."""
        if self.elbo.numel() < 2:
            return  # no standard error, nothing to assess
        z = self.agreement_z
        if not abs(z) < limit:  # NaN fails too
            raise AgreementError(
                f"Pyro ELBO {self.elbo.mean():.4f} and analytic-KL ELBO {self.elbo_analytic.mean():.4f} "
                f"disagree: agreement z = {z:.2f} (|z| must be < {limit:g}); a KL, log-density or guide is wrong"
            )


@torch.no_grad()
def evaluate(
    vae: VAE,
    x: Tensor,
    *,
    num_particles: int = 1,
    iw_samples: int = 100,
    batch_size: int = 500,
    seed: int = 0,
) -> Evaluation:
    """Evaluate ``vae`` on images ``x`` (on the model's device).

    Each batch is seeded from ``seed`` and its index, and the Pyro pass and the analytic pass
    replay the same seed, so they see the same ``z`` (common random numbers make the paired
    difference precise). ``iw_samples=0`` skips the importance-weighted bound.
    """
    was_training = vae.training
    vae.eval()
    pyro_elbo, an_elbo, recon, kl, iwae = [], [], [], [], []
    kl_method = "analytic"
    try:
        with pyro.get_param_store().scope():  # keep evaluation out of the user's param store
            for i, start in enumerate(range(0, x.shape[0], batch_size)):
                xb = x[start : start + batch_size]
                batch_seed = seed * 1_000_003 + i
                torch.manual_seed(batch_seed)
                pyro_elbo.append(log_weights(vae, xb, num_particles).mean(0).cpu())
                torch.manual_seed(batch_seed)
                terms = analytic_elbo(vae, xb, num_particles)
                an_elbo.append(terms.elbo.cpu())
                recon.append(terms.recon.cpu())
                kl.append(terms.kl.cpu())
                kl_method = terms.kl_method
                if iw_samples > 0:
                    torch.manual_seed(batch_seed + 500_000)
                    iwae.append(iwae_bound(vae, xb, iw_samples).cpu())
    finally:
        vae.train(was_training)
    return Evaluation(
        elbo=torch.cat(pyro_elbo),
        elbo_analytic=torch.cat(an_elbo),
        recon=torch.cat(recon),
        kl=torch.cat(kl),
        iwae=torch.cat(iwae) if iwae else None,
        num_particles=num_particles,
        iwae_k=iw_samples,
        kl_method=kl_method,
        seed=seed,
        data_dim=x.shape[-1],
        discrete=getattr(vae.likelihood, "discrete", False),
    )
