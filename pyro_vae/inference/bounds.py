r"""Per-image bounds from Pyro traces, and their cross-check against the analytic-KL yardstick.

For particles :math:`z_k \sim q(z \mid x)` the log importance weights are
:math:`\log w_k = \log p(x, z_k) - \log q(z_k \mid x)`, read off a guide trace and the model
replayed on it, so they are exactly the summands of ``Trace_ELBO``. From them:

.. math::
    \mathrm{ELBO} \approx \frac1K \sum_k \log w_k, \qquad
    \mathrm{IWAE}_K = \log \frac1K \sum_k w_k \;\le\; \log p(x),

the second being the per-datapoint bound that ``RenyiELBO(alpha=0)`` optimises (Burda et al. 2016). A structure
whose label is summed out (M2, ``vae.enumerates``) has its own forms of both, with the label enumerated
(:mod:`pyro_vae.inference.enumerated`); the rest of this module is the same for it.
It tightens as :math:`K` grows (:math:`\mathbb E\,\mathrm{IWAE}_K` is non-decreasing in :math:`K`) and
:math:`\mathrm{IWAE}_1` is the single-sample ELBO: :func:`evaluate` draws the first particles of the
IWAE pass with the ELBO pass's seed, so with one particle each the two are the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import AgreementError
from ..model.vae import VAE
from ..runtime.distributed import SINGLE, Group
from ..runtime.policy import heap_reuse
from .ais import DEFAULT_CHAINS, ais_log_likelihood
from .analytic import AnalyticELBO, analytic_elbo
from .collapse import (
    GaussianPosteriors,
    MutualInformation,
    factorised_gaussian_prior,
    gaussian_posteriors,
    kl_per_dim,
    mutual_information,
    mutual_information_seed,
)
from .enumerated import (
    analytic_enumerated_elbo,
    classifier_predictions,
    enumerated_elbo,
    enumerated_iwae_log_weights,
)
from .latents import ACTIVE_UNIT_THRESHOLD, active_units, active_units_per_layer, latent_variances, posterior_moments
from .layered import analytic_layered_elbo
from .summaries import mean_stderr

AGREEMENT_Z_LIMIT = 4.0
ROUNDING = 1e-6  # relative float32 error of a sum over ~1000 pixels: differences below it are not disagreement
_ELEMENTS_PER_CHUNK = 1 << 22  # decoder outputs held at once in the IWAE pass (16 MiB of float32)
# On a GPU a pass costs launches, not arithmetic: K=5000 over 1,000 MNIST images of the reference MLP took 2.69 s
# in passes of 10 particles and 0.27 s in passes of 171 (1 << 26 outputs, 841 MiB at the peak: 13 B an output) on
# an H200. A conv decoder holds more per output (its 32 x 14 x 14 layer alone 8 floats), so a smaller GPU gets one
# output per _CUDA_BYTES_PER_OUTPUT of its memory. Never the free memory: the chunks decide the draws, and a seed
# must give the same bound on the same GPU whatever else holds memory.
_CUDA_ELEMENTS_PER_CHUNK = 1 << 26
_CUDA_BYTES_PER_OUTPUT = 256
AIS_PASSES_PER_STEP = 5  # (the leapfrog steps of an HMC transition: for the progress bar's share of the work)


def log_weights(vae: VAE, x: Tensor, num_particles: int = 1) -> Tensor:
    r""":math:`\log p(x, z_k) - \log q(z_k \mid x)` of shape ``(num_particles, batch)``, from Pyro traces (with the
    label summed out, for a structure that enumerates it)."""
    if vae.enumerates:
        return enumerated_iwae_log_weights(vae, x, num_particles)
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    total = x.new_zeros(num_particles, x.shape[0])
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample":
                total = total + sign * site["log_prob"]
    return total


def iwae_chunk(batch_size: int, data_dim: int, k: int, device: torch.device | str = "cpu") -> int:
    """Particles per pass of :func:`iwae_bound` (and of :func:`elbo_per_image`): about
    ``_ELEMENTS_PER_CHUNK`` decoder outputs at once (``_CUDA_ELEMENTS_PER_CHUNK`` on a GPU), so memory does not
    grow with ``k``."""
    device = torch.device(device)
    elements = _ELEMENTS_PER_CHUNK
    if device.type == "cuda":
        elements = max(elements, min(_CUDA_ELEMENTS_PER_CHUNK, _gpu_memory_bytes(device) // _CUDA_BYTES_PER_OUTPUT))
    return max(1, min(k, elements // max(1, batch_size * data_dim)))


def _gpu_memory_bytes(device: torch.device) -> int:
    """The GPU's whole memory (a property of the card, unlike its free memory)."""
    return torch.cuda.get_device_properties(device).total_memory


OnChunk = Callable[[int], None] | None  # told the particles each chunk has done (for progress)


def _done(value, on_chunk: OnChunk, particles: int):
    if on_chunk is not None:
        on_chunk(particles)
    return value


def _width(vae: VAE, x: Tensor) -> int:
    """Decoder outputs per image and particle: a structure that enumerates its label decodes each image per class."""
    return x.shape[-1] * (len(vae.class_names) if vae.enumerates else 1)


def _chunk_sizes(vae: VAE, x: Tensor, k: int) -> Iterator[int]:
    chunk = iwae_chunk(x.shape[0], _width(vae, x), k, x.device)
    return (min(chunk, k - start) for start in range(0, k, chunk))


def _one_chunk(vae: VAE, x: Tensor, k: int) -> bool:
    return iwae_chunk(x.shape[0], _width(vae, x), k, x.device) >= k


def elbo_per_image(vae: VAE, x: Tensor, num_particles: int = 1, on_chunk: OnChunk = None) -> Tensor:
    """The Pyro ELBO of each image, averaged over ``num_particles`` samples taken in chunks of
    :func:`iwae_chunk` (one chunk, as for any usual particle count, is a single vectorised pass)."""
    if _one_chunk(vae, x, num_particles):
        return _done(_pyro_elbo(vae, x, num_particles), on_chunk, num_particles)
    total = sum(_done(_pyro_elbo_sum(vae, x, m), on_chunk, m) for m in _chunk_sizes(vae, x, num_particles))
    return total / num_particles


def _pyro_elbo(vae: VAE, x: Tensor, num_particles: int) -> Tensor:
    if vae.enumerates:
        return enumerated_elbo(vae, x, num_particles)
    return log_weights(vae, x, num_particles).mean(0)


def _pyro_elbo_sum(vae: VAE, x: Tensor, num_particles: int) -> Tensor:
    """The per-image ELBO summed over ``num_particles`` particles (for a running mean over chunks)."""
    if vae.enumerates:
        return num_particles * enumerated_elbo(vae, x, num_particles)
    return log_weights(vae, x, num_particles).sum(0)


def _analytic(vae: VAE, x: Tensor, num_particles: int) -> AnalyticELBO:
    """The structure's hand-written ELBO: the label summed out (M2), layer by layer (several latent layers), or
    the one-layer form."""
    if vae.enumerates:
        return analytic_enumerated_elbo(vae, x, num_particles)
    if len(vae.latent_dims) > 1:
        return analytic_layered_elbo(vae, x, num_particles)
    return analytic_elbo(vae, x, num_particles)


def analytic_elbo_per_image(vae: VAE, x: Tensor, num_particles: int = 1, on_chunk: OnChunk = None) -> AnalyticELBO:
    """:func:`~pyro_vae.inference.analytic.analytic_elbo` in the same chunks as :func:`elbo_per_image`, so that under
    the same seed both see the same draws."""
    if _one_chunk(vae, x, num_particles):
        return _done(_analytic(vae, x, num_particles), on_chunk, num_particles)
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, **({"layer_kl": 0.0} if len(vae.latent_dims) > 1 else {})}
    for m in _chunk_sizes(vae, x, num_particles):  # running sums: memory does not grow with the particles
        terms = _done(_analytic(vae, x, m), on_chunk, m)
        sums = {field: total + m * getattr(terms, field) for field, total in sums.items()}
    return AnalyticELBO(**{field: total / num_particles for field, total in sums.items()}, kl_method=terms.kl_method)


def iwae_bound(vae: VAE, x: Tensor, k: int, on_chunk: Callable[[int], None] | None = None) -> Tensor:
    r"""The importance-weighted bound per datapoint with ``k`` samples.

    The particles go through the networks in chunks (:func:`iwae_chunk`), so memory stays bounded
    for any ``k``; the chunks are combined exactly by a running log-sum-exp. ``on_chunk(m)`` is
    called after each chunk of ``m`` particles (for a progress bar).
    """
    total = None
    for m in _chunk_sizes(vae, x, k):
        part = torch.logsumexp(log_weights(vae, x, m), dim=0)
        total = part if total is None else torch.logaddexp(total, part)
        if on_chunk is not None:
            on_chunk(m)
    return total - math.log(k)


@dataclass
class Evaluation:
    """Per-image values (CPU tensors of shape ``(n,)``) and their summaries, in nats per image."""

    elbo: Tensor  # Pyro, num_particles samples
    elbo_analytic: Tensor  # hand-written, same random draws
    recon: Tensor
    kl: Tensor
    iwae: Tensor | None
    num_particles: int
    iwae_k: int
    kl_method: str
    seed: int
    data_dim: int  # pixels per image: the bits/dim denominator
    discrete: bool = False  # the likelihood is a probability mass: bounds also in bits/dim
    posterior_mean: Tensor | None = None  # (n, latent_dim): E_q[z | x], for active units
    latent_dims: tuple[int, ...] | None = None  # the latent layers' sizes (z1 first): posterior_mean's columns
    layer_kl: Tensor | None = None  # (layers, n): each latent layer's KL term (hand-written), several layers only
    labels: Tensor | None = None  # (n,) class labels, for by_class()
    predictions: Tensor | None = None  # (n,) a classifying structure's (M2's) most probable class per image
    ais: Tensor | None = None  # (n,) the AIS estimate of log p(x) (pyro_vae.inference.ais), when asked for
    ais_acceptance: Tensor | None = None  # (n,) its HMC acceptance rate
    ais_steps: int = 0
    ais_chains: int = 0
    kl_per_dim: Tensor | None = None  # (n, latent_dim): KL(q(z_u|x) || p(z_u)) of each coordinate, where defined
    mutual_information: MutualInformation | None = None  # I(x; z) by image, where defined (inference.collapse)

    @property
    def agreement_z(self) -> float:
        """Mean paired difference (Pyro - analytic) over its standard error; ~N(0, 1) when both are right.

        Where both sides compute the same numbers (a Monte Carlo KL on shared draws) the paired
        differences are float32 rounding with a tiny spread; the standard error is floored at
        ``ROUNDING * mean |ELBO|`` so rounding alone never fails the check. NaN for a single image
        (no standard error): agreement cannot be assessed then.
        """
        mean, stderr = mean_stderr(self.elbo - self.elbo_analytic)
        if math.isnan(stderr):
            return math.nan
        stderr = max(stderr, ROUNDING * self.elbo.double().abs().mean().item())
        if stderr == 0:
            return 0.0 if mean == 0 else math.copysign(math.inf, mean)
        return mean / stderr

    def summary(self) -> dict:
        elbo, elbo_se = mean_stderr(self.elbo)
        an, an_se = mean_stderr(self.elbo_analytic)
        out = {
            "n": self.elbo.numel(),
            "elbo": elbo,
            "elbo_stderr": elbo_se,
            "elbo_analytic": an,
            "elbo_analytic_stderr": an_se,
            "agreement_z": self.agreement_z,
            "recon": mean_stderr(self.recon)[0],
            "kl": mean_stderr(self.kl)[0],
            "kl_method": self.kl_method,
            "num_particles": self.num_particles,
            "seed": self.seed,
        }
        if self.iwae is not None:
            iwae, iwae_se = mean_stderr(self.iwae)
            out.update(iwae=iwae, iwae_stderr=iwae_se, iwae_k=self.iwae_k)
        if self.discrete:
            out["elbo_bits_per_dim"] = self.bits_per_dim(elbo)
            if self.iwae is not None:
                out["iwae_bits_per_dim"] = self.bits_per_dim(out["iwae"])
        if self.ais is not None:
            out["ais"], out["ais_stderr"] = mean_stderr(self.ais)
            out.update(ais_steps=self.ais_steps, ais_chains=self.ais_chains)
            out["ais_acceptance"] = mean_stderr(self.ais_acceptance)[0]
            if self.iwae is not None:  # AIS >= IWAE-K on average, when AIS has enough steps: a check, reported
                gain, gain_stderr = mean_stderr(self.ais - self.iwae)
                out.update(ais_minus_iwae=gain, ais_minus_iwae_stderr=gain_stderr)
        if self.predictions is not None and self.labels is not None:
            out["accuracy"], out["accuracy_stderr"] = mean_stderr((self.predictions == self.labels).double())
        if self.posterior_mean is not None and self.posterior_mean.shape[0] > 1:
            variances = latent_variances(self.posterior_mean)
            out.update(
                active_units=active_units(self.posterior_mean),
                latent_dim=variances.numel(),
                active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
                latent_variances=variances.tolist(),
            )
            if self.latent_dims is not None and len(self.latent_dims) > 1:
                out["latent_dims"] = list(self.latent_dims)
                out["active_units_per_layer"] = active_units_per_layer(self.posterior_mean, self.latent_dims)
        if self.layer_kl is not None:
            out["kl_per_layer"] = [mean_stderr(row)[0] for row in self.layer_kl]
        out.update(self._kl_surgery())
        return out

    def _kl_surgery(self) -> dict:
        r"""The KL term taken apart (:mod:`~pyro_vae.inference.collapse`), where defined: each coordinate's mean
        KL; :math:`I(x; z)`, ± its standard error over images, and on how many images; the marginal KL, the KL
        term's mean over those images minus :math:`I`."""
        out = {}
        if self.kl_per_dim is not None:
            out["kl_per_dim"] = self.kl_per_dim.double().mean(0).tolist()
        found = self.mutual_information
        if found is not None:
            information, stderr = mean_stderr(found.terms)
            out.update(mutual_information=information, mutual_information_stderr=stderr)
            out["mutual_information_images"] = found.rows.numel()
            out["marginal_kl"] = mean_stderr(self.kl[found.rows])[0] - information
        return out

    def by_class(self) -> dict[int, dict]:
        """Per label: the number of images and the mean ± standard error of each bound, recon and KL."""
        if self.labels is None:
            raise ValueError("this evaluation has no labels")
        out = {}
        for label in self.labels.unique().tolist():
            keep = self.labels == label
            row = {"n": int(keep.sum())}
            for name in ("elbo", "recon", "kl", "iwae"):
                values = getattr(self, name)
                if values is not None:
                    row[name], row[name + "_stderr"] = mean_stderr(values[keep])
            if self.predictions is not None:
                row["accuracy"], row["accuracy_stderr"] = mean_stderr((self.predictions[keep] == label).double())
            out[int(label)] = row
        return out

    def bits_per_dim(self, nats_per_image: float) -> float:
        """A log-likelihood bound in nats per image as bits per pixel (lower is better)."""
        return -nats_per_image / (self.data_dim * math.log(2))

    def check_agreement(self, limit: float = AGREEMENT_Z_LIMIT) -> None:
        """Raise :class:`AgreementError` when the two ELBOs differ beyond ``limit`` standard errors."""
        if self.elbo.numel() < 2:
            return  # no standard error, nothing to assess
        z = self.agreement_z
        if not abs(z) < limit:  # NaN fails too
            raise AgreementError(
                f"Pyro ELBO {self.elbo.mean():.4f} and analytic-KL ELBO {self.elbo_analytic.mean():.4f} "
                f"disagree: agreement z = {z:.2f} (|z| must be < {limit:g}); a KL, log-density or guide is wrong"
            )


class _TimeLeft:
    """Advances the progress bar and, after ``FIRST_LOOK`` seconds, says once through ``log`` how long
    the rest will take if that is over ``WORTH_SAYING`` seconds (a bar may not be shown, e.g. in a log file)."""

    FIRST_LOOK, WORTH_SAYING = 2.0, 60.0

    def __init__(self, bar: tqdm, log: Callable[[str], None] | None, what: str) -> None:
        self.bar, self.log, self.what = bar, log, what
        self.start, self.done, self.said = time.perf_counter(), 0.0, log is None

    def update(self, images: float) -> None:
        self.bar.update(images)
        self.done += images
        elapsed = time.perf_counter() - self.start
        if self.said or elapsed < self.FIRST_LOOK:
            return
        self.said = True
        left = elapsed * (self.bar.total - self.done) / self.done
        if left > self.WORTH_SAYING:
            self.log(
                f"{self.what}: about {_duration(left)} left at this rate (Ctrl-C stops it; lower --iw-samples, "
                "--num-particles or --limit for a quicker estimate)"
            )


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


@torch.no_grad()
def evaluate(
    vae: VAE,
    x: Tensor,
    *,
    num_particles: int = 1,
    iw_samples: int = 100,
    batch_size: int = 500,
    seed: int = 0,
    labels: Tensor | None = None,
    latent_means: bool = True,
    progress: bool | None = False,
    log: Callable[[str], None] | None = None,
    group: Group = SINGLE,
    ais_steps: int = 0,
    ais_chains: int = DEFAULT_CHAINS,
) -> Evaluation:
    r"""Evaluate ``vae`` on images ``x`` (on the model's device; for a structure with labels, its batch
    :meth:`~pyro_vae.model.vae.VAE.observations`, so the bounds are on :math:`\log p(x \mid y)`).

    Each batch is seeded from ``seed`` and its index. The Pyro pass, the analytic pass and the
    IWAE pass replay the same seed, so they see the same ``z``: common random numbers make the
    paired differences precise, and :math:`\mathrm{IWAE}_1` equals the one-particle ELBO exactly.
    ``iw_samples=0`` skips the importance-weighted bound; ``latent_means=False`` skips the posterior
    means (and so the active units) and the KL term taken apart (:mod:`~pyro_vae.inference.collapse`: each
    coordinate's KL, :math:`I(x; z)` and the marginal KL, where defined; :math:`I` draws from a generator of its
    own, so every other number is the same with and without it). ``ais_steps`` > 0 adds the AIS estimate of
    :math:`\log p(x)` with ``ais_chains`` chains per image (:func:`~pyro_vae.inference.ais.ais_log_likelihood`).
    ``progress``: a progress bar in images (``None``: only on a terminal), advanced after every IWAE chunk. ``log``
    is told, once, how long the evaluation will take when that is more than a minute (see :class:`_TimeLeft`).

    In a job of several processes (``group``) batch :math:`i` is evaluated by rank :math:`i \bmod` world and the
    per-image values are gathered on every rank: since a batch's draws depend only on the seed and its index,
    the result is the one a single process computes, only sooner. :math:`I(x; z)` is computed after the gather, from
    every image's posterior.
    """
    was_training = vae.training
    vae.eval()
    starts = list(range(0, x.shape[0], batch_size))[group.rank :: group.world]
    mine = sum(min(batch_size, x.shape[0] - start) for start in starts)
    bar = tqdm(
        total=mine,
        desc=f"evaluating (K={iw_samples})" if iw_samples else "evaluating",
        unit="img",
        disable=not group.is_main or (None if progress is None else not progress),
        leave=False,
        mininterval=0.5,
        bar_format="{l_bar}{bar}| {n:.0f}/{total} img [{elapsed}<{remaining}, {rate_fmt}]",
    )
    passes = 2 * num_particles + iw_samples + ais_chains * ais_steps * AIS_PASSES_PER_STEP  # (0 steps: none)
    clock = _TimeLeft(
        bar,
        log if group.is_main else None,
        f"evaluating {x.shape[0]} images" + (f" with K={iw_samples}" if iw_samples else ""),
    )
    batches = []
    try:
        # The param store's scope keeps evaluation out of the user's; the heap's (when the runtime policy allows it)
        # lets each chunk reuse the last one's memory instead of faulting in fresh pages.
        with pyro.get_param_store().scope(), heap_reuse(), bar:
            for start in starts:
                xb = x[start : start + batch_size]
                # Progress in images: each particle pass over the batch is one share of its work.
                advance = lambda m, n=xb.shape[0]: clock.update(n * m / passes)  # noqa: E731
                batches.append(
                    _evaluate_batch(
                        vae,
                        xb,
                        seed * 1_000_003 + start // batch_size,
                        num_particles,
                        iw_samples,
                        latent_means,
                        advance,
                        (ais_steps, ais_chains),
                    )
                )
    finally:
        vae.train(was_training)
    if group.parallel:  # batch i came from rank i mod world: deal them back into order
        shares = group.gather(batches)
        batches = [shares[i % group.world][i // group.world] for i in range(-(-x.shape[0] // batch_size))]
    column = lambda key: torch.cat([b[key] for b in batches]) if batches and key in batches[0] else None  # noqa: E731
    return Evaluation(
        elbo=column("elbo"),
        elbo_analytic=column("elbo_analytic"),
        recon=column("recon"),
        kl=column("kl"),
        iwae=column("iwae"),
        num_particles=num_particles,
        iwae_k=iw_samples,
        kl_method=batches[0]["kl_method"] if batches else "analytic",
        seed=seed,
        data_dim=math.prod(vae.image_shape),
        discrete=getattr(vae.likelihood, "discrete", False),
        posterior_mean=column("posterior_mean"),
        latent_dims=vae.latent_dims,
        layer_kl=torch.cat([b["layer_kl"] for b in batches], dim=1) if batches and "layer_kl" in batches[0] else None,
        labels=None if labels is None else labels.cpu(),
        ais=column("ais"),
        ais_acceptance=column("ais_acceptance"),
        ais_steps=ais_steps,
        ais_chains=ais_chains if ais_steps else 0,
        kl_per_dim=column("kl_per_dim"),
        mutual_information=_mutual_information(batches, seed),
        predictions=classifier_predictions(vae, vae.split(x)[0]).cpu()
        if vae.enumerates and labels is not None
        else None,
    )


def _evaluate_batch(
    vae: VAE,
    xb: Tensor,
    batch_seed: int,
    num_particles: int,
    iw_samples: int,
    latent_means: bool,
    advance: Callable[[int], None],
    ais: tuple[int, int] = (0, 0),
) -> dict:
    """One batch's per-image bounds (CPU tensors), every pass from ``batch_seed``."""
    torch.manual_seed(batch_seed)
    out = {"elbo": elbo_per_image(vae, xb, num_particles, advance).cpu()}
    torch.manual_seed(batch_seed)
    terms = analytic_elbo_per_image(vae, xb, num_particles, advance)
    out.update(elbo_analytic=terms.elbo.cpu(), recon=terms.recon.cpu(), kl=terms.kl.cpu(), kl_method=terms.kl_method)
    if terms.layer_kl is not None:
        out["layer_kl"] = terms.layer_kl.cpu()
    if iw_samples > 0:
        torch.manual_seed(batch_seed)
        out["iwae"] = iwae_bound(vae, xb, iw_samples, on_chunk=advance).cpu()
    steps, chains = ais
    if steps:
        torch.manual_seed(batch_seed + 700_000)
        per = max(1, _ELEMENTS_PER_CHUNK // (chains * _width(vae, xb)))  # images at once: memory bounded as for IWAE
        found = [ais_log_likelihood(vae, xb[i : i + per], steps, chains) for i in range(0, xb.shape[0], per)]
        out["ais"] = torch.cat([f.log_likelihood for f in found]).float().cpu()
        out["ais_acceptance"] = torch.cat([f.acceptance for f in found]).float().cpu()
        advance(chains * steps * AIS_PASSES_PER_STEP)
    if latent_means:
        torch.manual_seed(batch_seed + 500_000)  # Monte Carlo moments (IAF guides) draw their own
        out["posterior_mean"] = posterior_moments(vae, xb)[0].cpu()
        out.update(_posterior_columns(vae, xb))
    return out


def _posterior_columns(vae: VAE, xb: Tensor) -> dict[str, Tensor]:
    """A batch's Gaussian posteriors (for :math:`I(x; z)`) and each coordinate's KL, where defined (CPU tensors; no
    random draws)."""
    posteriors = gaussian_posteriors(vae, xb)
    if posteriors is None:
        return {}
    out = {key: value.cpu() for key, value in posteriors.columns().items()}
    prior = factorised_gaussian_prior(vae.prior)
    if prior is not None:
        out["kl_per_dim"] = kl_per_dim(posteriors, *prior).cpu()
    return out


def _mutual_information(batches: list[dict], seed: int) -> MutualInformation | None:
    """:math:`I(x; z)` over every image of the gathered batches, where their posteriors are Gaussian (and there are
    two images at least)."""
    if not batches or "q_loc" not in batches[0] or sum(len(b["q_loc"]) for b in batches) < 2:
        return None
    columns = {key: torch.cat([b[key] for b in batches]) for key in batches[0] if key.startswith("q_")}
    return mutual_information(GaussianPosteriors.from_columns(columns), seed=mutual_information_seed(seed))
