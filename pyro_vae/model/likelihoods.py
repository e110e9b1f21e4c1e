r"""Likelihoods :math:`p(x \mid z)`: how the decoder's output becomes a distribution over pixels.

The protocol a likelihood follows (subclass :class:`Likelihood`):

* ``num_params``: how many numbers per pixel value the decoder must produce (1 for Bernoulli logits);
  the decoder's output ``params`` has shape ``batch + (num_params, D)``, ``D = C*H*W`` in ``(C, H, W)`` order
  (a likelihood that needs the layout takes ``image_shape``; per-pixel ones work on colour images per channel).
* ``likelihood(params)`` returns a Pyro distribution with ``event_shape == (D,)``; the model
  observes the flattened image at it.
* ``likelihood.log_prob(params, x)``: the same log-density per datapoint written by hand with plain
  torch, used by the analytic-KL yardstick (:mod:`pyro_vae.inference.analytic`). The default falls back to the
  distribution's own ``log_prob``, so a user's likelihood needs only ``forward``.
* ``likelihood.check_data(x)`` raises :class:`~pyro_vae.errors.DataError` when the data cannot come
  from this likelihood (e.g. grey-level pixels under a Bernoulli).
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError
from ..options import Option
from .components import Component
from .distributions import ContinuousBernoulli as ContinuousBernoulliDist
from .distributions import DiscretizedLogistic as DiscretizedLogisticDist
from .distributions import DiscretizedLogisticMixture as DiscretizedLogisticMixtureDist
from .distributions import IndependentBernoulli, continuous_bernoulli_log_normaliser


class Likelihood(Component, nn.Module):
    """Base class: turns decoder output of shape ``batch + (num_params, D)`` into a distribution over x."""

    kind = "likelihood"
    num_params: int = 1
    discrete: ClassVar[bool] = False  # a probability mass over pixel values (then bits/dim are meaningful)
    binary_data: ClassVar[bool] = False  # only for pixels that are 0 or 1 (binarized data)

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

    name = "bernoulli"
    discrete = True
    binary_data = True

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return IndependentBernoulli(dist.Bernoulli(logits=params[..., 0, :]), 1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = params[..., 0, :]
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def check_data(self, x: Tensor) -> None:
        if not torch.all((x == 0) | (x == 1)):
            raise DataError(
                "the Bernoulli likelihood needs binary pixels but the data is grey-level; "
                "use --binarize dynamic or static, or a continuous likelihood (continuous-bernoulli, gaussian)"
            )


class ContinuousBernoulli(Likelihood):
    r"""Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) for grey-level pixels in [0, 1]:
    :math:`\log p(x) = \sum_i x_i \ell_i - \mathrm{softplus}(\ell_i) + \log C(\sigma(\ell_i))`,
    a proper density on [0, 1] (the plain Bernoulli "likelihood" of grey data is not).

    On a pixel that is exactly 0 (or 1) the density grows without bound as :math:`\ell \to \mp\infty`
    (:math:`p(0) \approx |\ell|`), and MNIST's border is all zeros; so the logit is the decoder output
    softly bounded to :math:`\pm` ``max_logit``, :math:`\ell = M \tanh(\text{output}/M)`, which caps
    each pixel's log-density at :math:`\log C(M)` (2.7 nats for :math:`M = 15`), as the scale floor of
    :class:`Gaussian` does. The distribution is :class:`pyro_vae.model.distributions.ContinuousBernoulli`,
    whose normaliser is exact at any logit (torch's is not beyond :math:`|\ell| \approx 16`)."""

    name = "continuous-bernoulli"

    def __init__(self, max_logit: Annotated[float, Option("soft bound M on the logits", min=0, min_open=True)] = 15.0):
        super().__init__()
        self.max_logit = max_logit

    def logits(self, params: Tensor) -> Tensor:
        return self.max_logit * torch.tanh(params[..., 0, :] / self.max_logit)

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return ContinuousBernoulliDist(logits=self.logits(params)).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self.logits(params)
        return (x * logits - F.softplus(logits) + continuous_bernoulli_log_normaliser(logits)).sum(-1)

    def check_data(self, x: Tensor) -> None:
        _require_unit_interval("continuous Bernoulli", x)


class _SigmoidMeanLikelihood(Likelihood):
    r"""Shared by :class:`Gaussian` and :class:`Laplace`: independent pixels with mean
    :math:`\mathrm{sigmoid}(\text{decoder output})` and a scale that is either the fixed number
    ``sigma`` or learned per pixel as :math:`\sigma_i = \sigma_{min} + \mathrm{softplus}(r_i)`,
    started at ``sigma``. The floor keeps the density bounded on pixels that are constant in the data
    (MNIST's border), where an unfloored scale would shrink to zero.
    """

    family: type[dist.TorchDistribution]

    def __init__(
        self,
        sigma: Annotated[float, Option("the fixed scale (the initial one when learned)", min=0, min_open=True)] = 0.1,
        learn_sigma: Annotated[bool, Option("learn one scale per pixel")] = False,
        data_dim: int | None = None,
        min_sigma: Annotated[float, Option("floor of a learned scale", min=0, min_open=True)] = 1e-2,
    ) -> None:
        super().__init__()
        self.check_options({"sigma": sigma, "learn_sigma": learn_sigma, "min_sigma": min_sigma})
        self.learn_sigma = learn_sigma
        self.min_sigma = min_sigma
        if learn_sigma:
            if data_dim is None:
                raise ValueError("a learned scale needs data_dim (pixels per image)")
            raw = math.log(math.expm1(sigma - min_sigma))  # inverse softplus
            self.raw_sigma = nn.Parameter(torch.full((data_dim,), raw))
        else:
            self.register_buffer("fixed_sigma", torch.tensor(float(sigma)))

    @classmethod
    def check_options(cls, options: dict) -> None:
        if options["sigma"] <= 0 or (options["learn_sigma"] and options["sigma"] <= options["min_sigma"]):
            raise ValueError(
                f"sigma must be positive (and above min_sigma={options['min_sigma']} when learned), "
                f"got {options['sigma']}"
            )

    def sigma(self) -> Tensor:
        if self.learn_sigma:
            return self.min_sigma + F.softplus(self.raw_sigma)
        return self.fixed_sigma

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        loc = torch.sigmoid(params[..., 0, :])
        return self.family(loc, self.sigma().expand_as(loc)).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self.pixel_log_density(x, torch.sigmoid(params[..., 0, :]), self.sigma()).sum(-1)

    def pixel_log_density(self, x: Tensor, loc: Tensor, sigma: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_data(self, x: Tensor) -> None:
        if not torch.isfinite(x).all():
            raise DataError(f"the {type(self).__name__} likelihood needs finite pixel values")


class Gaussian(_SigmoidMeanLikelihood):
    r"""Gaussian pixels: :math:`\log p(x_i) = -\tfrac12 \left(\tfrac{x_i - \mu_i}{\sigma}\right)^2
    - \log \sigma - \tfrac12 \log 2\pi` (with fixed ``sigma``: the tutorials' weighted squared error,
    with its normalising constant)."""

    name = "gaussian"
    family = dist.Normal

    def pixel_log_density(self, x: Tensor, loc: Tensor, sigma: Tensor) -> Tensor:
        return -0.5 * ((x - loc) / sigma).pow(2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)


class Laplace(_SigmoidMeanLikelihood):
    r"""Laplace pixels (an L1 reconstruction error with its normaliser), ``sigma`` being the scale
    :math:`b`: :math:`\log p(x_i) = -|x_i - \mu_i| / b - \log 2b`."""

    name = "laplace"
    family = dist.Laplace

    def pixel_log_density(self, x: Tensor, loc: Tensor, sigma: Tensor) -> Tensor:
        return -(x - loc).abs() / sigma - torch.log(2 * sigma)


class Beta(Likelihood):
    r"""Beta pixels for grey levels, with concentrations :math:`a, b = \mathrm{softplus}(\cdot) + 10^{-3}`.

    A Beta density is infinite or zero at exactly 0 and 1, where most MNIST pixels lie, so it models
    the squeezed pixel :math:`y = \epsilon + (1 - 2\epsilon)\,x` and reports the density of :math:`x`
    with the change of variables, :math:`\log p(x) = \sum_i \log \mathrm{Beta}(y_i; a_i, b_i) +
    D \log(1 - 2\epsilon)`: a proper density on :math:`[0, 1]^D`. The default
    :math:`\epsilon = 1/512` puts the 256 pixel levels :math:`k/255` at the bin centres :math:`(k + \tfrac12)/256`.
    """

    name = "beta"
    num_params = 2

    def __init__(
        self,
        eps: Annotated[float, Option("squeeze of [0, 1] into (eps, 1 - eps)", min=0, min_open=True, max=0.49)] = 1
        / 512,
    ) -> None:
        super().__init__()
        self.eps = eps

    def _concentrations(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return F.softplus(params[..., 0, :]) + 1e-3, F.softplus(params[..., 1, :]) + 1e-3

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        a, b = self._concentrations(params)
        squeeze = 1 - 2 * self.eps
        # x = (y - eps) / (1 - 2 eps): the Beta variable y mapped back to the pixel scale.
        to_pixels = dist.transforms.AffineTransform(-self.eps / squeeze, 1 / squeeze)
        return dist.TransformedDistribution(dist.Beta(a, b), [to_pixels]).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        a, b = self._concentrations(params)
        y = self.eps + (1 - 2 * self.eps) * x
        log_beta_fn = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
        pixel = (a - 1) * torch.log(y) + (b - 1) * torch.log1p(-y) - log_beta_fn + math.log(1 - 2 * self.eps)
        return pixel.sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        a, b = self._concentrations(params)
        return (a / (a + b) - self.eps) / (1 - 2 * self.eps)

    def check_data(self, x: Tensor) -> None:
        _require_unit_interval("Beta", x)


class DiscretizedLogistic(Likelihood):
    r"""Discretized logistic over the ``levels`` pixel values :math:`k/(L-1)` (see
    :mod:`pyro_vae.model.distributions`): a true discrete likelihood for grey-level images, so its ELBO is
    a bound on :math:`\log P(x)` and converts to bits/dim. Location :math:`\mathrm{sigmoid}(\cdot)`,
    scale :math:`s_{min} + \mathrm{softplus}(\cdot)`.
    """

    name = "discretized-logistic"
    num_params = 2
    discrete = True

    def __init__(
        self,
        levels: Annotated[int, Option("pixel levels k/(levels-1)", min=2, max=65536)] = 256,
        min_scale: Annotated[float, Option("floor of the logistic scale", min=0, min_open=True)] = 1e-3,
    ) -> None:
        super().__init__()
        self.levels, self.min_scale = levels, min_scale

    def _loc_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(params[..., 0, :]), self.min_scale + F.softplus(params[..., 1, :])

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return DiscretizedLogisticDist(*self._loc_scale(params), levels=self.levels).to_event(1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return _discretized_logistic_log_mass(x, *self._loc_scale(params), self.levels).sum(-1)

    def check_data(self, x: Tensor) -> None:
        _require_levels("discretized logistic", x, self.levels)


def _discretized_logistic_log_mass(x: Tensor, loc: Tensor, scale: Tensor, levels: int) -> Tensor:
    """Per pixel value, written independently of :mod:`~pyro_vae.model.distributions`: log sigma(hi) +
    log(1 - sigma(lo) / sigma(hi)), where sigma(a) - sigma(b) = sigma(-b) - sigma(-a) lets (hi, lo) stay in the
    lower tail, where logsigmoid keeps its precision."""
    h = 0.5 / (levels - 1)
    a, b = (x - loc + h) / scale, (x - loc - h) / scale
    flip = (a + b) > 0
    log_hi = F.logsigmoid(torch.where(flip, -b, a))
    log_lo = F.logsigmoid(torch.where(flip, -a, b))
    interior = log_hi + torch.log1p(-torch.exp(log_lo - log_hi))
    lowest, highest = F.logsigmoid(a), F.logsigmoid(-b)  # all mass below / above the end levels
    return torch.where(x < h, lowest, torch.where(x > 1 - h, highest, interior))


def _require_levels(name: str, x: Tensor, levels: int) -> None:
    _require_unit_interval(name, x)
    steps = x * (levels - 1)
    if not torch.allclose(steps, steps.round(), atol=1e-3):
        raise DataError(
            f"the {name} likelihood needs pixels on the {levels} levels k/{levels - 1}; this data is not quantised "
            "that way"
        )


class LogisticMixture(Likelihood):
    r"""A mixture of ``mixture_components`` discretized logistics per pixel location over 8-bit levels, with the
    colour channels linearly dependent (PixelCNN++, Salimans et al. 2017; see
    :class:`~pyro_vae.model.distributions.DiscretizedLogisticMixture`); on grey images, a plain mixture per pixel.

    The decoder gives ``4K`` numbers per pixel value: for channel ``c`` of a location, component ``k``'s logit
    share (the mixture logit is the sum over the channels), location :math:`\mathrm{sigmoid}(\cdot)`, scale
    :math:`s_{min} + \mathrm{softplus}(\cdot)` and coefficient :math:`\tanh(\cdot)` (channel 0's is
    :math:`\alpha`, 1's :math:`\beta`, 2's :math:`\gamma`).
    """

    name = "logistic-mixture"
    discrete = True

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        mixture_components: Annotated[
            int, Option("logistics mixed per pixel location", min=1, max=100, flag="--mixture-components")
        ] = 5,
        levels: Annotated[int, Option("pixel levels k/(levels-1)", min=2, max=65536)] = 256,
        min_scale: Annotated[float, Option("floor of the logistic scale", min=0, min_open=True)] = 1e-3,
    ) -> None:
        super().__init__()
        if image_shape[0] not in (1, 3):
            raise ValueError(f"it takes grey (1 channel) or RGB (3 channel) images, not {image_shape[0]} channels")
        self.image_shape, self.levels, self.min_scale = tuple(image_shape), levels, min_scale
        self.num_params = 4 * mixture_components

    def _parts(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(logits (..., K, L), loc, scale, coeffs (..., K, C, L))`` from ``params`` ``(..., 4K, C*L)``."""
        p = params.unflatten(-1, (self.image_shape[0], -1)).unflatten(-3, (4, -1))  # (..., 4, K, C, L)
        loc = torch.sigmoid(p[..., 1, :, :, :])
        return (
            p[..., 0, :, :, :].sum(-2),
            loc,
            self.min_scale + F.softplus(p[..., 2, :, :, :]),
            torch.tanh(p[..., 3, :, :, :]),
        )

    def forward(self, params: Tensor) -> dist.TorchDistribution:
        return DiscretizedLogisticMixtureDist(*self._parts(params), levels=self.levels)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        logits, loc, scale, coeffs = self._parts(params)
        v = x.unflatten(-1, (self.image_shape[0], -1)).unsqueeze(-3)  # (..., 1, C, L)
        means = [loc[..., 0, :]]
        if self.image_shape[0] == 3:
            means += [
                loc[..., 1, :] + coeffs[..., 0, :] * v[..., 0, :],
                loc[..., 2, :] + coeffs[..., 1, :] * v[..., 0, :] + coeffs[..., 2, :] * v[..., 1, :],
            ]
        per_channel = sum(
            _discretized_logistic_log_mass(v[..., c, :], m, scale[..., c, :], self.levels) for c, m in enumerate(means)
        )
        return (torch.logsumexp(per_channel + logits, -2) - torch.logsumexp(logits, -2)).sum(-1)

    def check_data(self, x: Tensor) -> None:
        _require_levels("logistic mixture", x, self.levels)
