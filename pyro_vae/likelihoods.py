r"""Likelihoods :math:`p(x \mid z)`: how the decoder's output becomes a distribution over pixels.

The protocol a likelihood follows (subclass :class:`Likelihood`):

* ``num_params``: how many numbers per pixel the decoder must produce (1 for Bernoulli logits);
  the decoder's output ``params`` has shape ``batch + (num_params, D)``.
* ``likelihood(params)`` returns a Pyro distribution with ``event_shape == (D,)``; the model
  observes the flattened image at it.
* ``likelihood.log_prob(params, x)``: the same log-density per datapoint written by hand with plain
  torch, used by the analytic-KL yardstick (:mod:`pyro_vae.analytic`). The default falls back to the
  distribution's own ``log_prob``, so a user's likelihood needs only ``forward``.
* ``likelihood.check_data(x)`` raises :class:`~pyro_vae.errors.DataError` when the data cannot come
  from this likelihood (e.g. grey-level pixels under a Bernoulli).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pyro.distributions as dist

from .components import Component
from .errors import DataError


class Likelihood(Component, nn.Module):
    """Base class: turns decoder output of shape ``batch + (num_params, D)`` into a distribution over x."""

    num_params: int = 1

    def forward(self, params: Tensor) -> dist.TorchDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x | params)`` summed over pixels; override with a hand-written formula."""
        return self(params).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        """The expected image under the likelihood (for reconstructions and samples)."""
        return self(params).mean

    def check_data(self, x: Tensor) -> None:
        """Raise :class:`DataError` if ``x`` is outside this likelihood's support."""


def _require_unit_interval(name: str, x: Tensor) -> None:
    lo, hi = x.min().item(), x.max().item()
    if lo < 0.0 or hi > 1.0:
        raise DataError(f"the {name} likelihood needs pixels in [0, 1], got values in [{lo:g}, {hi:g}]")


class Bernoulli(Likelihood):
    r"""Independent Bernoulli pixels for binary data, parameterised by logits :math:`\ell`:
    :math:`\log p(x) = \sum_i x_i \ell_i - \mathrm{softplus}(\ell_i)`."""

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=params[..., 0, :]).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[..., 0, :]
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def check_data(self, x: Tensor) -> None:
        if not torch.all((x == 0) | (x == 1)):
            raise DataError(
                "the Bernoulli likelihood needs binary pixels but the data is grey-level; "
                "use --binarize dynamic or static, or a continuous likelihood (continuous-bernoulli, gaussian)"
            )


def _log_cb_normaliser(logits: Tensor) -> Tensor:
    r"""Log of the continuous-Bernoulli normaliser :math:`C(\lambda)`, :math:`\lambda = \sigma(\ell)`.

    :math:`C(\lambda) = \frac{2\,\mathrm{artanh}(1 - 2\lambda)}{1 - 2\lambda} = \frac{\ell}{\tanh(\ell/2)}`,
    which tends to 2 as :math:`\ell \to 0`; near 0 the Taylor series
    :math:`\log 2 + \ell^2/12 - 7\ell^4/1440` avoids 0/0.
    """
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2))
    series = math.log(2.0) + logits.pow(2) / 12 - 7 * logits.pow(4) / 1440
    return torch.where(small, series, exact)


class ContinuousBernoulli(Likelihood):
    r"""Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) for grey-level pixels in [0, 1]:
    :math:`\log p(x) = \sum_i x_i \ell_i - \mathrm{softplus}(\ell_i) + \log C(\sigma(\ell_i))`,
    a proper density on [0, 1] (the plain Bernoulli "likelihood" of grey data is not)."""

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=params[..., 0, :]).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[..., 0, :]
        return (x * logits - F.softplus(logits) + _log_cb_normaliser(logits)).sum(-1)

    def check_data(self, x: Tensor) -> None:
        _require_unit_interval("continuous Bernoulli", x)


class Gaussian(Likelihood):
    r"""Independent Gaussian pixels, mean :math:`\mathrm{sigmoid}(\text{decoder output})`.

    With ``learn_sigma=False`` the standard deviation is the fixed number ``sigma`` (the
    sigma-weighted squared error of the tutorials, with its normalising constant). With
    ``learn_sigma=True`` each pixel has its own trainable :math:`\sigma_i = \sigma_{min} +
    \mathrm{softplus}(r_i)`, started at ``sigma``; the floor keeps the density bounded on pixels that
    are constant in the data (MNIST's border), where an unfloored sigma would shrink to zero.
    """

    def __init__(
        self, sigma: float = 0.1, learn_sigma: bool = False, data_dim: int = 784, min_sigma: float = 1e-2
    ) -> None:
        super().__init__()
        if sigma <= 0 or (learn_sigma and sigma <= min_sigma):
            raise ValueError(f"sigma must be positive (and above min_sigma={min_sigma} when learned), got {sigma}")
        self.learn_sigma = learn_sigma
        self.min_sigma = min_sigma
        if learn_sigma:
            raw = math.log(math.expm1(sigma - min_sigma))  # inverse softplus
            self.raw_sigma = nn.Parameter(torch.full((data_dim,), raw))
        else:
            self.register_buffer("fixed_sigma", torch.tensor(float(sigma)))

    def sigma(self) -> Tensor:
        if self.learn_sigma:
            return self.min_sigma + F.softplus(self.raw_sigma)
        return self.fixed_sigma

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        loc = torch.sigmoid(params[..., 0, :])
        return dist.Normal(loc, self.sigma().expand_as(loc)).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc = torch.sigmoid(params[..., 0, :])
        sigma = self.sigma()
        return (-0.5 * ((x - loc) / sigma).pow(2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def check_data(self, x: Tensor) -> None:
        if not torch.isfinite(x).all():
            raise DataError("the Gaussian likelihood needs finite pixel values")


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "continuous-bernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
}
