r"""The hand-written analytic-KL ELBO: the yardstick every Pyro number is checked against.

It uses no Pyro: one reparameterised sample from the guide family's hand-written
``rsample_with_log_q`` (for the diagonal guide :math:`z = \mu + \sigma \odot \epsilon`,
:math:`\epsilon \sim \mathcal N(0, I)`), the likelihood's hand-written log-density, and the prior's
closed-form KL,

.. math::
    \mathrm{ELBO}(x) = \mathbb E_{q(z\mid x)}[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, p(z)),
    \qquad \mathrm{KL} = \tfrac12 \sum_j \left(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\right)
    \text{ for } p = \mathcal N(0, I).

Where the prior/guide pair has no closed-form KL (mixture, Vamp and flow priors; the IAF guide) the
KL is estimated on the same samples as :math:`\log q(z \mid x) - \log p(z)`, with the guide's
hand-written :math:`\log q` and the prior's ``log_density``, and ``kl_method`` says "monte-carlo".

For a structure with the label in it (a conditional VAE) ``x`` is its batch (images and labels,
:meth:`VAE.observations <pyro_vae.model.vae.VAE.observations>`), and the networks read the label as the Pyro
program does; the bound is then on :math:`\log p(x \mid y)`.

``eps`` is drawn with ``torch.randn`` in the shape ``(K, batch, latent_dim)``: the same generator
calls a vectorised Pyro guide makes, so under the same seed both see identical ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.vae import VAE


@dataclass
class AnalyticELBO:
    """Per-datapoint terms, each of shape ``(batch,)``."""

    elbo: Tensor
    recon: Tensor
    kl: Tensor
    kl_method: str  # "analytic", or "monte-carlo" where the prior/guide pair has no closed form
    layer_kl: Tensor | None = None  # (layers, batch): each latent layer's KL term, in a model with several


def analytic_elbo(
    vae: VAE, x: Tensor, num_particles: int = 1, eps: Tensor | None = None, kl_scale: float = 1.0
) -> AnalyticELBO:
    """ELBO per datapoint from ``num_particles`` reparameterised samples and the closed-form KL.

    With ``kl_scale`` (:math:`\\beta`) the ``elbo`` field is :math:`\\text{recon} - \\beta\\,\\text{KL}`.
    """
    params = vae.guide_params(x)
    images, labels = vae.split(x)
    if eps is None:
        shape = (num_particles, *params.shape[:-1], vae.latent_dim)
        eps = torch.randn(shape, dtype=params.dtype, device=params.device)
    z, log_q = vae.guide_family.rsample_with_log_q(params, eps)
    recon = vae.likelihood.log_prob(vae.decode(z, labels), images).mean(0)
    gaussian = vae.guide_family.gaussian(params)
    kl = vae.prior.kl(*gaussian) if gaussian is not None else None
    kl_method = "analytic"
    if kl is None:
        # No closed form: Monte Carlo KL on the same samples, log q(z|x) - log p(z).
        kl = (log_q - vae.prior.log_density(z)).mean(0)
        kl_method = "monte-carlo"
    return AnalyticELBO(elbo=recon - kl_scale * kl, recon=recon, kl=kl, kl_method=kl_method)


def analytic_loss(vae: VAE, x: Tensor, eps: Tensor | None = None, kl_scale: float = 1.0) -> Tensor:
    """Negative (β-weighted) ELBO summed over the batch: the plain-PyTorch loss, same scale as ``Trace_ELBO``."""
    return -analytic_elbo(vae, x, eps=eps, kl_scale=kl_scale).elbo.sum()
