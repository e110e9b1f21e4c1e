r"""The hand-written analytic-KL ELBO: the yardstick every Pyro number is checked against.

It uses no Pyro: one reparameterised sample :math:`z = \mu + \sigma \odot \epsilon`,
:math:`\epsilon \sim \mathcal N(0, I)`, the likelihood's hand-written log-density, and the prior's
closed-form KL,

.. math::
    \mathrm{ELBO}(x) = \mathbb E_{q(z\mid x)}[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, p(z)),
    \qquad \mathrm{KL} = \tfrac12 \sum_j \left(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\right)
    \text{ for } p = \mathcal N(0, I).

``eps`` is drawn with ``torch.randn`` in the shape ``(K, batch, latent_dim)``: the same generator
calls a vectorised Pyro guide makes, so under the same seed both see identical ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .vae import VAE


@dataclass
class AnalyticELBO:
    """Per-datapoint terms, each of shape ``(batch,)``."""

    elbo: Tensor
    recon: Tensor
    kl: Tensor
    kl_method: str  # "analytic" or "monte-carlo" (the prior has no closed form)


def analytic_elbo(vae: VAE, x: Tensor, num_particles: int = 1, eps: Tensor | None = None) -> AnalyticELBO:
    """ELBO per datapoint from ``num_particles`` reparameterised samples and the closed-form KL."""
    loc, scale = vae.encoder(x)
    if eps is None:
        eps = torch.randn((num_particles, *loc.shape), dtype=loc.dtype, device=loc.device)
    z = loc + eps * scale
    recon = vae.likelihood.log_prob(vae.decoder(z), x).mean(0)
    kl = vae.prior.kl(loc, scale)
    kl_method = "analytic"
    if kl is None:
        # No closed form: Monte Carlo KL on the same samples, log q(z|x) - log p(z).
        log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        kl = (log_q - vae.prior().log_prob(z)).mean(0)
        kl_method = "monte-carlo"
    return AnalyticELBO(elbo=recon - kl, recon=recon, kl=kl, kl_method=kl_method)


def analytic_loss(vae: VAE, x: Tensor, eps: Tensor | None = None) -> Tensor:
    """Negative ELBO summed over the batch: the plain-PyTorch training loss, same scale as ``Trace_ELBO``."""
    return -analytic_elbo(vae, x, eps=eps).elbo.sum()
