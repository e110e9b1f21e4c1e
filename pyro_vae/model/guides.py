r"""Guide families :math:`q(z \mid x)`: how the encoder's output becomes a distribution over ``z``.

The protocol a guide family follows (subclass :class:`Guide`), mirroring :mod:`pyro_vae.model.likelihoods`:

* ``num_params``: how many numbers the encoder must produce per image;
* ``guide(params)`` returns a Pyro distribution with ``event_shape == (latent_dim,)``; the VAE's
  Pyro ``guide`` samples the latent site from it;
* ``guide.rsample_with_log_q(params, eps)``: the same reparameterised sample and its log-density,
  written by hand from standard-normal noise ``eps`` of shape ``(K,) + batch + (latent_dim,)`` (the
  draws Pyro makes under the same seed), for the analytic-KL yardstick;
* ``guide.gaussian(params)``: ``(loc, scale_tril)`` when :math:`q` is Gaussian, so priors can give a
  closed-form KL; ``None`` otherwise (the yardstick then uses a Monte Carlo KL).

In a model with several latent layers (:mod:`pyro_vae.model.hierarchical`) the guide family also says how the
layers are inferred: ``diagonal`` bottom-up, ``ladder`` top-down; ``layers`` names the families that can.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from ..options import Option
from .components import Component
from .priors import MAX_FLOWS

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def standard_normal_log_density(eps: Tensor) -> Tensor:
    r""":math:`\log \mathcal N(\epsilon; 0, I)`, summed over the last dimension."""
    return (-0.5 * eps.pow(2) - _HALF_LOG_2PI).sum(-1)


class Guide(Component, nn.Module):
    """Base class: encoder output ``batch + (num_params,)`` -> distribution over ``z``."""

    kind = "guide"
    num_params: int
    # log q(z|x) of any z in one pass (an IAF samples in one pass but needs inverting for a given z)
    one_pass_log_density: ClassVar[bool] = True
    # How a model with several latent layers infers them with this family: "bottom-up", "top-down" (only there),
    # or None (one layer only)
    layers: ClassVar[str | None] = None

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, params: Tensor) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def rsample_with_log_q(self, params: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor] | None:
        return None


class DiagonalGaussianGuide(Guide):
    r""":math:`q(z \mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)`; the encoder predicts
    :math:`\mu` and :math:`\log \sigma^2` (the log-var trick keeps :math:`\sigma` positive)."""

    name = "diagonal"
    layers = "bottom-up"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim

    def loc_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, logvar = params.chunk(2, dim=-1)
        return loc, torch.exp(0.5 * logvar)

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Normal(*self.loc_scale(params)).to_event(1)

    def rsample_with_log_q(self, params: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        loc, scale = self.loc_scale(params)
        return loc + scale * eps, standard_normal_log_density(eps) - torch.log(scale).sum(-1)

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        loc, scale = self.loc_scale(params)
        return loc, torch.diag_embed(scale)


class LadderGuide(DiagonalGaussianGuide):
    r"""The Ladder VAE's top-down inference (Sønderby et al. 2016), for ``--structure hierarchical`` only: the
    encoder's output is layer 1's bottom-up estimate :math:`(\hat\mu_1, \log \hat\sigma_1^2)`, and each layer's
    is a network of the one below; then from the top down each :math:`q(z_l \mid z_{l+1}, x)` is the
    precision-weighted merge of the layer's estimate and the generative :math:`p(z_l \mid z_{l+1})`
    (:func:`pyro_vae.model.hierarchical.precision_weighted`); the top layer's :math:`q(z_L \mid x)` is its
    estimate. As a component it turns parameters into a diagonal Gaussian as ``diagonal`` does; the model does the
    rest."""

    name = "ladder"
    layers = "top-down"


class FullCovGaussianGuide(Guide):
    r""":math:`q(z \mid x) = \mathcal N(\mu, L L^\top)` with a full lower-triangular :math:`L`: the
    encoder predicts :math:`\mu`, :math:`\log L_{jj}^2` and the :math:`D(D-1)/2` entries below the
    diagonal, so the posterior can capture correlations between latent coordinates."""

    name = "full-cov"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim + latent_dim * (latent_dim - 1) // 2

    def loc_scale_tril(self, params: Tensor) -> tuple[Tensor, Tensor]:
        d = self.latent_dim
        loc, log_diag_var, below = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]
        rows, cols = torch.tril_indices(d, d, offset=-1, device=params.device)
        scale_tril = params.new_zeros(*params.shape[:-1], d, d)
        scale_tril[..., rows, cols] = below
        return loc, scale_tril + torch.diag_embed(torch.exp(0.5 * log_diag_var))

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        loc, scale_tril = self.loc_scale_tril(params)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def rsample_with_log_q(self, params: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`z = \mu + L\epsilon`, :math:`\log q(z) = \log \mathcal N(\epsilon; 0, I) - \sum_j \log L_{jj}`."""
        loc, scale_tril = self.loc_scale_tril(params)
        z = loc + (scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        log_det = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
        return z, standard_normal_log_density(eps) - log_det

    def gaussian(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return self.loc_scale_tril(params)


class IAFGuide(Guide):
    r"""Inverse autoregressive flow (Kingma et al. 2016): a diagonal Gaussian sample :math:`z_0` pushed
    through ``num_flows`` of Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive`
    transforms, :math:`z_t = \mu_t(z_{t-1}) + \sigma_t(z_{t-1}) \odot z_{t-1}`, so

    .. math:: \log q(z_T \mid x) = \log \mathcal N(z_0; \mu, \mathrm{diag}\,\sigma^2)
              - \sum_t \sum_j \log \sigma_{t,j}(z_{t-1}).

    Sampling and the density of a sample each take one pass per flow. The flows are shared across
    images (the amortised part is the Gaussian); each has its own random variable order.
    """

    name = "iaf"
    one_pass_log_density = False

    def __init__(
        self,
        latent_dim: int,
        num_flows: Annotated[int, Option("inverse autoregressive transforms", min=1, max=MAX_FLOWS)] = 2,
        hidden: Annotated[
            int | None, Option("width of each transform's network [default: 4 x latent_dim]", min=1)
        ] = None,
    ) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim
        hidden = hidden or 4 * latent_dim
        self.flows = nn.ModuleList(T.affine_autoregressive(latent_dim, [hidden]) for _ in range(num_flows))
        self.base = DiagonalGaussianGuide(latent_dim)

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return dist.TransformedDistribution(self.base(params), list(self.flows))

    def rsample_with_log_q(self, params: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        z, log_q = self.base.rsample_with_log_q(params, eps)
        for flow in self.flows:
            z_next = flow(z)
            log_q = log_q - flow.log_abs_det_jacobian(z, z_next)
            z = z_next
        return z, log_q
