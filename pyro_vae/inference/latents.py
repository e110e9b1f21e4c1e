r"""What the encoder says about each image: the moments of :math:`q(z \mid x)`, and active units.

Burda et al. (2016, §5.2) call latent dimension :math:`u` *active* when its posterior mean moves
with the data:

.. math:: A_u = \operatorname{Var}_{x}\big(\mathbb E_{q(z \mid x)}[z_u]\big) > 0.01 .

An inactive unit's posterior is (nearly) the same for every image, so the decoder cannot use it;
the count tells how much of the latent space a model really spends.

For Gaussian guide families the moments are read off the encoder output; for the others (IAF)
they are Monte Carlo averages of ``samples`` draws, whose noise adds about
:math:`\operatorname{Var}_q / \text{samples}` (below 0.004 for unit variance) to :math:`A_u`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model.vae import VAE

ACTIVE_UNIT_THRESHOLD = 0.01
MONTE_CARLO_SAMPLES = 256  # per image, for guide families without closed-form moments


@torch.no_grad()
def posterior_moments(
    vae: VAE, x: Tensor, *, batch_size: int = 500, samples: int = MONTE_CARLO_SAMPLES
) -> tuple[Tensor, Tensor]:
    r""":math:`\mathbb E_q[z]` and the marginal standard deviations of :math:`q(z \mid x)`, each ``(n, d)``
    on ``x``'s device, computed ``batch_size`` images at a time.

    Gaussian guides: the mean and :math:`\sqrt{\operatorname{diag} LL^\top}`. Other guides, and models with several
    latent layers (all layers side by side), draw ``samples`` per image from the global torch RNG (seed it for
    reproducible values): :meth:`~pyro_vae.model.vae.VAE.moments`.
    """
    means, scales = [], []
    for start in range(0, x.shape[0], batch_size):
        mean, scale = vae.moments(x[start : start + batch_size], samples)
        means.append(mean)
        scales.append(scale)
    return torch.cat(means), torch.cat(scales)


def latent_variances(means: Tensor) -> Tensor:
    r""":math:`A_u`: the variance over images of each dimension's posterior mean (``n - 1`` divisor)."""
    return means.double().var(dim=0)


def active_units(means: Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many latent dimensions have :math:`A_u` above ``threshold`` (``means``: ``(n, d)``)."""
    return int((latent_variances(means) > threshold).sum())


def active_units_per_layer(
    means: Tensor, latent_dims: tuple[int, ...], threshold: float = ACTIVE_UNIT_THRESHOLD
) -> list[int]:
    """:func:`active_units` of each latent layer, ``means`` holding the layers side by side (the first first)."""
    return [active_units(part, threshold) for part in means.split(list(latent_dims), dim=-1)]
