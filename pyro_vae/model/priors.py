r"""Priors :math:`p(z)` over the latent code.

The protocol a prior follows (subclass :class:`Prior`):

* ``prior()`` returns a Pyro distribution with ``event_shape == (latent_dim,)`` and empty batch
  shape; the model's ``pyro.plate`` broadcasts it over the batch (and over particles).
* ``prior.kl(q_loc, q_scale_tril)`` returns the closed-form
  :math:`\mathrm{KL}(\mathcal N(\mu, L L^\top) \,\|\, p)` per datapoint, written by hand
  without Pyro, or ``None`` when there is no closed form (the analytic cross-check then falls back to
  a Monte Carlo KL and says so). A diagonal guide passes :math:`L = \mathrm{diag}\,\sigma`.
* ``prior.log_density(z)``: :math:`\log p(z)` for that Monte Carlo KL; override it with a
  hand-written formula where one exists (the default is the distribution's own ``log_prob``).
* ``prior.attach(posterior)`` is called once by the :class:`~pyro_vae.model.vae.VAE` that owns the prior,
  with its map from images to :math:`q(z \mid x)` (the VampPrior evaluates it at its pseudo-inputs).

A prior class declares its ``name`` and its options as typed constructor parameters
(:mod:`pyro_vae.model.components`); ``latent_dim`` (and ``data_dim``) are passed down by the model.

Trainable priors register their parameters as ordinary ``nn.Parameter``\ s; the model hands the
prior to ``pyro.module`` so SVI trains them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import Tensor, nn

from ..options import Option
from .components import Component

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_kl(q_loc: Tensor, q_scale_tril: Tensor, p_loc: Tensor, p_scale: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(\mu, L L^\top) \,\|\, \mathcal N(m, \mathrm{diag}\, s^2))` per datapoint:

    .. math:: \tfrac12 \Big( \sum_j \frac{(LL^\top)_{jj} + (\mu_j - m_j)^2}{s_j^2} - D
              + 2 \sum_j \log s_j - 2 \sum_j \log L_{jj} \Big).
    """
    q_var = q_scale_tril.pow(2).sum(-1)  # diagonal of L L^T
    p_var = p_scale.pow(2)
    log_det_q = torch.diagonal(q_scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    ratio = ((q_var + (q_loc - p_loc).pow(2)) / p_var).sum(-1)
    return 0.5 * (ratio - q_loc.shape[-1]) + torch.log(p_scale).sum(-1) - log_det_q


def diagonal_gaussian_kl(q_loc: Tensor, q_scale: Tensor, p_loc: Tensor, p_scale: Tensor) -> Tensor:
    r""":math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\, \sigma^2) \,\|\, \mathcal N(m, \mathrm{diag}\, s^2))` per
    datapoint, both diagonal (:func:`gaussian_kl` without the :math:`D \times D` factor):
    :math:`\sum_j \big(\log s_j - \log \sigma_j + \frac{\sigma_j^2 + (\mu_j - m_j)^2}{2 s_j^2} - \frac12\big)`."""
    ratio = (q_scale.pow(2) + (q_loc - p_loc).pow(2)) / p_scale.pow(2)
    return (torch.log(p_scale) - torch.log(q_scale) + 0.5 * ratio - 0.5).sum(-1)


class Prior(Component, nn.Module):
    """Base class: a distribution over ``z`` in :math:`\\mathbb R^{latent\\_dim}`."""

    kind = "prior"
    # True when the prior evaluates the guide's density at points of its own (the VampPrior), which a guide
    # without a one-pass log-density (the IAF) can only do by inverting its flow.
    uses_guide_density: ClassVar[bool] = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def kl(self, q_loc: Tensor, q_scale_tril: Tensor) -> Tensor | None:
        """Closed-form KL from the Gaussian posterior :math:`\\mathcal N(\\mu, LL^\\top)` to this prior, or ``None``."""
        return None

    def log_density(self, z: Tensor) -> Tensor:
        """:math:`\\log p(z)` (for the Monte Carlo KL); the distribution's own unless overridden."""
        return self().log_prob(z)

    def attach(self, posterior: Callable[[Tensor], dist.TorchDistribution]) -> None:
        """Called by the VAE that owns this prior with its ``x -> q(z | x)``; most priors need nothing from it."""


class StandardNormal(Prior):
    r""":math:`p(z) = \mathcal N(0, I)`; for a diagonal guide

    .. math:: \mathrm{KL}(q \,\|\, p) = \tfrac12 \sum_j \left(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\right).
    """

    name = "standard-normal"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        # Buffers, so .to(device) moves them with the model.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)

    def kl(self, q_loc: Tensor, q_scale_tril: Tensor) -> Tensor:
        return gaussian_kl(q_loc, q_scale_tril, self.loc, self.scale)


class LearnedGaussian(Prior):
    r""":math:`p(z) = \mathcal N(m, \mathrm{diag}\, s^2)` with trainable :math:`m` and :math:`\log s`
    (started at the standard normal); the KL is :func:`gaussian_kl`."""

    name = "learned-gaussian"

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def kl(self, q_loc: Tensor, q_scale_tril: Tensor) -> Tensor:
        return gaussian_kl(q_loc, q_scale_tril, self.loc, self.log_scale.exp())


def diagonal_mixture_log_density(z: Tensor, logits: Tensor, locs: Tensor, scales: Tensor) -> Tensor:
    r""":math:`\log \sum_k \pi_k \mathcal N(z; m_k, \mathrm{diag}\, s_k^2)` by hand (``locs``: ``(K, D)``)."""
    z = z.unsqueeze(-2)  # (..., 1, D) against K components
    per_dim = -0.5 * ((z - locs) / scales).pow(2) - torch.log(scales) - _HALF_LOG_2PI
    return torch.logsumexp(torch.log_softmax(logits, -1) + per_dim.sum(-1), dim=-1)


class MixtureOfGaussians(Prior):
    r""":math:`p(z) = \sum_k \pi_k \mathcal N(m_k, \mathrm{diag}\, s_k^2)` with ``num_components``
    trainable components and weights (Pyro's ``MixtureSameFamily``). The means start as
    standard-normal draws so the components are distinct. No closed-form KL: the cross-check uses
    a Monte Carlo KL with the hand-written mixture density."""

    name = "mog"

    def __init__(
        self, latent_dim: int, num_components: Annotated[int, Option("mixture components", min=1)] = 10
    ) -> None:
        super().__init__(latent_dim)
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scales = nn.Parameter(torch.zeros(num_components, latent_dim))

    def forward(self) -> dist.TorchDistribution:
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    def log_density(self, z: Tensor) -> Tensor:
        return diagonal_mixture_log_density(z, self.logits, self.locs, self.log_scales.exp())


class VampPrior(Prior):
    r"""VampPrior (Tomczak & Welling 2018): the guide averaged over ``num_components`` trainable
    pseudo-inputs :math:`u_k`, :math:`p(z) = \frac1K \sum_k q(z \mid u_k)`.

    The pseudo-inputs live in pixel space as :math:`\mathrm{sigmoid}(r_k)` (so they stay images in
    [0, 1]) and start near 0.05 as in the paper. They go through the VAE's own encoder and guide
    family, which :meth:`attach` hands over (held outside the module tree, so the encoder's weights
    are stored once, in the VAE). No closed-form KL: the cross-check uses a Monte Carlo KL.
    """

    name = "vamp"
    uses_guide_density = True

    def __init__(
        self,
        latent_dim: int,
        num_components: Annotated[int, Option("pseudo-inputs", min=1)] = 500,
        *,
        data_dim: int,
    ) -> None:
        super().__init__(latent_dim)
        self.pseudo_logits = nn.Parameter(math.log(0.05 / 0.95) + 0.1 * torch.randn(num_components, data_dim))
        self._posterior: list = []  # [the VAE's x -> q(z|x)]; a list, so nn.Module registers nothing

    def attach(self, posterior: Callable[[Tensor], dist.TorchDistribution]) -> None:
        self._posterior[:] = [posterior]

    def pseudo_inputs(self) -> Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def forward(self) -> dist.TorchDistribution:
        if not self._posterior:
            raise RuntimeError("a VampPrior must belong to a VAE (it uses the VAE's encoder)")
        components = self._posterior[0](self.pseudo_inputs())  # batch (K,), event (D,)
        weights = dist.Categorical(logits=self.pseudo_logits.new_zeros(self.pseudo_logits.shape[0]))
        return dist.MixtureSameFamily(weights, components)


MAX_FLOWS = 1000  # each transform is a network of its own: more would take hours to build
FLOW_TRANSFORMS = {"affine": T.affine_autoregressive, "spline": T.spline_autoregressive}


class FlowPrior(Prior):
    r"""A standard normal pushed through ``num_flows`` of Pyro's autoregressive transforms
    (``transform="affine"``: :class:`~pyro.distributions.transforms.AffineAutoregressive`;
    ``"spline"``: :class:`~pyro.distributions.transforms.SplineAutoregressive`).

    The prior is :math:`z = f^{-1}(u)`, :math:`u \sim \mathcal N(0, I)`, with each :math:`f_t`
    autoregressive, so its density :math:`\log p(z) = \log \mathcal N(f(z); 0, I) + \log |\det J_f(z)|`
    (what the ELBO needs at every step) takes one pass per flow; sampling from the prior is the
    sequential direction. No closed-form KL: the cross-check uses a Monte Carlo KL.
    """

    name = "flow"

    def __init__(
        self,
        latent_dim: int,
        num_flows: Annotated[int, Option("autoregressive transforms", min=1, max=MAX_FLOWS)] = 2,
        transform: Annotated[
            Literal[tuple(FLOW_TRANSFORMS)], Option("Pyro's affine or spline autoregressive transform")
        ] = "affine",
        hidden: Annotated[
            int | None, Option("width of each transform's network [default: 4 x latent_dim]", min=1)
        ] = None,
    ) -> None:
        super().__init__(latent_dim)
        hidden = hidden or 4 * latent_dim
        self.flows = nn.ModuleList(FLOW_TRANSFORMS[transform](latent_dim, [hidden]) for _ in range(num_flows))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        base = dist.Normal(self.loc, self.scale).to_event(1)
        # z = f^{-1}(u): listed from u to z, so the flows appear inverted and in reverse order.
        return dist.TransformedDistribution(base, [flow.inv for flow in reversed(self.flows)])
