r"""The doubly reparameterised gradient of the IWAE bound (DReG; Tucker, Lawson, Gu & Maddison 2019).

The bound is RenyiELBO(alpha=0)'s, per image, with :math:`K` particles :math:`z_k = z(\epsilon_k; \phi)` drawn
(reparameterised) from the guide:

.. math::
    \mathcal L_K = \log \frac1K \sum_k w_k, \qquad
    \log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k \mid x), \qquad
    \tilde w_k = w_k \Big/ \sum_j w_j .

Its ordinary reparameterised gradient is :math:`\sum_k \tilde w_k \nabla \log w_k`, where for the guide
:math:`\nabla_\phi \log w_k` has a path part, through :math:`z_k`, and a score part,
:math:`-\partial_\phi \log q_\phi(z)` at fixed :math:`z`. The score part has expectation zero at :math:`K = 1` but
not its noise, and the encoder's signal-to-noise ratio falls as :math:`K` grows (Rainforth et al. 2018). Applying
the reparameterisation identity :math:`\mathbb E_q[f(z)\,\partial_\phi \log q_\phi(z)] = \mathbb E_\epsilon[
\partial_z f \, \partial_\phi z]` to the score part (with :math:`f = \tilde w_k`, whose derivative in :math:`z_k`
is :math:`(\tilde w_k - \tilde w_k^2)\,\partial_{z_k} \log w_k`) leaves an unbiased estimator with no score term:

.. math::
    \nabla_\theta \mathcal L_K \approx \sum_k \tilde w_k\, \nabla_\theta \log w_k, \qquad
    \nabla_\phi \mathcal L_K \approx \sum_k \tilde w_k^2\, \frac{\partial \log w_k}{\partial z_k}
    \frac{\partial z_k}{\partial \phi},

the partial derivative in :math:`z_k` taken with the guide's parameters held fixed (stop-gradient). A parameter in
both programs (the ladder's generative conditionals, which its guide also reads) gets both terms.

**How it is computed** (one forward, one backward). The guide is traced, with the particles as a
``pyro.plate`` left of the data plate (``max_plate_nesting=1``, as for ``RenyiELBO``); every latent value goes to
the model and to :math:`\log q` through an identity whose backward multiplies the incoming gradient by
:math:`m_k = \tilde w_k` (known once the forward is done), and :math:`\log q` is evaluated with its
distribution's parameters detached (:func:`stop_gradient`). The surrogate
:math:`\sum_k \mathrm{sg}(\tilde w_k) \log w_k` then sends :math:`\tilde w_k` to the decoder's parameters and
:math:`\tilde w_k m_k = \tilde w_k^2` into each :math:`z_k`, on to the encoder along the sampling path.

*Several latent sites* (``--structure hierarchical``): each particle's sites share its :math:`\tilde w_k`. A site
whose guide distribution reads another latent (:math:`q(z_2 \mid z_1)`) has :math:`\log q` depend on that parent
through the distribution's parameters too, and that derivative belongs to :math:`\partial \log w_k / \partial z_k`;
detaching the parameters would drop it (a bias), keeping them would keep the score part. So it is taken apart: the
derivative of :math:`\mathrm{sg}(\tilde w_k m_k) \log q(\mathrm{sg}(z_s) \mid \mathrm{pa}_s)` in each parent value,
through the parameters alone (``torch.autograd.grad`` to the parents, which accumulates into no weight; the
parents' own sampling paths shut meanwhile, so no path is counted twice), is added to the surrogate as a linear term
in the parent, and the backward carries it on to the encoder. Its cost is a backward through the networks between
the layers, not the encoder.

*Scaled sites* (``poutine.scale``): the log densities are scaled as Pyro scales them, as ``RenyiELBO`` does. With
every latent site of the guide scaled by one number :math:`b` the identity replaces :math:`b` times the score part,
so :math:`m_k = 1 - b + b\,\tilde w_k` (:math:`b = 1`: :math:`\tilde w_k`); sites scaled differently, masks,
latents outside the particles' and the data's plates, observed guide sites, and guides that are not fully
reparameterised (an enumerated label) or whose density cannot be rebuilt with detached parameters (a normalising
flow: :func:`stop_gradient`) are refused with :class:`~pyro_vae.errors.ConfigError`.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.distributions.util import is_identically_one, scale_and_mask
from pyro.infer import ELBO
from pyro.infer.util import get_dependent_plate_dims, is_validation_enabled, torch_sum
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape, warn_if_nan
from torch import Tensor

from ..errors import ConfigError
from ..runtime.compat import scale_tril


def stop_gradient(fn: dist.Distribution) -> dist.Distribution:
    """The same distribution with its parameters detached: the same density, no gradient to the parameters (the
    value keeps its own). Normal, MultivariateNormal (by its Cholesky factor), LowRankMultivariateNormal, and
    ``Independent`` or expanded ones of these; :class:`ConfigError` for any other (a flow's parameters live in its
    transforms' networks)."""
    if isinstance(fn, dist.Independent):
        return dist.Independent(stop_gradient(fn.base_dist), fn.reinterpreted_batch_ndims, validate_args=False)
    if isinstance(fn, ExpandedDistribution):
        return ExpandedDistribution(stop_gradient(fn.base_dist), fn.batch_shape)
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach(), validate_args=False)
    if isinstance(fn, dist.LowRankMultivariateNormal):
        return dist.LowRankMultivariateNormal(
            fn.loc.detach(), fn.cov_factor.detach(), fn.cov_diag.detach(), validate_args=False
        )
    if isinstance(fn, dist.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=scale_tril(fn).detach(), validate_args=False)
    raise ConfigError(
        f"--objective iwae-dreg evaluates log q with the guide's parameters held fixed, which it cannot do for a "
        f"{type(fn).__name__} guide (Normal, MultivariateNormal or LowRankMultivariateNormal, Independent or not)"
    )


def check_guide_family(guide: type) -> None:
    """:class:`ConfigError` unless the guide family's distribution can be rebuilt by :func:`stop_gradient` and is
    reparameterised: checked on one made with its default options at a latent size of 2, when a config is read (a
    family that cannot be made so is left to the check each step makes)."""
    try:
        probe = guide(2)
        fn = probe(torch.zeros(probe.num_params))
    except Exception:  # (a family of another package, say, with options that have no default)
        return
    if not fn.has_rsample:
        raise ConfigError(f"--objective iwae-dreg needs a reparameterised guide; --guide {guide.name} is not")
    try:
        stop_gradient(fn)
    except ConfigError:
        raise ConfigError(
            f"--objective iwae-dreg needs the guide's density with its parameters held fixed, which --guide "
            f"{guide.name} ({type(fn).__name__}) cannot give: use a Gaussian guide (diagonal, full-cov)"
        ) from None


class _Switch:
    """State shared with the autograd functions below: a factor filled in after the forward pass, a gate."""

    def __init__(self) -> None:
        self.factor: Tensor | None = None
        self.open = True


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``switch.factor`` (broadcast over the event dims)."""

    @staticmethod
    def forward(ctx, value: Tensor, switch: _Switch) -> Tensor:
        ctx.switch = switch
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        factor = ctx.switch.factor
        return grad * factor.reshape(factor.shape + (1,) * (grad.dim() - factor.dim())), None


class _Gate(_ScaleGradient):
    """Identity forward (:class:`_ScaleGradient`'s); backward passes the gradient while ``switch.open``, else none."""

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad if ctx.switch.open else None), None


class _GateLatents(Messenger):
    """Hands the guide program each latent value through a :class:`_Gate` (a trace outside it records the value
    itself), and keeps the gated tensors: the parents of later sites, as the guide read them."""

    def __init__(self, switch: _Switch) -> None:
        super().__init__()
        self.switch = switch
        self.gated: dict[str, Tensor] = {}

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and msg["value"].requires_grad:
            msg["value"] = self.gated[msg["name"]] = _Gate.apply(msg["value"], self.switch)


class DoublyReparameterizedIWAE(ELBO):
    r"""The IWAE bound of ``RenyiELBO(alpha=0)`` (its ``loss``: the same value on the same draws) with the DReG
    gradient (the module's docstring): :math:`\tilde w_k` for the model's parameters, :math:`\tilde w_k^2` along
    the reparameterised path for the guide's, no score term. ``num_particles`` are vectorised in a plate left of
    ``max_plate_nesting`` plates."""

    def __init__(self, num_particles: int = 2, max_plate_nesting: float = float("inf")) -> None:
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        """The guide traced (its latents handed on through gates) and the model replayed on values whose gradient is
        scaled; returns the model's trace, the guide's latent sites, the scaled and the gated values, the switch."""
        switch = _Switch()
        gates = _GateLatents(switch)
        guide_trace = poutine.trace(gates(guide), graph_type="flat").get_trace(*args, **kwargs)
        latents = {}
        for name, site in prune_subsample_sites(guide_trace).nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                raise ConfigError(f"--objective iwae-dreg: the guide observes site {name!r}")
            if site["infer"].get("enumerate") or not site["fn"].has_rsample:
                raise ConfigError(
                    f"--objective iwae-dreg needs every latent reparameterised; site {name!r} is "
                    f"{'enumerated' if site['infer'].get('enumerate') else 'not'}"
                )
            if site["mask"] is not None:
                raise ConfigError(f"--objective iwae-dreg: latent site {name!r} is masked")
            latents[name] = site
        hooked = {name: _ScaleGradient.apply(site["value"], switch) for name, site in latents.items()}
        replay = guide_trace.copy()
        for name, value in hooked.items():
            replay.nodes[name] = {**replay.nodes[name], "value": value}
        model_trace = poutine.trace(poutine.replay(model, trace=replay), graph_type="flat").get_trace(*args, **kwargs)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
            check_if_enumerated(guide_trace)
        return prune_subsample_sites(model_trace), latents, hooked, gates.gated, switch

    def _log_weights(self, model, guide, args, kwargs):
        r""":math:`\log w` per particle and image, ``(K, ...)``, with what the surrogate needs."""
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        model_trace, latents, hooked, gated, switch = self._get_vectorized_trace(model, guide, args, kwargs)
        model_trace.compute_log_prob()
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        log_w = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_w = log_w + torch_sum(site["log_prob"], sum_dims)
        for name, site in latents.items():
            log_q = scale_and_mask(stop_gradient(site["fn"]).log_prob(hooked[name]), site["scale"], site["mask"])
            site["log_prob"] = log_q  # (for the shape check)
            log_w = log_w - torch_sum(log_q, sum_dims)
        if is_validation_enabled():
            for site in [*model_trace.nodes.values(), *latents.values()]:
                if site["type"] == "sample":
                    check_site_shape(site, self.max_plate_nesting)
        if self.num_particles == 1:
            log_w = log_w.unsqueeze(0)
        return log_w, model_trace, latents, hooked, gated, switch, sum_dims

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative IWAE bound, summed over the images."""
        log_w = self._log_weights(model, guide, args, kwargs)[0]
        loss = -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum().item()
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The negative IWAE bound, summed over the images, with the DReG gradient of the bound's negative
        accumulated into the parameters' ``.grad``."""
        log_w, model_trace, latents, hooked, gated, switch, sum_dims = self._log_weights(model, guide, args, kwargs)
        loss = -(torch.logsumexp(log_w.detach(), 0) - math.log(self.num_particles)).sum().item()
        warn_if_nan(loss, "loss")
        if not log_w.requires_grad:
            return loss
        weights = torch.softmax(log_w.detach(), 0)  # normalised over the particles, per image
        if self.num_particles == 1:  # (no particles' plate: the values are (images, ...))
            weights = weights[0]
        factor = self._path_factor(weights, _common_scale(latents))
        for name, value in hooked.items():
            if value.shape[: weights.dim()] != weights.shape or value.dim() - weights.dim() != len(
                latents[name]["fn"].event_shape
            ):
                raise ConfigError(
                    f"--objective iwae-dreg needs each latent in the particles' and the data's plates; site {name!r} "
                    f"has shape {tuple(value.shape)}, the weights {tuple(weights.shape)}"
                )
        switch.factor = factor
        surrogate = (weights * log_w).sum()
        parents = [value for name, value in gated.items() if name in latents]
        if len(latents) > 1 and parents:
            surrogate = surrogate + _parent_terms(latents, parents, weights * factor, switch, sum_dims)
        (-surrogate).backward()
        return loss

    def _path_factor(self, weights: Tensor, scale: float) -> Tensor:
        r""":math:`m_k`, what the gradient reaching each latent value is multiplied by (on top of the surrogate's
        :math:`\tilde w_k`): :math:`1 - b + b\,\tilde w_k` for latents scaled by :math:`b`."""
        return weights if is_identically_one(scale) else 1 - scale + scale * weights


def _common_scale(latents: dict) -> float | Tensor:
    """The one scale of all the guide's latent sites (1 unscaled); :class:`ConfigError` if they differ."""
    scales = [site["scale"] for site in latents.values()]
    first = scales[0] if scales else 1.0
    for s in scales:
        if isinstance(s, Tensor) and s.numel() != 1:
            raise ConfigError("--objective iwae-dreg takes one scale for all the guide's latents, not a tensor of them")
        if float(s) != float(first):
            raise ConfigError("--objective iwae-dreg needs every latent site of the guide scaled alike")
    return float(first)


def _parent_terms(latents: dict, parents: list[Tensor], coefficient: Tensor, switch: _Switch, sum_dims) -> Tensor:
    r"""The linear terms that carry :math:`-\mathrm{sg}(\tilde w_k m_k)\,\partial_{\mathrm{pa}} \log q(z_s \mid
    \mathrm{pa}_s)` (through each site's parameters only, at its own value held fixed) into the parents' values."""
    log_q = 0.0
    for site in latents.values():
        log_q = log_q + torch_sum(
            scale_and_mask(site["fn"].log_prob(site["value"].detach()), site["scale"], site["mask"]), sum_dims
        )
    if not isinstance(log_q, Tensor) or not log_q.requires_grad:
        return torch.zeros(())
    target = -(coefficient * log_q.reshape(coefficient.shape)).sum()
    switch.open = False  # (a parent's gradient stops at it: the sampling path is the final backward's)
    try:
        grads = torch.autograd.grad(target, parents, retain_graph=True, allow_unused=True)
    finally:
        switch.open = True
    terms = [(g * p).sum() for g, p in zip(grads, parents) if g is not None]
    return sum(terms) if terms else torch.zeros(())
