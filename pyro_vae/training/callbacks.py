"""What happens around the training loop, as callbacks: validation, the log line, a warning of posterior collapse,
checkpoints (latest and best), ``metrics.jsonl``, picture snapshots, TensorBoard and MLflow, and whatever a user adds.

A :class:`Callback` has three hooks, called by :class:`~pyro_vae.training.trainer.Trainer` in list order:

* ``on_step_end(trainer, epoch, step, loss)`` after each optimisation step (``loss``: the negative objective
  summed over the batch);
* ``on_epoch_end(trainer, record)`` after each epoch, with the epoch's whole record (already in
  ``trainer.metrics``, with the validation ELBO ``val_elbo`` the trainer computed before any callback runs);
* ``on_run_end(trainer)`` when the last epoch is done.

``trainer`` is what :class:`RunView` lists of the :class:`~pyro_vae.training.trainer.Trainer` running them. In a
job of several processes (:mod:`pyro_vae.runtime.distributed`) callbacks run on rank 0 only, which writes and
speaks for the job, except those with ``every_rank = True``.

Callbacks watch; they never change the run's numbers: each epoch's random draws are seeded from
``(seed, epoch)``, and a callback that draws (pictures) does so under a forked RNG (a test checks that a run
with every callback gives bit-identical weights to one without).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import RunConfig
from ..data.vae_data import VAEData
from ..errors import ConfigError
from ..inference.latents import ACTIVE_UNIT_THRESHOLD
from ..model.vae import VAE
from .run_folder import RunFolder, deprecated_names

__getattr__ = deprecated_names(__name__, {"BEST_NAME": "BEST"})  # until 0.4


class RunView(Protocol):
    """What a callback may use of the trainer that calls it."""

    config: RunConfig  # the run's settings (with the model and data parts recorded from the run)
    vae: VAE
    data: VAEData
    out_dir: Path
    metrics: list[dict]  # one record per finished epoch, the current one last
    stop_requested: bool  # a signal came: this epoch is the last

    def log(self, message: str) -> None: ...

    def save(self, path: str | Path | None = None, *, with_metrics: bool = False) -> None: ...

    def write_metrics(self) -> None: ...


class Callback:
    """Base class: override the hooks you need."""

    every_rank = False  # in a job, run on every process (True) or on rank 0 only

    def on_step_end(self, trainer: RunView, epoch: int, step: int, loss: float) -> None:
        """After each optimisation step."""

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        """After each epoch, with its metrics record."""

    def on_run_end(self, trainer: RunView) -> None:
        """After the last epoch."""


class LogLine(Callback):
    """One line per epoch: loss, validation ELBO, β (when it is not 1), speed."""

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        val = "n/a" if record.get("val_elbo") is None else f"{record['val_elbo']:.2f}"
        objective = trainer.config.objective
        beta = f"  beta {record['beta']:.3g}" if objective.beta != 1 or objective.warmup_epochs else ""
        accuracy = f"  val accuracy {100 * record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
        trainer.log(
            f"epoch {record['epoch']}/{trainer.config.schedule.epochs}  train loss {record['train_loss']:.2f}  "
            f"val ELBO {val}{accuracy}{beta}  {record['images_per_s']:.0f} img/s"
        )


class CollapseWarning(Callback):
    """One line, once, when after the KL warm-up (``objective.warmup_epochs``) an epoch ends with fewer than
    ``schedule.collapse_warning`` of the latent units active on the validation images (``val_active_units``; a run
    without a validation split is not watched). Once per trainer: a resumed run that is still collapsed says it
    again."""

    def __init__(self) -> None:
        self.said = False

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        share, active = trainer.config.schedule.collapse_warning, record.get("val_active_units")
        if self.said or active is None or record["epoch"] <= trainer.config.objective.warmup_epochs:
            return
        units = trainer.vae.latent_dim
        if active < share * units:
            self.said = True
            trainer.log(collapse_message(record, units))


def collapse_message(record: dict, units: int) -> str:
    """The warning's line for an epoch's record with ``val_active_units`` of ``units`` latent units active."""
    information = record.get("val_mutual_information")
    said = f"; I(x;z) {information:.2f} nats" if information is not None else ""
    return (
        f"posterior collapse: {record['val_active_units']} of {units} latent units active after epoch "
        f"{record['epoch']} (Var_x E_q[z_u] > {ACTIVE_UNIT_THRESHOLD:g} on validation images){said}; a longer "
        "--warmup-epochs or a smaller --beta may help (--collapse-warning 0 silences this)"
    )


class Checkpoints(Callback):
    """``OUT/metrics.jsonl`` every epoch, and with it ``OUT/ckpt.pt`` every ``checkpoint_every`` epochs, at the
    end and when a signal came: both atomic, committed together with the checkpoint renamed first, so the
    metrics never list an epoch it lacks and never lag behind it."""

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        epoch, schedule = record["epoch"], trainer.config.schedule
        if epoch % schedule.checkpoint_every == 0 or epoch == schedule.epochs or trainer.stop_requested:
            trainer.save(with_metrics=True)
        else:
            trainer.write_metrics()


class BestCheckpoint(Callback):
    """``OUT/best.pt`` (atomic) whenever the validation ELBO is the best so far; none without a validation split."""

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        val = record.get("val_elbo")
        earlier = [m["val_elbo"] for m in trainer.metrics[:-1] if m.get("val_elbo") is not None]
        if val is not None and math.isfinite(val) and all(val > e for e in earlier):
            trainer.save(RunFolder(trainer.out_dir).best)


def snapshot_grids(trainer: RunView) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructions of 32 fixed images (validation, else training) and 64 prior samples from fixed draws,
    as image grids; training's random state is untouched."""
    from .. import plots

    data = trainer.data
    val = data.images.get("val")
    split = "val" if val is not None and len(val) >= 32 else "train"
    x = val[:32] if split == "val" else data.train_sample(32)  # (with its fixed binarization)
    labels = data.labels.get(split)
    labels = None if labels is None else labels[: len(x)]
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(trainer.config.seed)  # the same prior draws at every epoch
        return plots.reconstruction_grid(trainer.vae, x, labels=labels), plots.sample_grid(trainer.vae)


class PlotSnapshots(Callback):
    """Every ``plot_every`` epochs, ``OUT/plots/{reconstructions,samples}_epochNNN.png``."""

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        every = trainer.config.schedule.plot_every
        if every and record["epoch"] % every == 0:
            from .. import plots

            out = RunFolder(trainer.out_dir).plots
            out.mkdir(exist_ok=True)
            recon, samples = snapshot_grids(trainer)
            plots.save_grid(recon, out / f"reconstructions_epoch{record['epoch']:03d}.png")
            plots.save_grid(samples, out / f"samples_epoch{record['epoch']:03d}.png")


SCALARS = {
    "train/loss": "train_loss",
    "val/elbo": "val_elbo",
    "val/accuracy": "val_accuracy",
    "train/beta": "beta",
    "train/lr": "lr",
    "train/images_per_s": "images_per_s",
    "collapse/active_units": "val_active_units",
    "collapse/mutual_information": "val_mutual_information",
}


def record_scalars(record: dict) -> dict[str, float]:
    """An epoch's record as tagged scalars: those of :data:`SCALARS` it has, and each latent coordinate's KL as
    ``collapse/kl_dim_07`` (numbered from 0, as wide as the last number, at least two digits)."""
    scalars = {tag: record[key] for tag, key in SCALARS.items() if record.get(key) is not None}
    per_dim = record.get("val_kl_per_dim") or []
    width = max(2, len(str(len(per_dim) - 1)))
    scalars.update({f"collapse/kl_dim_{u:0{width}d}": kl for u, kl in enumerate(per_dim)})
    return scalars


EMBEDDING_IMAGES = 1000  # images in TensorBoard's projector at the end of a run (its sprite stays a few MB)


def embedding_points(trainer: RunView, limit: int) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, str]:
    """The first ``limit`` validation images (else training images, as :func:`snapshot_grids` picks), as pictures
    ``(n, C, H, W)`` on the CPU, their posterior means ``(n, d)`` (all layers side by side), their labels' names
    (``None`` without labels) and the split's name; training's random state is untouched."""
    from ..data.sources import class_name
    from ..inference.latents import posterior_moments

    data, vae = trainer.data, trainer.vae
    val = data.images.get("val")
    split = "val" if val is not None and len(val) else "train"
    x = val[:limit] if split == "val" else data.train_sample(limit)
    labels = data.labels.get(split)
    labels = None if labels is None else labels[: len(x)]
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(trainer.config.seed)  # (only sampled moments draw: IAF, several layers)
        means = posterior_moments(vae, vae.observations(x, labels))[0]
    names = None if labels is None else [class_name(data.class_names, int(label)) for label in labels.tolist()]
    return x.reshape(-1, *vae.image_shape).clamp(0, 1).cpu(), means.float().cpu(), names, split


class TensorBoard(Callback):
    """TensorBoard event files in ``log_dir`` (``OUT/tensorboard``): per epoch the scalars of :func:`record_scalars`
    and the reconstruction and sample grids; at the end of the run, the posterior means of the first
    ``embedding_images`` validation images (:func:`embedding_points`) with the images and their labels, for the
    embedding projector (0: none). Needs the ``tensorboard`` package (``pip install "pyro-vae[tensorboard]"``); watch
    with ``tensorboard --logdir OUT/tensorboard``."""

    def __init__(
        self, log_dir: str | Path | None = None, images: bool = True, embedding_images: int = EMBEDDING_IMAGES
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                '--tensorboard needs the tensorboard package: pip install "pyro-vae[tensorboard]"'
            ) from None
        self._writer_class, self.log_dir, self.images, self.writer = SummaryWriter, log_dir, images, None
        self.embedding_images = embedding_images

    def _open(self, trainer: RunView):
        if self.writer is None:
            self.writer = self._writer_class(str(self.log_dir or RunFolder(trainer.out_dir).tensorboard))
        return self.writer

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        writer = self._open(trainer)
        epoch = record["epoch"]
        for tag, value in record_scalars(record).items():
            writer.add_scalar(tag, value, epoch)
        if self.images:
            recon, samples = snapshot_grids(trainer)
            writer.add_image("reconstructions", recon, epoch)
            writer.add_image("samples", samples, epoch)
        writer.flush()

    def on_run_end(self, trainer: RunView) -> None:
        if self.embedding_images > 0:
            self._add_embedding(trainer)
        if self.writer is not None:
            self.writer.close()

    def _add_embedding(self, trainer: RunView) -> None:
        """The projector's files under ``OUT/tensorboard/EPOCH/SPLIT_posterior_means/`` (once per epoch: a resumed run
        that trained no further leaves them as they are)."""
        writer = self._open(trainer)
        epoch = trainer.metrics[-1]["epoch"] if trainer.metrics else 0
        pictures, means, names, split = embedding_points(trainer, self.embedding_images)
        tag = f"{split}_posterior_means"
        if (Path(writer.get_logdir()) / f"{epoch:05d}" / tag).exists():
            return
        writer.add_embedding(means, metadata=names, label_img=pictures, global_step=epoch, tag=tag)
        writer.flush()


class MLflowLogger(Callback):
    """The run in MLflow (``pip install "pyro-vae[mlflow]"``): the config as parameters at the first epoch, the
    scalars of :func:`record_scalars` per epoch, and the run folder's checkpoints and config as artifacts at the end.
    The tracking URI and experiment are MLflow's own (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``)."""

    def __init__(self) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError('--mlflow needs the mlflow package: pip install "pyro-vae[mlflow]"') from None
        self.mlflow, self.started = mlflow, False

    def on_epoch_end(self, trainer: RunView, record: dict) -> None:
        if not self.started:
            self.mlflow.start_run(run_name=trainer.out_dir.name)
            self.mlflow.log_params(flatten(trainer.config.to_dict()))
            self.started = True
        metrics = {tag.replace("/", "_"): value for tag, value in record_scalars(record).items()}
        self.mlflow.log_metrics(metrics, step=record["epoch"])

    def on_run_end(self, trainer: RunView) -> None:
        if self.started:
            for path in sorted(trainer.out_dir.glob("*")):
                if path.suffix in (".pt", ".toml", ".jsonl"):
                    self.mlflow.log_artifact(str(path))
            self.mlflow.end_run()


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"latent_dim": 20}}`` -> ``{"model.latent_dim": 20}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def default_callbacks() -> list[Callback]:
    """What every run does each epoch, in this order: log (and warn of collapse), checkpoint, record, keep the best,
    draw."""
    return [LogLine(), CollapseWarning(), Checkpoints(), BestCheckpoint(), PlotSnapshots()]
