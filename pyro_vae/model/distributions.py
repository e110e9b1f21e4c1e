r"""Distributions torch lacks or gets wrong in the tails.

The discretized logistic: a distribution over the ``levels`` pixel values :math:`0, \tfrac1{L-1}, \dots, 1`.

A logistic with location :math:`\mu` and scale :math:`s` is binned at the pixel levels (Salimans et al.
2017, PixelCNN++): with half a bin :math:`h = \tfrac{1}{2(L-1)}`,

.. math::
    P(x) = \sigma\!\left(\tfrac{x - \mu + h}{s}\right) - \sigma\!\left(\tfrac{x - \mu - h}{s}\right),

where the lowest level takes all mass below it (its lower term is 0) and the highest all mass above
it (its upper term is 1), so the :math:`L` probabilities sum to one and ``log_prob`` is a true discrete
log-likelihood (bits/dim are meaningful).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all


def log_sigmoid_difference(a: Tensor, b: Tensor) -> Tensor:
    r""":math:`\log(\sigma(a) - \sigma(b))` for :math:`a > b`, without cancellation in either tail.

    :math:`\sigma(a) - \sigma(b) = \sigma(a)\,(1 - \sigma(b)) \, (1 - e^{b - a})`.
    """
    return -F.softplus(-a) - F.softplus(b) + torch.log(-torch.expm1(b - a))


class DiscretizedLogistic(TorchDistribution):
    """Independent discretized logistics (batch shape of ``loc``/``scale``, event shape ``()``)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, levels: int = 256, validate_args: bool | None = None):
        self.loc, self.scale = broadcast_all(loc, scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def half_bin(self) -> float:
        return 0.5 / (self.levels - 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.levels = self.levels
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        h = self.half_bin
        upper = (value - self.loc + h) / self.scale
        lower = (value - self.loc - h) / self.scale
        interior = log_sigmoid_difference(upper, lower)
        lowest = -F.softplus(-upper)  # log sigma(upper): all mass below the first level
        highest = -F.softplus(lower)  # log(1 - sigma(lower)): all mass above the last level
        return torch.where(value < h, lowest, torch.where(value > 1 - h, highest, interior))

    def sample(self, sample_shape=torch.Size()) -> Tensor:  # noqa: B008 (torch's signature)
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            continuous = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            return torch.round(continuous.clamp(0, 1) * (self.levels - 1)) / (self.levels - 1)

    def level_log_probs(self) -> Tensor:
        """``log P(x = k / (levels - 1))`` for every level, shape ``(levels,) + batch_shape``."""
        grid = torch.linspace(0, 1, self.levels, dtype=self.loc.dtype, device=self.loc.device)
        return self.log_prob(grid.reshape(-1, *([1] * self.loc.dim())))

    @property
    def mean(self) -> Tensor:
        grid = torch.linspace(0, 1, self.levels, dtype=self.loc.dtype, device=self.loc.device)
        return (self.level_log_probs().exp() * grid.reshape(-1, *([1] * self.loc.dim()))).sum(0)


def continuous_bernoulli_log_normaliser(logits: Tensor) -> Tensor:
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


class ContinuousBernoulli(dist.ContinuousBernoulli):
    r"""Pyro's (torch's) continuous Bernoulli with a log-normaliser that is exact for any logit.

    torch computes :math:`\log C` from probabilities clamped to float epsilon, so beyond
    :math:`|\ell| \approx 16` it is too small by up to :math:`\log(|\ell| / 16)` per pixel: 2.2 nats at
    :math:`\ell = -148`, a logit a decoder trained on MNIST's empty border reaches. Here
    :math:`\log p(x) = -\mathrm{BCE}(\ell, x) + \log C(\ell)` with
    :func:`continuous_bernoulli_log_normaliser` computed from the logit itself.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none") + (
            continuous_bernoulli_log_normaliser(logits)
        )


class IndependentBernoulli(dist.Independent):
    r"""``Bernoulli(logits=ℓ).to_event(1)``, with the log-probability summed before it is negated.

    .. math:: \log p(x) = -\sum_i \mathrm{BCE}(\ell_i, x_i)

    torch's Bernoulli negates the per-pixel cross-entropy (an image-sized pass, forward and
    backward) and then ``Independent`` sums it; here the sum comes first and the negation touches
    one number per image. Same value; on the reference MLP (MNIST, 400 hidden, z = 20) at batch 128 the step is about
    6 % faster on CPU.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        if self.reinterpreted_batch_ndims != 1:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.base_dist.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


def chained_locations(loc: Tensor, coeffs: Tensor, x: Tensor) -> Tensor:
    r"""Channel locations ``(..., C, L)`` given the colour ``x`` (broadcastable) of the channels before:
    :math:`\mu_R`, :math:`\mu_G + \alpha x_R`, :math:`\mu_B + \beta x_R + \gamma x_G` (``coeffs[..., 0..2, :]``
    are :math:`\alpha, \beta, \gamma`); a grey image's location as it is."""
    if loc.shape[-2] == 1:
        return loc
    a, b, c = coeffs[..., 0, :], coeffs[..., 1, :], coeffs[..., 2, :]
    r, g = x[..., 0, :], x[..., 1, :]
    loc = loc.expand(torch.broadcast_shapes(loc.shape, x.shape))
    return torch.stack([loc[..., 0, :], loc[..., 1, :] + a * r, loc[..., 2, :] + b * r + c * g], dim=-2)


class DiscretizedLogisticMixture(TorchDistribution):
    r"""PixelCNN++'s likelihood of an 8-bit image (Salimans et al. 2017): at each pixel location a mixture of
    ``K`` components, each a product over the ``C`` channels of :class:`DiscretizedLogistic` s whose locations
    depend linearly on the channels before them,

    .. math::
        \mu_{k,G} \leftarrow \mu_{k,G} + \alpha_k x_R, \qquad
        \mu_{k,B} \leftarrow \mu_{k,B} + \beta_k x_R + \gamma_k x_G,

    so :math:`P(x_{loc}) = \sum_k \pi_k \prod_c P(x_c \mid \mu_{k,c}, s_{k,c})` is a true joint distribution of the
    pixel's colour. Parameters: ``logits`` ``(..., K, L)`` (``L = H*W`` locations), ``loc``, ``scale`` and
    ``coeffs`` ``(..., K, C, L)`` (``coeffs[:, 0..2]`` are :math:`\alpha, \beta, \gamma`; unused for grey images).
    The event is the flattened image ``(C*L,)`` in ``(C, H, W)`` order.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(
        self,
        logits: Tensor,
        loc: Tensor,
        scale: Tensor,
        coeffs: Tensor,
        levels: int = 256,
        validate_args: bool | None = None,
    ):
        self.logits, self.loc, self.scale, self.coeffs, self.levels = logits, loc, scale, coeffs, levels
        channels, locations = loc.shape[-2:]
        super().__init__(loc.shape[:-3], torch.Size([channels * locations]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedLogisticMixture(
            self.logits.expand(batch_shape + self.logits.shape[-2:]),
            *(t.expand(batch_shape + t.shape[-3:]) for t in (self.loc, self.scale, self.coeffs)),
            levels=self.levels,
            validate_args=False,
        )

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x = value.unflatten(-1, self.loc.shape[-2:]).unsqueeze(-3)  # (..., 1, C, L)
        locations = chained_locations(self.loc, self.coeffs, x)
        per_channel = DiscretizedLogistic(locations, self.scale, self.levels).log_prob(x)
        joint = per_channel.sum(-2) + torch.log_softmax(self.logits, dim=-2)  # (..., K, L)
        return torch.logsumexp(joint, dim=-2).sum(-1)

    def sample(self, sample_shape=torch.Size()) -> Tensor:  # noqa: B008 (torch's signature)
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            logits = self.logits.movedim(-2, -1).expand(*shape, *self.logits.shape[-1:], -1)  # (..., L, K)
            k = dist.Categorical(logits=logits).sample()
            pick = k.unsqueeze(-2).unsqueeze(-3)  # (..., 1, 1, L)

            def chosen(t: Tensor) -> Tensor:
                t = t.expand(*shape, *t.shape[-3:])
                return t.gather(-3, pick.expand(*shape, 1, *t.shape[-2:])).squeeze(-3)  # (..., C, L)

            loc, scale, coeffs = chosen(self.loc), chosen(self.scale), chosen(self.coeffs)
            x = torch.zeros_like(loc)
            for channel in range(loc.shape[-2]):  # each channel drawn given the ones already drawn
                draw = DiscretizedLogistic(chained_locations(loc, coeffs, x), scale, self.levels).sample()
                x[..., channel, :] = draw[..., channel, :]
            return x.flatten(-2)

    @property
    def mean(self) -> Tensor:
        r"""Approximately :math:`\mathbb E[x]`: each component's locations chained through its own expected
        channels, clipped to [0, 1], averaged with the mixture weights (exact up to the clipping at 0 and 1)."""
        x = torch.zeros_like(self.loc)
        for _ in range(self.loc.shape[-2]):  # after pass c, channels 0..c hold their chained means
            x = chained_locations(self.loc, self.coeffs, x).clamp(0, 1)
        weights = torch.softmax(self.logits, dim=-2).unsqueeze(-2)  # (..., K, 1, L)
        return (weights * x).sum(-3).flatten(-2)
