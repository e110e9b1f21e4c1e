r"""The inference gaps of an amortised guide (Cremer, Li & Duvenaud 2018, "Inference suboptimality in VAEs").

For an image :math:`x`, the amortised guide :math:`q(z \mid x)` (the encoder's output) gives the ELBO
:math:`\mathcal L[q]`; the best member of the same family *for this image alone*,
:math:`q^\ast = \arg\max_{q' \in \mathcal Q} \mathcal L[q']`, gives :math:`\mathcal L[q^\ast] \ge \mathcal L[q]`.
Then

.. math::
    \log p(x) - \mathcal L[q]
    = \underbrace{\log p(x) - \mathcal L[q^\ast]}_{\text{approximation gap}}
    + \underbrace{\mathcal L[q^\ast] - \mathcal L[q]}_{\text{amortization gap}}:

the approximation gap is the family's limit, the amortization gap the encoder's. :math:`\log p(x)` is estimated by
AIS (:mod:`pyro_vae.inference.ais`). :math:`q^\ast` is fitted per image by ordinary Pyro SVI: a guide with its own
parameters for every image (a location and a diagonal scale, or a location and a Cholesky factor for the
full-covariance family), started at the encoder's output, the model's parameters held fixed, Adam on
``TraceMeanField_ELBO`` (closed-form KL where the prior has one). Adam's step size goes down in stages
(``LR_STAGES``); a stage ends when the mean ELBO over the images, computed on fixed draws so that Monte Carlo noise is
not mistaken for progress, gains less than ``tolerance`` nats over a window of steps. Every image's parameters are
its own and Adam's update is per coordinate, so the images of a batch do not pull on each other; what they share is
the number of steps and when the step size drops, which the batch's mean decides.

The gap decomposition needs :math:`q^\ast` in the amortised guide's family: one latent layer with a diagonal or
full-covariance Gaussian guide. A richer :math:`q^\ast` (full covariance for a diagonal guide, as Cremer et al. fit a
flow) measures how much of the approximation gap a more expressive family would close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import Adam
from pyro.poutine.messenger import Messenger
from torch import Tensor

from ..errors import ConfigError
from ..model.vae import VAE
from .ais import DEFAULT_CHAINS, ais_log_likelihood
from .bounds import iwae_chunk
from .summaries import mean_stderr

FAMILIES = ("diagonal", "full-cov")
FIT_PARTICLES = 10
EVAL_PARTICLES = 100
MAX_STEPS = 3000
WINDOW = 100
TOLERANCE = 0.01  # mean nats per image gained over a window: below it a stage has converged
CHECK_DRAWS = 32  # fixed draws per image for the convergence test
LEARNING_RATE = 1e-2
LR_STAGES = (1.0, 0.3, 0.1)  # Adam's step size in turn (x LEARNING_RATE), each until the images stop improving


@dataclass
class LocalFit:
    """Per-image Gaussians fitted by SVI: ``loc`` ``(n, d)`` and ``scale_tril`` ``(n, d, d)``."""

    family: str
    loc: Tensor
    scale_tril: Tensor
    steps: int  # optimisation steps taken
    converged: bool  # the last window gained less than the tolerance (else it stopped at max_steps)
    trace: list[float] = field(default_factory=list)  # the mean ELBO per image over each window

    def distribution(self) -> dist.MultivariateNormal:
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)


def check_gap_family(vae: VAE) -> str:
    """The amortised guide's family (``diagonal`` or ``full-cov``); :class:`ConfigError` where the gaps are not
    defined for the structure."""
    family = vae.guide_family.name
    if len(vae.latent_dims) != 1 or family not in FAMILIES or vae.enumerates:
        raise ConfigError(
            "the inference gaps need q* in the amortised guide's family: one latent layer and --guide diagonal or "
            f"full-cov (this is --structure {vae.structure}, --guide {family})"
        )
    return family


def fit_local_guides(
    vae: VAE,
    batch: Tensor,
    family: str = "diagonal",
    *,
    particles: int = FIT_PARTICLES,
    lr: float = LEARNING_RATE,
    max_steps: int = MAX_STEPS,
    window: int = WINDOW,
    tolerance: float = TOLERANCE,
) -> LocalFit:
    r""":math:`q^\ast` for each image of ``batch``: SVI on per-image parameters of ``family``, started at the
    encoder's output (its mean and marginal scales; a full-covariance guide's own factor), the model fixed. Its
    draws come from the global torch RNG; the param store is left as it was."""
    if family not in FAMILIES:
        raise ConfigError(f"q* family must be one of {', '.join(FAMILIES)}, got {family!r}")
    with torch.no_grad():
        loc, scale_tril = vae.guide_family.gaussian(vae.guide_params(batch))
    diagonal = family == "diagonal"
    n = batch.shape[0]

    def guide(batch: Tensor, kl_scale: float = 1.0) -> None:
        q_loc = pyro.param("q_star_loc", loc.detach().clone())
        if diagonal:
            scale = pyro.param("q_star_scale", torch.diagonal(scale_tril, dim1=-2, dim2=-1).clone(), constraint=_POS)
            q = dist.Normal(q_loc, scale).to_event(1)
        else:
            tril = pyro.param("q_star_scale_tril", scale_tril.detach().clone(), constraint=_TRIL)
            # (the constraint's transform makes it a Cholesky factor: checking that every step costs half the step)
            q = dist.MultivariateNormal(q_loc, scale_tril=tril, validate_args=False)
        with pyro.plate("data", n):
            pyro.sample("z", q)

    model = _FixedParameters()(vae.model)  # the decoder and prior stay as trained
    elbo = TraceMeanField_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    judge = _FixedDrawsELBO(vae, batch, CHECK_DRAWS)
    trace, steps, converged = [], 0, False
    with pyro.get_param_store().scope(), _frozen(vae):
        for stage_lr in (lr * drop for drop in LR_STAGES):  # a fresh Adam at each smaller step size
            svi, last, converged = SVI(model, guide, Adam({"lr": stage_lr}), elbo), None, False
            while steps < max_steps and not converged:
                svi.step(batch)
                steps += 1
                if steps % window == 0:
                    now = judge(_read_q(diagonal))
                    trace.append(now.mean().item())
                    converged = last is not None and (now - last).mean().item() < tolerance
                    last = now
        q = _read_q(diagonal)
    return LocalFit(family, q.loc.detach(), q.scale_tril.detach(), steps, converged, trace)


def _read_q(diagonal: bool) -> dist.MultivariateNormal:
    """The local guides now, from the (scoped) param store."""
    store = pyro.get_param_store()
    loc = store["q_star_loc"].detach()
    tril = torch.diag_embed(store["q_star_scale"].detach()) if diagonal else store["q_star_scale_tril"].detach()
    return dist.MultivariateNormal(loc, scale_tril=tril)


class _FixedDrawsELBO:
    r"""Each image's ELBO on the same standard-normal draws :math:`\epsilon_k` at every call,
    :math:`z_k = \mu + L \epsilon_k`: a deterministic function of the guide's parameters, so its change between two
    calls is progress, not Monte Carlo noise (the convergence test)."""

    def __init__(self, vae: VAE, batch: Tensor, draws: int) -> None:
        self.densities = vae.log_densities(batch)
        self.eps = torch.randn(draws, batch.shape[0], vae.latent_dim, dtype=batch.dtype, device=batch.device)

    @torch.no_grad()
    def __call__(self, q: dist.MultivariateNormal) -> Tensor:
        z = q.loc + (q.scale_tril @ self.eps.unsqueeze(-1)).squeeze(-1)
        return (self.densities(z)[0] - q.log_prob(z)).mean(0)


_POS = dist.constraints.positive
_TRIL = dist.constraints.lower_cholesky


class _FixedParameters(Messenger):
    """The model's ``pyro.param`` statements return the module's own tensors, out of the param store and out of
    SVI's sight: the optimiser sees only the local guides' parameters."""

    def _pyro_param(self, msg: dict) -> None:
        msg["value"], msg["done"], msg["stop"] = msg["args"][1], True, True


class _frozen:
    """The model's parameters without gradients (and the model in eval mode) for the duration: only the local
    guides learn."""

    def __init__(self, vae: VAE) -> None:
        self.vae = vae

    def __enter__(self) -> None:
        self.flags = [(p, p.requires_grad) for p in self.vae.parameters()]
        self.training = self.vae.training
        self.vae.eval().requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p, flag in self.flags:
            p.requires_grad_(flag)
        self.vae.train(self.training)


@torch.no_grad()
def elbo_of(vae: VAE, batch: Tensor, q: dist.Distribution | None = None, particles: int = EVAL_PARTICLES) -> Tensor:
    r""":math:`\frac1K \sum_k [\log p(x, z_k) - \log q(z_k)]`, :math:`z_k \sim q`, per image ``(n,)``: for the
    amortised guide (``q`` ``None``) or a fitted one, on the same densities AIS uses (the global torch RNG). The
    particles go through the decoder in chunks of :func:`~pyro_vae.inference.bounds.iwae_chunk`'s size, so memory
    does not grow with ``particles``."""
    densities = vae.log_densities(batch)
    total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
    chunk = iwae_chunk(batch.shape[0], math.prod(vae.image_shape), particles, batch.device)
    for start in range(0, particles, chunk):
        m = min(chunk, particles - start)
        if q is None:
            log_joint, log_q = densities(vae.draw_latents(batch, m))
        else:
            z = q.sample((m,))
            log_joint, log_q = densities(z)[0], q.log_prob(z)
        total += (log_joint - log_q).double().sum(0)
    return (total / particles).float()


@dataclass
class InferenceGaps:
    """Per-image values, ``(n,)`` CPU tensors, in nats."""

    log_likelihood: Tensor  # AIS
    elbo_local: Tensor  # L[q*], q* in the guide's family
    elbo_amortized: Tensor  # L[q]
    family: str
    elbo_richer: Tensor | None = None  # L[q*] for the full-covariance family (a diagonal guide's richer q*)
    steps: list[int] = field(default_factory=list)  # SVI steps per group of images (richer fit: second list)
    converged: bool = True
    steps_richer: list[int] = field(default_factory=list)
    ais_steps: int = 0
    ais_chains: int = 0

    @property
    def approximation_gap(self) -> Tensor:
        return self.log_likelihood - self.elbo_local

    @property
    def amortization_gap(self) -> Tensor:
        return self.elbo_local - self.elbo_amortized

    @property
    def inference_gap(self) -> Tensor:
        return self.log_likelihood - self.elbo_amortized

    def summary(self) -> dict:
        """Means and standard errors over images of each value and gap."""
        out = {"n": self.log_likelihood.numel(), "family": self.family, "ais_steps": self.ais_steps}
        out.update(ais_chains=self.ais_chains, svi_steps=self.steps, converged=self.converged)
        rows = {
            "log_likelihood": self.log_likelihood,
            "elbo_local": self.elbo_local,
            "elbo_amortized": self.elbo_amortized,
            "approximation_gap": self.approximation_gap,
            "amortization_gap": self.amortization_gap,
            "inference_gap": self.inference_gap,
        }
        if self.elbo_richer is not None:
            rows.update(
                elbo_full_cov=self.elbo_richer,
                approximation_gap_full_cov=self.log_likelihood - self.elbo_richer,
                full_cov_gain=self.elbo_richer - self.elbo_local,
            )
            out["svi_steps_full_cov"] = self.steps_richer
        for name, values in rows.items():
            out[name], out[name + "_stderr"] = mean_stderr(values)
        return out


def inference_gaps(
    vae: VAE,
    batch: Tensor,
    *,
    ais_steps: int = 1000,
    ais_chains: int = DEFAULT_CHAINS,
    full_cov: bool = False,
    particles: int = FIT_PARTICLES,
    eval_particles: int = EVAL_PARTICLES,
    max_steps: int = MAX_STEPS,
    lr: float = LEARNING_RATE,
    tolerance: float = TOLERANCE,
) -> InferenceGaps:
    r"""The gaps of ``vae``'s guide on the images of ``batch`` (one group: memory grows with its size): AIS
    :math:`\log p(x)`, :math:`\mathcal L[q^\ast]` and :math:`\mathcal L[q]`, each ELBO from ``eval_particles``
    draws; ``full_cov``: also the full-covariance :math:`q^\ast` (for a diagonal guide). The global torch RNG."""
    family = check_gap_family(vae)
    was_training = vae.training
    vae.eval()
    try:
        fit = fit_local_guides(vae, batch, family, particles=particles, lr=lr, max_steps=max_steps, tolerance=tolerance)
        richer = None
        if full_cov and family == "diagonal":
            richer = fit_local_guides(
                vae, batch, "full-cov", particles=particles, lr=lr, max_steps=max_steps, tolerance=tolerance
            )
        amortized = elbo_of(vae, batch, None, eval_particles)
        local = elbo_of(vae, batch, fit.distribution(), eval_particles)
        full = None if richer is None else elbo_of(vae, batch, richer.distribution(), eval_particles)
        ais = ais_log_likelihood(vae, batch, ais_steps, ais_chains).log_likelihood
    finally:
        vae.train(was_training)
    return InferenceGaps(
        log_likelihood=ais.float().cpu(),
        elbo_local=local.cpu(),
        elbo_amortized=amortized.cpu(),
        family=family,
        elbo_richer=None if full is None else full.cpu(),
        steps=[fit.steps],
        converged=fit.converged and (richer is None or richer.converged),
        steps_richer=[] if richer is None else [richer.steps],
        ais_steps=ais_steps,
        ais_chains=ais_chains,
    )


def concatenate(parts: list[InferenceGaps]) -> InferenceGaps:
    """One :class:`InferenceGaps` from those of consecutive groups of images."""
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    first = parts[0]
    return InferenceGaps(
        log_likelihood=cat("log_likelihood"),
        elbo_local=cat("elbo_local"),
        elbo_amortized=cat("elbo_amortized"),
        family=first.family,
        elbo_richer=None if first.elbo_richer is None else cat("elbo_richer"),
        steps=[s for p in parts for s in p.steps],
        converged=all(p.converged for p in parts),
        steps_richer=[s for p in parts for s in p.steps_richer],
        ais_steps=first.ais_steps,
        ais_chains=first.ais_chains,
    )
