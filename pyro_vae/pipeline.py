"""Whole jobs, as the CLI runs them: start or resume a training run, evaluate a checkpoint.

Each function takes plain arguments and returns library objects, so a script can do what the
CLI does in one call. In a job of several processes (:mod:`pyro_vae.runtime.distributed`, the process group
already started) rank 0 reads the checkpoint and hands it to the others, each process takes ``device``'s GPU of
its own (``cuda:LOCAL_RANK``), an input error on any process stops all of them, and training and evaluation are
shared out among them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from .config import RunConfig
from .data import VAEData
from .data.sources import class_name
from .errors import CheckpointError, ConfigError
from .inference.ais import AISResult
from .inference.bdmc import BDMCResult, bidirectional_ais, simulate
from .inference.bounds import Evaluation, evaluate, iwae_chunk
from .inference.enumerated import classifier_predictions
from .inference.gaps import (
    EVAL_PARTICLES,
    FIT_PARTICLES,
    MAX_STEPS,
    InferenceGaps,
    check_gap_family,
    concatenate,
    inference_gaps,
)
from .inference.latents import posterior_moments
from .model.vae import VAE
from .runtime.atomic import atomic_path
from .runtime.devices import peak_memory_mib, reset_peak_memory, resolve_device
from .runtime.distributed import current, device_name
from .runtime.limits import check_disk, check_fits, check_vae_fits, chunk_size, meta_module
from .sharing import best_validation, describe_component, n_parameters, read_model
from .training.checkpoint import load_weights
from .training.run_folder import RunFolder
from .training.runs import resume_run, start_run  # noqa: F401 (pyro_vae.pipeline.resume_run, as before)
from .training.trainer import read_metrics

SAMPLE_PIECE_BYTES = 1 << 28  # decoded at once by sample/write_samples (85,000 Bernoulli images)


def load_model(checkpoint: str | Path, device: str = "auto", trust_modules: Iterable[str] = ()) -> tuple[VAE, dict]:
    """The trained model in ``checkpoint`` (a checkpoint file, an exported folder or ``hf://REPO``, see
    :mod:`pyro_vae.sharing`) on ``device``, and the checkpoint itself. Components from
    modules other than ``pyro_vae`` are rebuilt only from ``trust_modules`` (see :mod:`pyro_vae.model.rebuild`)."""
    vae, _, ckpt = _load(checkpoint, device, trust_modules)
    return vae, ckpt


def _load(checkpoint: str | Path, device: str, trust_modules: Iterable[str]) -> tuple[VAE, RunConfig, dict]:
    group = current()
    ckpt = group.from_main(lambda: read_model(checkpoint))
    config = RunConfig.from_checkpoint(ckpt, trust_modules)
    dev = resolve_device(device_name(device, group))
    check_vae_fits(lambda: config.untrained_model(), dev)
    return load_weights(config.untrained_model(), ckpt).to(dev), config, ckpt


MAX_AIS_STEPS = 1_000_000
MAX_AIS_CHAINS = 10_000
MAX_SIMULATED = 100_000
# evaluate's batches take seed * 1_000_003 + i; its AIS + 700_000, I(x;z) + 600_000; BDMC's groups + 900_000
SIMULATION_SEED = 800_000


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    num_particles: int = 1,
    iw_samples: int = 100,
    data_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 500,
    device: str = "auto",
    progress: bool | None = False,
    trust_modules: Iterable[str] = (),
    log: Callable[[str], None] | None = None,
    ais_steps: int = 0,
    ais_chains: int = 4,
) -> tuple[Evaluation, dict]:
    """Bounds of a checkpoint's model on one split (``ais_steps`` > 0: with the AIS estimate); returns the
    evaluation and descriptive fields (what was evaluated, the IWAE chunk size, the seconds taken and the peak
    memory)."""
    if num_particles < 1 or iw_samples < 0 or batch_size < 1 or (limit is not None and limit < 1):
        raise ConfigError("--num-particles, --batch-size and --limit must be positive, --iw-samples >= 0")
    if not (0 <= ais_steps <= MAX_AIS_STEPS and 1 <= ais_chains <= MAX_AIS_CHAINS):
        raise ConfigError(f"--ais must be 0 to {MAX_AIS_STEPS} steps and --ais-chains 1 to {MAX_AIS_CHAINS}")
    group = current()
    with group.together():
        vae, config, ckpt = _load(checkpoint, device, trust_modules)
        device_ = next(vae.parameters()).device
        x, labels, data_config, class_names = checkpoint_data(config, split, data_dir, device_, limit)
        vae.likelihood.check_data(x)
        vae.check_labels(labels, len(x))
        if ais_steps:  # (a structure AIS cannot move says so now, before any bound is computed)
            one = vae.bound_batch(x[:1], None if labels is None else labels[:1])
            vae.log_densities(one)(vae.generate(1)[None])
    reset_peak_memory(device_)
    start = time.perf_counter()
    result = evaluate(
        vae,
        vae.bound_batch(x, labels),
        num_particles=num_particles,
        iw_samples=iw_samples,
        batch_size=batch_size,
        seed=seed,
        labels=labels,
        progress=progress,
        log=log,
        group=group,
        ais_steps=ais_steps,
        ais_chains=ais_chains,
    )
    seconds = time.perf_counter() - start
    peak_mib, peak_of = peak_memory_mib(device_)
    info = {
        "checkpoint": str(checkpoint),
        "epoch": ckpt["epoch"],
        "dataset": data_config.dataset,
        "binarize": data_config.binarize,
        "data": data_config.describe(),
        "split": split,
        "structure": vae.structure,
        "bound_of": vae.bound_of,
        "pyro_elbo": "TraceEnum_ELBO" if vae.enumerates else "Trace_ELBO",
        "terms": list(vae.terms),
        "class_names": class_names if labels is not None else None,
        "labelled": labels is not None,
        "likelihood": describe_component(config.model.likelihood),
        "prior": describe_component(config.model.prior),
        "guide": describe_component(config.model.guide),
        "device": str(device_),
        "processes": group.world,
        "torch_threads": torch.get_num_threads(),
        "iwae_chunk": iwae_chunk(min(batch_size, x.shape[0]), x.shape[-1], iw_samples, device_) if iw_samples else None,
        "seconds": seconds,
        "peak_memory_mib": peak_mib,
        "peak_memory_of": peak_of,
    }
    return result, info


def checkpoint_data(config: RunConfig, split: str, data_dir, device: torch.device, limit: int | None):
    """The observed images, labels (``None`` when the source has none) and class names of ``split`` for the run's
    data source, image shape and binarization (``data_dir``: the same kind of source in another place)."""
    data = VAEData(config.data, data_dir, device, splits=(split,))
    x, labels = data.observed(split), data.labels[split]
    if limit is not None:
        x, labels = x[:limit], None if labels is None else labels[:limit]
    if x.shape[0] == 0:
        raise ConfigError(f"this run has no {split} images (its training set them: pyro-vae train --{split}-size N)")
    return x, labels, config.data, data.class_names


def bdmc_checkpoint(
    checkpoint: str | Path,
    *,
    n: int = 100,
    ais_steps: int = 1000,
    ais_chains: int = 4,
    iw_samples: int = 100,
    seed: int = 0,
    batch_size: int = 100,
    device: str = "auto",
    progress: bool | None = False,
    trust_modules: Iterable[str] = (),
) -> tuple[Evaluation, BDMCResult, dict]:
    """Bidirectional Monte Carlo on ``n`` images simulated from a checkpoint's model (:mod:`pyro_vae.inference.bdmc`):
    the usual bounds of those images, and forward and reverse AIS in groups of ``batch_size`` images; returns the
    evaluation, the sandwich and descriptive fields."""
    if not (1 <= ais_steps <= MAX_AIS_STEPS and 1 <= ais_chains <= MAX_AIS_CHAINS and 1 <= n <= MAX_SIMULATED):
        raise ConfigError(
            f"--bdmc needs --ais 1 to {MAX_AIS_STEPS} steps, --ais-chains 1 to {MAX_AIS_CHAINS} and --limit 1 to "
            f"{MAX_SIMULATED} simulated images"
        )
    vae, config, ckpt = _load(checkpoint, device, trust_modules)
    vae.eval()
    device_ = next(vae.parameters()).device
    from .plots import class_cycle

    labels = class_cycle(vae, n)
    blank = torch.zeros(1, math.prod(vae.image_shape), device=device_)  # (a structure AIS cannot move says so now)
    vae.log_densities(vae.observations(blank, None if labels is None else labels[:1]))
    # Not ``seed`` itself: the evaluation's first batch is seeded with it, and its guide draws would be the very
    # normal draws that made the images (for a standard-normal prior, eps = z*): the draws must not know the data.
    torch.manual_seed(seed * 1_000_003 + SIMULATION_SEED)
    batch, exact = simulate(vae, n, labels)
    reset_peak_memory(device_)
    start = time.perf_counter()
    result = evaluate(
        vae, batch, iw_samples=iw_samples, batch_size=batch_size, seed=seed, labels=labels, progress=progress
    )
    parts = []
    for i, part in _groups(n, batch_size, progress, "BDMC"):
        torch.manual_seed(seed * 1_000_003 + i + 900_000)
        parts.append(bidirectional_ais(vae, batch[part], exact[part], ais_steps, ais_chains))
    sandwich = BDMCResult(forward=_cat_ais([p.forward for p in parts]), reverse=_cat_ais([p.reverse for p in parts]))
    peak_mib, peak_of = peak_memory_mib(device_)
    info = {
        "checkpoint": str(checkpoint),
        "epoch": ckpt["epoch"],
        "data": f"{n} images simulated from the model (z ~ p(z), x ~ p(x|z); seed {seed})",
        "split": "simulated",
        "structure": vae.structure,
        "likelihood": describe_component(config.model.likelihood),
        "prior": describe_component(config.model.prior),
        "guide": describe_component(config.model.guide),
        "device": str(device_),
        "iwae_chunk": iwae_chunk(min(batch_size, n), batch.shape[-1], iw_samples, device_) if iw_samples else None,
        "seconds": time.perf_counter() - start,
        "peak_memory_mib": peak_mib,
        "peak_memory_of": peak_of,
        "ais_steps": ais_steps,
        "ais_chains": ais_chains,
    }
    return result, sandwich, info


def _cat_ais(parts: list[AISResult]) -> AISResult:
    return AISResult(
        *(torch.cat([getattr(p, f) for p in parts], -1) for f in ("log_weights", "acceptance", "step_size"))
    )


def _groups(n: int, size: int, progress: bool | None, what: str) -> Iterator[tuple[int, slice]]:
    """``(index, images)`` of the groups of ``size`` among ``n`` images, with a progress bar in groups (``progress``
    ``None``: only on a terminal)."""
    from tqdm.auto import tqdm

    starts = tqdm(range(0, n, size), desc=what, unit="group", disable=None if progress is None else not progress)
    return ((i, slice(first, first + size)) for i, first in enumerate(starts))


def gaps_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    limit: int | None = 1000,
    data_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 500,
    ais_steps: int = 1000,
    ais_chains: int = 4,
    full_cov: bool = False,
    particles: int = FIT_PARTICLES,
    eval_particles: int = EVAL_PARTICLES,
    max_steps: int = MAX_STEPS,
    device: str = "auto",
    progress: bool | None = False,
    trust_modules: Iterable[str] = (),
) -> tuple[InferenceGaps, dict]:
    """The inference gaps of a checkpoint's guide on the first ``limit`` images of ``split``
    (:mod:`pyro_vae.inference.gaps`), ``batch_size`` images fitted at once, each group seeded from ``seed`` and its
    index; returns them and descriptive fields."""
    if not (1 <= ais_steps <= MAX_AIS_STEPS and 1 <= ais_chains <= MAX_AIS_CHAINS):
        raise ConfigError(f"--ais must be 1 to {MAX_AIS_STEPS} steps and --ais-chains 1 to {MAX_AIS_CHAINS}")
    if not (1 <= particles <= 10_000 and 1 <= eval_particles <= 100_000 and 1 <= max_steps <= 1_000_000):
        raise ConfigError("--particles must be 1 to 10000, --eval-particles 1 to 100000, --max-steps 1 to 1000000")
    vae, config, ckpt = _load(checkpoint, device, trust_modules)
    family = check_gap_family(vae)
    if full_cov and family == "full-cov":
        raise ConfigError("--full-cov fits a richer q* for a diagonal guide; this guide is already full-covariance")
    device_ = next(vae.parameters()).device
    x, labels, data_config, _ = checkpoint_data(config, split, data_dir, device_, limit)
    vae.likelihood.check_data(x)
    vae.check_labels(labels, len(x))
    batch = vae.bound_batch(x, labels)
    start = time.perf_counter()
    parts = []
    for i, part in _groups(len(x), batch_size, progress, "gaps"):
        torch.manual_seed(seed * 1_000_003 + i)
        parts.append(
            inference_gaps(
                vae,
                batch[part],
                ais_steps=ais_steps,
                ais_chains=ais_chains,
                full_cov=full_cov,
                particles=particles,
                eval_particles=eval_particles,
                max_steps=max_steps,
            )
        )
    info = {
        "checkpoint": str(checkpoint),
        "epoch": ckpt["epoch"],
        "data": data_config.describe(),
        "split": split,
        "family": family,
        "guide": describe_component(config.model.guide),
        "device": str(device_),
        "seed": seed,
        "fit_particles": particles,
        "eval_particles": eval_particles,
        "max_steps": max_steps,
        "seconds": time.perf_counter() - start,
    }
    return concatenate(parts), info


def sample_checkpoint(
    checkpoint: str | Path,
    n: int = 64,
    *,
    seed: int = 0,
    pixels: str = "mean",
    device: str = "auto",
    trust_modules: Iterable[str] = (),
    label: int | str | None = None,
) -> Tensor:
    """``n`` images ``(n, C, H, W)`` on the CPU from the checkpoint's model (see :func:`plots.sample_images`;
    ``label``: a model with labels draws that class, by number or name, else each class in turn)."""
    shape, pieces = _sampler(checkpoint, n, seed, pixels, device, trust_modules, label)
    check_fits(n * 4 * math.prod(shape), f"{n} samples", "lower -n", "cpu")
    return torch.cat(list(pieces))


def write_samples(
    checkpoint: str | Path,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    pixels: str = "mean",
    device: str = "auto",
    trust_modules: Iterable[str] = (),
    label: int | str | None = None,
) -> Path:
    """``n`` samples of the checkpoint's model (of class ``label``, see :func:`sample_checkpoint`) written to ``out``:
    a ``.npy`` array ``(n, C, H, W)`` of float32,
    filled piece by piece (so any ``n`` the disk holds works), or a ``.png`` grid (which must fit in memory).
    Both are checked against the free disk or memory before anything is drawn; the file is written atomically."""
    from . import plots

    out = Path(out)
    shape, pieces = _sampler(checkpoint, n, seed, pixels, device, trust_modules, label)
    if out.suffix.lower() == ".npy":
        check_disk(n * 4 * math.prod(shape), out, f"{n} samples as .npy", "lower -n")
    else:  # the images, make_grid's padded RGB float copy and the 8-bit picture
        check_fits(
            n * (4 * math.prod(shape) + 13 * (shape[1] + 2) * (shape[2] + 2)),
            f"a PNG grid of {n} samples",
            "lower -n, or write .npy",
            "cpu",
        )
    if out.suffix.lower() != ".npy":
        return plots.save_grid(plots.tile(torch.cat(list(pieces))), out)
    import numpy as np

    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *shape))
        done = 0
        for piece in pieces:
            array[done : done + len(piece)] = piece.numpy()
            done += len(piece)
        array.flush()
        del array  # close the memory map before the rename
    return out


def _sampler(
    checkpoint, n: int, seed: int, pixels: str, device: str, trust_modules, label: int | str | None = None
) -> tuple[tuple[int, int, int], Iterator[Tensor]]:
    """The model's image shape and its ``n`` samples, drawn piece by piece as the iterator is read."""
    from . import plots

    if n < 1:
        raise ConfigError(f"the number of samples must be positive, got {n}")
    vae, _ = load_model(checkpoint, device, trust_modules)
    index = None if label is None else label_index(vae, label)
    torch.manual_seed(seed)
    chunk = chunk_size(n, 4 * math.prod(vae.image_shape) * (1 + vae.likelihood.num_params), SAMPLE_PIECE_BYTES)
    return vae.image_shape, plots.sample_chunks(vae.eval(), n, pixels, chunk, index)


def label_index(vae: VAE, label: int | str) -> int:
    """The class ``label`` names in ``vae`` (its number, or its name); :class:`ConfigError` when there is none."""
    if not vae.needs_labels:
        raise ConfigError(
            f"--label needs a model with labels (--structure conditional or semi-supervised); this is {vae.structure}"
        )
    names = list(vae.class_names)
    if isinstance(label, str) and label in names:
        return names.index(label)
    try:
        index = int(label)
    except ValueError:
        index = -1
    if not 0 <= index < len(names):
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(f"--label {label}: this model's classes are 0..{len(names) - 1} ({shown})")
    return index


def encode_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    device: str = "auto",
    trust_modules: Iterable[str] = (),
) -> dict[str, Tensor | str]:
    """Posterior means and marginal scales ``(n, d)`` and labels ``(n,)`` (when the data has them) of a split, on
    the CPU, with the dataset, binarization and split they came from."""
    vae, config, _ = _load(checkpoint, device, trust_modules)
    x, labels, data_config, _ = checkpoint_data(config, split, data_dir, next(vae.parameters()).device, limit)
    vae.check_labels(labels, len(x))
    torch.manual_seed(seed)  # only guides without closed-form moments (IAF) draw samples
    means, scales = posterior_moments(vae.eval(), vae.observations(x, labels), batch_size=batch_size)
    found = {
        "means": means.cpu(),
        "scales": scales.cpu(),
        "dataset": data_config.dataset,
        "binarize": data_config.binarize,
        "split": split,
    }
    return found if labels is None else {**found, "labels": labels.cpu()}


def plot_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    num_points: int = 5000,
    seed: int = 0,
    device: str = "auto",
    trust_modules: Iterable[str] = (),
    manifold_size: int = 20,
    manifold_mass: float = 0.9,
) -> tuple[list[Path], dict[str, str]]:
    """Every picture of :mod:`pyro_vae.plots` for a checkpoint, as PNGs in ``out_dir``.

    Reconstructions of the split's first 32 images, 64 prior samples, the latent scatter of the first
    ``num_points`` images, the manifold (z=2 only: ``manifold_size`` x ``manifold_size`` decodings spanning the
    central ``manifold_mass`` of the prior on each axis), interpolations between images 0-7 and 8-15, and the
    training curves from ``metrics.jsonl`` beside the checkpoint (else the checkpoint's own copy).
    Returns the files written and, for each picture left out, why.
    """
    from . import plots

    if not (2 <= manifold_size <= 100 and 0 < manifold_mass < 1):
        raise ConfigError(
            f"the manifold needs 2..100 points a side and a prior mass in (0, 1), got {manifold_size} "
            f"and {manifold_mass}"
        )
    if num_points < 16:
        raise ConfigError(f"--num-points must be at least 16 (the interpolations use 16 images), got {num_points}")
    vae, config, ckpt = _load(checkpoint, device, trust_modules)
    vae.eval()
    x, labels, data_config, class_names = checkpoint_data(
        config, split, data_dir, next(vae.parameters()).device, num_points
    )
    if x.shape[0] < 16:
        raise ConfigError(f"the {split} split has {x.shape[0]} images; the pictures need at least 16")
    vae.likelihood.check_data(x)
    vae.check_labels(labels, len(x))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    title = f"{data_config.dataset} {split} split, epoch {ckpt['epoch']}"
    recon_rows = ["input", "reconstruction"] * 4  # reconstruction_grid: each row of inputs above its reconstructions
    written = [
        plots.save_figure(
            plots.grid_figure(
                plots.reconstruction_grid(vae, x[:32], labels=None if labels is None else labels[:32]),
                f"reconstructions: decoder mean at the posterior mean\n{title}",
                recon_rows,
            ),
            out_dir / "reconstructions.png",
        ),
        plots.save_figure(
            plots.grid_figure(
                plots.sample_grid(vae, 64), f"64 samples: decoder mean E[x|z], z ~ p(z)\nepoch {ckpt['epoch']}"
            ),
            out_dir / "prior_samples.png",
        ),
        plots.save_figure(
            plots.latent_scatter(
                posterior_moments(vae, vae.observations(x, labels))[0],
                labels,
                class_names,
                title=f"posterior means: {x.shape[0]} images, {title}",
            ),
            out_dir / "latent_scatter.png",
        ),
    ]
    skipped = {}
    if vae.needs_labels:
        names = [class_name(class_names, i) for i in range(len(vae.class_names))]
        grid = plots.class_style_grid(vae, 8)
        title = f"one row per class, one column per z ~ p(z): E[x | z, y]\nepoch {ckpt['epoch']}"
        written.append(plots.save_figure(plots.grid_figure(grid, title, names), out_dir / "class_styles.png"))
    if len(vae.latent_dims) > 1:
        title = f"rows: top layer z{len(vae.latent_dims)} ~ p; columns: layers below redrawn\n"
        grid = plots.grid_figure(plots.layer_grid(vae), title + f"epoch {ckpt['epoch']}")
        written.append(plots.save_figure(grid, out_dir / "layers.png"))
    if vae.enumerates and labels is not None:
        predictions = classifier_predictions(vae, x)
        confusion = plots.confusion_figure(predictions, labels, class_names, len(vae.class_names))
        written.append(plots.save_figure(confusion, out_dir / "confusion.png"))
    if vae.latent_dims == (2,):
        manifold = plots.manifold_figure(vae, manifold_size, mass=manifold_mass)
        written.append(plots.save_figure(manifold, out_dir / "manifold.png"))
    else:
        skipped["manifold"] = f"needs one 2-D latent layer (this model has {' + '.join(map(str, vae.latent_dims))})"
    pairs = [f"images {i}, {i + 8}" for i in range(8)]
    written.append(
        plots.save_figure(
            plots.grid_figure(
                plots.interpolation_grid(
                    vae,
                    x[:8],
                    x[8:16],
                    labels_from=None if labels is None else labels[:8],
                    labels_to=None if labels is None else labels[8:16],
                ),
                f"image, 10 decodings between posterior means, image; {title}",
                pairs,
            ),
            out_dir / "interpolations.png",
        )
    )
    metrics_path = RunFolder(Path(checkpoint).parent).metrics if Path(checkpoint).is_file() else None
    metrics = read_metrics(metrics_path) if metrics_path and metrics_path.is_file() else list(ckpt["metrics"])
    if metrics:
        objective = config.objective.kind
        written.append(plots.save_figure(plots.training_curves(metrics, objective), out_dir / "training_curves.png"))
    else:
        skipped["training_curves"] = "no metrics recorded"
    return written, skipped


def checkpoint_info(checkpoint: str | Path, trust_modules: Iterable[str] = ()) -> dict:
    """What a checkpoint file, exported folder or ``hf://REPO`` holds, without building the model: its kind,
    format and size, epoch, best and last validation ELBO, components, data, parameter count, package versions
    and the whole config."""
    ckpt = read_model(checkpoint)
    config = RunConfig.from_checkpoint(ckpt, trust_modules)
    model = meta_module(lambda: config.untrained_model())  # shapes only: nothing large is allocated
    if model is not None:
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if expected != {k: tuple(v.shape) for k, v in ckpt["model_state"].items()}:
            raise CheckpointError(f"{checkpoint}: the stored weights do not fit the stored architecture")
    path = Path(checkpoint)
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
    best = best_validation(ckpt["metrics"])
    last = ckpt["metrics"][-1].get("val_elbo") if ckpt["metrics"] else None
    return {
        "path": str(checkpoint),
        "kind": "exported model (safetensors)" if ckpt.get("exported") else "training checkpoint",
        "format_version": ckpt["exported"] if ckpt.get("exported") else ckpt.get("format_version"),
        "size_bytes": sum(p.stat().st_size for p in files),
        "epoch": ckpt["epoch"],
        "epochs": config.schedule.epochs,
        "best_val_elbo": None if best is None else best[0],
        "best_val_epoch": None if best is None else best[1],
        "last_val_elbo": last,
        "structure": config.model.structure,
        "latent_dims": list(config.model.layer_dims()),
        "prior": describe_component(config.model.prior),
        "likelihood": describe_component(config.model.likelihood),
        "guide": describe_component(config.model.guide),
        "data": config.data.describe(),
        "data_shape": list(config.data.image_shape),
        "parameters": n_parameters(ckpt),
        "resumable": not ckpt.get("exported") and "optim_state" in ckpt,
        "versions": dict(ckpt.get("versions", {})),
        "config": config.to_dict(),
    }
