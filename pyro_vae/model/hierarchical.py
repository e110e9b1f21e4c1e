r"""VAEs with several stochastic layers (Burda et al. 2016; Sønderby et al. 2016), ``z_1`` nearest the data.

.. math::
    p_\theta(x, z_{1:L}) = p(z_L) \prod_{l=1}^{L-1} p_\theta(z_l \mid z_{l+1})\; p_\theta(x \mid z_1), \qquad
    p_\theta(z_l \mid z_{l+1}) = \mathcal N\big(\mu_l(z_{l+1}), \mathrm{diag}\,\sigma_l^2(z_{l+1})\big)

The top prior :math:`p(z_L)` is any prior and :math:`p(x \mid z_1)` any likelihood; each conditional is a small
network (``layer_hidden``). Two guides, chosen by the guide family (``--guide``):

* ``diagonal``, bottom-up (the IWAE paper's): :math:`q(z_1 \mid x) \prod_l q(z_{l+1} \mid z_l)`, the first from
  the encoder, each next from a network of the sample below;
* ``ladder``, top-down (the LVAE's): a deterministic pass up gives each layer an estimate
  :math:`(\hat\mu_l, \hat\sigma_l)` (the encoder's output, then a network of the estimate below); then
  :math:`q(z_L \mid x) = \mathcal N(\hat\mu_L, \hat\sigma_L^2)` and, going down,
  :math:`q(z_l \mid z_{l+1}, x)` the precision-weighted merge of :math:`\mathcal N(\hat\mu_l, \hat\sigma_l^2)` with
  :math:`p(z_l \mid z_{l+1})` (:func:`precision_weighted`), so inference shares the generative path.

One ``pyro.sample`` site per layer (``z1`` … ``zL``), all in the data plate and all scaled by ``kl_scale``
(β and its warm-up weigh every layer's KL). The latent vector the interface speaks of (``decode``, ``generate``,
``moments``, ``latent_dim``) is all layers side by side, ``z_1`` first; ``decode`` reads ``z_1``.
:mod:`pyro_vae.inference.layered` is the hand-written ELBO that checks the Pyro program, layer by layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.params import param_with_module_name
from torch import Tensor, nn

from ..errors import ConfigError
from .guides import DiagonalGaussianGuide
from .networks import _mlp
from .vae import VAE, _kl_weight

MAX_LAYERS = 16
DEFAULT_LAYER_HIDDEN = (100, 100)  # the IWAE paper's networks between its two latent layers
MAX_PRECISION = 1e30


class GaussianLayer(nn.Module):
    r"""An MLP from ``n_in`` numbers to a diagonal Gaussian over ``d``: ``forward`` gives the raw ``2 d`` outputs
    :math:`(\mu, \log \sigma^2)`, :func:`loc_scale` their mean and scale."""

    def __init__(self, n_in: int, d: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.net = _mlp([n_in, *hidden, 2 * d], activation)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def loc_scale(params: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`(\mu, \sigma)` from :math:`(\mu, \log \sigma^2)` side by side (the diagonal guide's convention)."""
    loc, logvar = params.chunk(2, dim=-1)
    return loc, torch.exp(0.5 * logvar)


def precision_weighted(loc_a: Tensor, scale_a: Tensor, loc_b: Tensor, scale_b: Tensor) -> tuple[Tensor, Tensor]:
    r"""The normalised product of two diagonal Gaussians (the LVAE's merge):

    .. math:: \sigma^2 = \big(\sigma_a^{-2} + \sigma_b^{-2}\big)^{-1}, \qquad
              \mu = \sigma^2 \big(\mu_a \sigma_a^{-2} + \mu_b \sigma_b^{-2}\big).
    """
    # (clamped: a scale below ~1e-19 would make its precision inf, and the merged loc 0 * inf)
    precision_a, precision_b = scale_a.pow(-2).clamp(max=MAX_PRECISION), scale_b.pow(-2).clamp(max=MAX_PRECISION)
    variance = 1.0 / (precision_a + precision_b)
    return variance * (loc_a * precision_a + loc_b * precision_b), variance.sqrt()


def _normal(loc: Tensor, scale: Tensor) -> dist.TorchDistribution:
    return dist.Normal(loc, scale).to_event(1)


class HierarchicalVAE(VAE):
    """:class:`~pyro_vae.model.vae.VAE` with ``len(latent_dims)`` stochastic layers, inferred bottom-up or top-down."""

    structure = "hierarchical"
    terms = ("E_q[log p(x|z1)]", "KL(q(z1..zL|x) || p(z1..zL))")

    def __init__(self, *args, layer_hidden: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.guide_family, DiagonalGaussianGuide):  # (the layers' q are diagonal Gaussians)
            raise ConfigError(
                f"--structure hierarchical with --guide {self.guide_family.name}: that family cannot serve a layer "
                "(diagonal or ladder can)"
            )
        dims, act = self.latent_dims, self.net_config.activation
        self.layer_hidden = tuple(layer_hidden or DEFAULT_LAYER_HIDDEN)
        self.top_down = self.guide_family.layers == "top-down"
        # conditionals[l]: p(z_{l+1} | z_{l+2}) in 1-based names, for l = 0 .. L-2 (z1's parent first)
        self.conditionals = nn.ModuleList(
            GaussianLayer(dims[i + 1], dims[i], self.layer_hidden, act) for i in range(len(dims) - 1)
        )
        # upward[l]: layer l+2's q from layer l+1's sample (bottom-up) or from its estimate (top-down)
        width = (lambda i: 2 * dims[i]) if self.top_down else (lambda i: dims[i])
        self.upward = nn.ModuleList(
            GaussianLayer(width(i), dims[i + 1], self.layer_hidden, act) for i in range(len(dims) - 1)
        )
        for name in ("conditionals", "upward"):
            module = getattr(self, name)
            self._pyro_modules[name] = module
            self._pyro_params[name] = [(param_with_module_name(name, n), p) for n, p in module.named_parameters()]

    def _check_layers(self) -> None:
        if not 2 <= len(self.latent_dims) <= MAX_LAYERS:
            raise ConfigError(
                f"--structure hierarchical needs 2 to {MAX_LAYERS} latent layers (--latent-dims 100,50), "
                f"got {len(self.latent_dims)}"
            )

    @property
    def layers(self) -> int:
        return len(self.latent_dims)

    # The generative program -------------------------------------------------------------------------------------

    def model(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``z_L ~ p(z_L)``, ``z_l ~ p(z_l | z_{l+1})`` down to ``z_1``, ``x ~ p(x | z_1)``."""
        self._register("decoder", "prior", "likelihood", "conditionals")
        with pyro.plate("data", batch.shape[0]):
            with _kl_weight(kl_scale):
                z = pyro.sample(f"z{self.layers}", self.prior())
                for i in reversed(range(self.layers - 1)):
                    z = pyro.sample(f"z{i + 1}", _normal(*loc_scale(self.conditionals[i](z))))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=batch)

    def guide(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """Bottom-up: ``z_1 ~ q(z_1 | x)``, then ``z_{l+1} ~ q(z_{l+1} | z_l)``; top-down: see the module."""
        self._register("encoder", "guide", "upward", *(("conditionals",) if self.top_down else ()))
        with pyro.plate("data", batch.shape[0]), _kl_weight(kl_scale):
            if self.top_down:
                estimates = self.estimates(batch)
                z = pyro.sample(f"z{self.layers}", _normal(*estimates[-1]))
                for i in reversed(range(self.layers - 1)):
                    prior_loc, prior_scale = loc_scale(self.conditionals[i](z))
                    z = pyro.sample(f"z{i + 1}", _normal(*precision_weighted(*estimates[i], prior_loc, prior_scale)))
            else:
                z = pyro.sample("z1", self.guide_family(self.encoder(batch)))
                for i in range(self.layers - 1):
                    z = pyro.sample(f"z{i + 2}", _normal(*loc_scale(self.upward[i](z))))

    def estimates(self, batch: Tensor) -> list[tuple[Tensor, Tensor]]:
        r"""The ladder's deterministic pass up: :math:`(\hat\mu_l, \hat\sigma_l)` of each layer, ``z_1``'s first."""
        params = [self.encoder(batch)]
        for up in self.upward:
            params.append(up(params[-1]))
        return [self.guide_family.loc_scale(params[0])] + [loc_scale(p) for p in params[1:]]

    # The interface ----------------------------------------------------------------------------------------------

    @classmethod
    def check_objective(cls, kind: str, guide: type) -> None:
        """``meanfield`` only top-down, where each layer's guide and model sites condition on the same parent
        (bottom-up, ``TraceMeanField_ELBO``'s per-site KLs would pair densities of different parents)."""
        super().check_objective(kind, guide)
        if kind == "meanfield" and guide.layers != "top-down":
            raise ConfigError(
                "--objective meanfield with --structure hierarchical needs --guide ladder: bottom-up, each layer's "
                "q and p condition on different layers, so there is no per-layer closed-form KL (use trace or iwae)"
            )

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        r"""The likelihood's parameters of :math:`p(x \mid z_1)`; ``z``: ``z_1`` alone or all layers side by side."""
        return self.decoder(z[..., : self.latent_dims[0]])

    def generate(self, n: int) -> Tensor:
        """``n`` ancestral draws, all layers side by side (``z_1`` first): ``z_L ~ p(z_L)``, then down."""
        return self.descend(self.prior().sample((n,)))

    def descend(self, top: Tensor) -> Tensor:
        r"""All layers side by side, ``z_1`` first, for top-layer values ``top``, each layer below drawn from
        :math:`p(z_l \mid z_{l+1})` (the global torch RNG)."""
        layers = [top]
        for i in reversed(range(self.layers - 1)):
            layers.insert(0, _normal(*loc_scale(self.conditionals[i](layers[0]))).sample())
        return torch.cat(layers, -1)

    def guide_params(self, batch: Tensor) -> Tensor:
        r"""The encoder's output: :math:`q(z_1 \mid x)`'s parameters (bottom-up), ``z_1``'s estimate (top-down)."""
        return self.encoder(batch)

    def draw_latents(self, batch: Tensor, draws: int) -> Tensor:
        """``draws`` joint draws per image from the guide, all layers side by side, ``(draws, n, latent_dim)``."""
        eps = [torch.randn(draws, batch.shape[0], d, dtype=batch.dtype, device=batch.device) for d in self.draw_dims]
        return torch.cat([layer.z for layer in self.sample_layers(batch, eps)], -1)

    def moments(self, batch: Tensor, samples: int) -> tuple[Tensor, Tensor]:
        r"""Every layer's posterior mean and marginal scale, side by side, from ``samples`` joint draws of the guide (a
        layer's marginal :math:`q(z_l \mid x)` has no closed form), from the global torch RNG: the mean of each draw's
        conditional mean, and :math:`\sqrt{\mathbb E[\sigma^2] + \operatorname{Var}[\mu]}` (exact where the layer's
        q does not depend on the draws: z_1 bottom-up, z_L top-down)."""
        eps = [torch.randn(samples, batch.shape[0], d, dtype=batch.dtype, device=batch.device) for d in self.draw_dims]
        layers = self.sample_layers(batch, eps)
        locs = torch.cat([layer.q_loc.expand(samples, *layer.z.shape[1:]) for layer in layers], -1)
        variances = torch.cat([layer.q_scale.pow(2).expand(samples, *layer.z.shape[1:]) for layer in layers], -1)
        return locs.mean(0), (variances.mean(0) + locs.var(0, correction=0)).sqrt()

    def log_densities(self, batch: Tensor):
        r"""For a batch, :math:`z_{1:L} \mapsto (\log p(x, z_{1:L}), \log q(z_{1:L} \mid x))` at given layers (side by
        side, ``z_1`` first, ``(..., n, latent_dim)``), each ``(..., n)``; the bottom-up pass is run once."""
        top_down = self.top_down
        start = self.estimates(batch) if top_down else self.guide_family(self.encoder(batch))

        def densities(z: Tensor) -> tuple[Tensor, Tensor]:
            layers = list(z.split(list(self.latent_dims), dim=-1))
            log_joint = self.prior.log_density(layers[-1]) + self.likelihood.log_prob(self.decoder(layers[0]), batch)
            parents = [loc_scale(self.conditionals[i](layers[i + 1])) for i in range(self.layers - 1)]
            for i, parent in enumerate(parents):
                log_joint = log_joint + _normal(*parent).log_prob(layers[i])
            if top_down:
                log_q = _normal(*start[-1]).log_prob(layers[-1])
                for i, parent in enumerate(parents):
                    log_q = log_q + _normal(*precision_weighted(*start[i], *parent)).log_prob(layers[i])
            else:
                log_q = start.log_prob(layers[0])
                for i in range(self.layers - 1):
                    log_q = log_q + _normal(*loc_scale(self.upward[i](layers[i]))).log_prob(layers[i + 1])
            return log_joint, log_q

        return densities

    @property
    def draw_dims(self) -> tuple[int, ...]:
        """The layers' sizes in the order the guide draws them (bottom-up: ``z_1`` first; top-down: ``z_L`` first)."""
        return tuple(reversed(self.latent_dims)) if self.top_down else self.latent_dims

    def sample_layers(self, batch: Tensor, eps: Sequence[Tensor]) -> list[Layer]:
        r"""The guide's draws written in plain torch, from standard-normal noise ``eps`` (one tensor per layer, in
        :attr:`draw_dims` order, each ``(particles, n, d)``): for each layer, ``z_1``'s first, its sample
        :math:`z = \mu + \sigma \epsilon`, the guide's :math:`(\mu, \sigma)` and the generative conditional's
        (``None`` for the top layer, whose prior is :attr:`prior`)."""
        noise = iter(eps)
        q, z, p = [None] * self.layers, [None] * self.layers, [None] * self.layers
        if self.top_down:  # (each generative conditional is both the merge's partner and the layer's p)
            estimates = self.estimates(batch)
            q[-1] = estimates[-1]
            z[-1] = q[-1][0] + q[-1][1] * next(noise)
            for i in reversed(range(self.layers - 1)):
                p[i] = loc_scale(self.conditionals[i](z[i + 1]))
                q[i] = precision_weighted(*estimates[i], *p[i])
                z[i] = q[i][0] + q[i][1] * next(noise)
        else:
            for i in range(self.layers):
                q[i] = (
                    self.guide_family.loc_scale(self.encoder(batch))
                    if i == 0
                    else loc_scale(self.upward[i - 1](z[i - 1]))
                )
                z[i] = q[i][0] + q[i][1] * next(noise)
            p[:-1] = [loc_scale(self.conditionals[i](z[i + 1])) for i in range(self.layers - 1)]
        return [Layer(z[i], *q[i], p[i]) for i in range(self.layers)]


@dataclass
class Layer:
    """One latent layer's draw (see :meth:`HierarchicalVAE.sample_layers`)."""

    z: Tensor
    q_loc: Tensor
    q_scale: Tensor
    p: tuple[Tensor, Tensor] | None  # the generative conditional's (loc, scale); None for the top layer
