r"""Priors :math:`p(z)` over the latent code.

The protocol a prior follows (subclass :class:`Prior`):

* ``prior()`` returns a Pyro distribution with ``event_shape == (latent_dim,)`` and empty batch
  shape; the model's ``pyro.plate`` broadcasts it over the batch (and over particles).
* ``prior.kl(q_loc, q_scale)`` returns the closed-form
  :math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2) \,\|\, p)` per datapoint, written by hand
  without Pyro, or ``None`` when there is no closed form (the analytic cross-check then falls back to
  a Monte Carlo KL and says so).

Trainable priors register their parameters as ordinary ``nn.Parameter``\ s; the model hands the
prior to ``pyro.module`` so SVI trains them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import pyro.distributions as dist

from .components import Component


class Prior(Component, nn.Module):
    """Base class: a distribution over ``z`` in :math:`\\mathbb R^{latent\\_dim}`."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def kl(self, q_loc: Tensor, q_scale: Tensor) -> Tensor | None:
        """Closed-form KL from the diagonal Gaussian posterior to this prior, or ``None``."""
        return None


class StandardNormal(Prior):
    r""":math:`p(z) = \mathcal N(0, I)`, with

    .. math:: \mathrm{KL}(q \,\|\, p) = \tfrac12 \sum_j \left(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\right).
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        # Buffers, so .to(device) moves them with the model.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def kl(self, q_loc: Tensor, q_scale: Tensor) -> Tensor:
        var = q_scale.pow(2)
        return 0.5 * (q_loc.pow(2) + var - 1.0 - var.log()).sum(-1)


PRIORS: dict[str, type[Prior]] = {"standard-normal": StandardNormal}
