r"""The training loop: SVI with Adam on the objective of a :class:`~pyro_vae.config.RunConfig`.

The step is :class:`~pyro_vae.inference.fast_svi.FastSVI`: ``SVI.step``'s update (the ELBO's own
``loss_and_grads``, see :mod:`pyro_vae.inference.objectives`) with one fused ``torch.optim.Adam`` and Pyro
validation on the first step only.

:class:`Trainer` owns one run folder, under an exclusive lock (:mod:`pyro_vae.training.run_lock`) while it
exists or trains. After each epoch it validates, then its callbacks (:mod:`pyro_vae.training.callbacks`) log, write
``ckpt.pt`` (every ``checkpoint_every`` epochs and at the end), *then* ``metrics.jsonl``, one JSON line per
epoch, then ``best.pt``, all atomically, and draw; then the user's callbacks run. On (re)start ``metrics.jsonl`` is
rewritten from the checkpoint's own records, so whatever moment a run was killed at, the file holds
epochs 1..E exactly once. Each epoch is seeded from ``(seed, epoch)`` (shuffling, dynamic
binarization, the guide's samples), so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have. SIGINT/SIGTERM stop it after the current step with a checkpoint that
records the step (:mod:`pyro_vae.training.stopping`); a non-finite loss or gradient stops it before the
optimiser uses it, keeping the last good checkpoint.

In a job of several processes (``torchrun``; :mod:`pyro_vae.runtime.distributed`) every process runs this
loop on its rows of each global batch of ``batch_size`` and takes the same step (:class:`FastSVI` sums the
gradients); rank 0 alone writes the run folder and speaks. The batches and every random draw depend on the seed,
the step and the image, not on the process, so any number of processes follows one process's run up to float
rounding, and a checkpoint resumes at any world size. A process that dies or stops answering ends the job.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.vae_data import VAEData
from ..errors import CheckpointError, ConfigError, DataError, RunInterrupted, TrainingError, first_line
from ..inference.bounds import evaluate
from ..inference.collapse import collapse_diagnostics
from ..inference.fast_svi import FastSVI, Shard, make_adam
from ..model.config import ModelConfig
from ..model.vae import VAE
from ..runtime.atomic import atomic_copy, atomic_path, atomic_paths, remove_temporaries
from ..runtime.distributed import CollectiveError, PeerError, Peers, current
from ..runtime.limits import check_step_fits
from ..runtime.policy import current_policy, frozen_gc
from ..runtime.threads import ThreadBudget
from .callbacks import Callback, default_callbacks
from .checkpoint import adam_state_from_pyro, is_pyro_optim_state, rng_state, set_rng_state, write_checkpoint
from .run_folder import RunFolder, deprecated_names
from .run_lock import RunFolderLock
from .stopping import StopRequest, stop_requests

# Until 0.4: the names of the run's files before RunFolder.
__getattr__ = deprecated_names(
    __name__, {"CHECKPOINT_NAME": "CHECKPOINT", "METRICS_NAME": "METRICS", "CONFIG_NAME": "CONFIG"}
)


def read_metrics(path: str | Path) -> list[dict]:
    """The per-epoch records in a ``metrics.jsonl``; where a resumed run repeated an epoch, its last record."""
    by_epoch: dict[int, dict] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                by_epoch[int(record["epoch"])] = record
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}, line {number}: not a metrics record") from None
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_metrics(path: str | Path, records: list[dict]) -> None:
    """``records`` as ``metrics.jsonl``, one JSON line each, replacing the file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(metrics_text(records))


def metrics_text(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


@contextmanager
def _no_pyro_nan_warnings() -> Iterator[None]:
    """Pyro warns "Encountered NaN" from inside the ELBO; the Trainer stops with its own one-line error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        yield


def _write_together(files: dict[Path, Callable[[Path], None]]) -> None:
    """Each ``write(tmp)`` to its file's temporary path, then all renamed in order (:func:`atomic_paths`)."""
    with atomic_paths(files) as tmps:
        for write, tmp in zip(files.values(), tmps):
            write(tmp)


COLLAPSE_IMAGES = 1000  # validation images (the first) whose posteriors each epoch's record describes


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s draws; within the 32 bits ``pyro.set_rng_seed`` (numpy) accepts."""
    return (seed * 100_003 + epoch) % 2**32


class Trainer:
    """Trains ``vae`` on ``data`` with SVI and records the run in ``out_dir``."""

    def __init__(
        self,
        vae: VAE,
        data: VAEData,
        config: RunConfig,
        out_dir: str | Path,
        *,
        progress: bool | None = None,
        log: Callable[[str], None] | None = None,
        lock: RunFolderLock | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        """``config`` gives the objective, optimiser, schedule and seed; the checkpoint stores it with the model
        and data parts describing ``vae`` and ``data``. ``progress``: show a progress bar (``None``: only when
        stderr is a terminal). The run folder's lock is taken here (or ``lock``, already taken, is adopted)
        and released when :meth:`fit` ends. ``callbacks`` run after the built-in ones
        (:func:`~pyro_vae.training.callbacks.default_callbacks`)."""
        for part in (config.objective, config.optimizer, config.schedule):
            part.validate()
        for split in ("train", "val"):  # (a sample of the training set: all of it may not be in memory)
            if data.count(split):
                vae.check_labels(data.labels.get(split), data.count(split))
                vae.likelihood.check_data(data.train_sample(1024) if split == "train" else data.images["val"])
        check_step_fits(
            vae,
            data.data_dim,
            min(config.optimizer.batch_size, data.count("train")),
            config.objective.particles * (len(vae.class_names) if vae.enumerates else 1),  # (M2 decodes per class)
            data.device,
        )
        recorded_data = dataclasses.replace(data.config, root=str(data.root))  # a resumed run finds its data again
        self.config = dataclasses.replace(config, model=ModelConfig.of(vae), data=recorded_data)
        self.vae, self.data = vae, data
        self.out_dir = Path(out_dir)
        self.files = RunFolder(self.out_dir)  # the paths of the run's files
        self.group = current()  # this process's place in a job (rank 0 of 1 without one)
        self._check_shardable(data.count("train"), config.optimizer.batch_size)
        if self.group.parallel and vae.enumerates:
            raise ConfigError(
                f"--structure {vae.structure} trains in one process (each batch splits into labelled and unlabelled "
                "rows); run it without torchrun"
            )
        self._peers: Peers | None = None  # where every process runs, to name one that dies
        self.lock = (lock or RunFolderLock(self.out_dir)).acquire()
        self.progress = progress if self.group.is_main else False
        self.log = (log or (lambda message: None)) if self.group.is_main else (lambda message: None)
        self.optimizer = make_adam(vae.parameters(), config.optimizer.lr, config.optimizer.adam_eps)
        self.svi = FastSVI(
            vae.model,
            vae.guide,
            self.optimizer,
            vae.objective(config.objective),
            group=self.group,
            compile=config.objective.compile,
        )
        self._said_no_jit = self._said_compile = False
        self.epoch = 0
        self.metrics: list[dict] = []
        self._pending_rng: dict | None = None
        self._partial: dict | None = None  # where in an epoch a signal stopped training (saved in the checkpoint)
        self.callbacks: list[Callback] = [
            c for c in (*default_callbacks(), *callbacks) if self.group.is_main or c.every_rank
        ]
        self.stop_requested = False  # a signal came: the epoch's checkpoint is written whatever the interval
        # A ThreadBudget here sizes the CPU thread pool each epoch to the cores other processes leave (or ask for one
        # with RuntimePolicy(thread_budget=True), as ``pyro-vae train`` does).
        self.thread_budget: ThreadBudget | None = None
        self._saved_epoch: int | None = None  # the (whole) epoch whose state OUT/ckpt.pt holds, if written here

    def _check_shardable(self, n_train: int, batch_size: int) -> None:
        world = self.group.world
        if world > 1 and min(n_train, batch_size) < world:
            raise DataError(
                f"{world} processes need a batch of at least {world} images (--batch-size {batch_size}, "
                f"{n_train} training images)"
            )

    @property
    def checkpoint_path(self) -> Path:
        return self.files.checkpoint

    def load_state(self, ckpt: dict) -> None:
        """Continue from a checkpoint's weights, optimiser state, epoch, metrics and RNG states."""
        try:
            self.vae.load_state_dict(ckpt["model_state"])
            optim_state = ckpt["optim_state"]
            if is_pyro_optim_state(optim_state):  # a version-0.1 checkpoint
                optim_state = adam_state_from_pyro(optim_state, self.vae, self.optimizer)
            self.optimizer.load_state_dict(optim_state)
            rng = rng_state()
            set_rng_state(ckpt["rng"])  # (tried here, so that a damaged state fails before training)
            set_rng_state(rng)
            partial = ckpt.get("partial_epoch")
            if partial is not None and not (
                set(partial) == {"epoch", "step", "loss_sum", "seen", "seconds"}
                and partial["epoch"] == ckpt["epoch"] + 1
                and all(isinstance(partial[k], int) and partial[k] > 0 for k in ("step", "seen"))
                and all(isinstance(partial[k], float) for k in ("loss_sum", "seconds"))
            ):
                raise ValueError(f"malformed partial_epoch {str(partial)[:100]}")
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"the checkpoint's training state is unusable: {type(exc).__name__}: {first_line(exc, 200)}"
            ) from None
        self.epoch = ckpt["epoch"]
        self.metrics = list(ckpt["metrics"])
        self._pending_rng = ckpt["rng"]
        self._partial = ckpt.get("partial_epoch")

    def fit(self) -> list[dict]:
        """Train until ``config.epochs`` epochs are done; returns the per-epoch metrics."""
        self.lock.acquire()
        budget = None
        try:
            if self.group.is_main:
                # a killed writer's temporary files
                remove_temporaries(self.out_dir, RunFolder.written)
                self.config.write_toml(self.files.config)  # the run, repeatable with train --config
                write_metrics(self.files.metrics, self.metrics)  # exactly the checkpoint's epochs
            if self.group.parallel:  # (collectives wait until here: building may fail on one rank alone)
                self.group.broadcast_parameters(self.vae)  # one seed built them all alike; a caller's may differ
                self._peers = Peers(self.group)
            if self._pending_rng is not None:
                set_rng_state(self._pending_rng)
            # A scoped param store: nothing leaks in from (or out to) other models in this process.
            if self.data.device.type == "cpu":  # (the caller's own budget, or one the runtime policy asks for)
                budget = self.thread_budget or (ThreadBudget(self.log) if current_policy().thread_budget else None)
            with pyro.get_param_store().scope(), stop_requests() as stop, _no_pyro_nan_warnings():
                for epoch in range(self.epoch + 1, self.config.schedule.epochs + 1):
                    if budget is not None:
                        budget.adjust()
                    with self._peers_answer(epoch):
                        self._fit_epoch(epoch, stop)
                for callback in self.callbacks:
                    callback.on_run_end(self)
        finally:
            if budget is not None:
                budget.restore()
            self.lock.release()
        return self.metrics

    def _fit_epoch(self, epoch: int, stop: StopRequest) -> None:
        """Train one epoch, validate, then the callbacks (log, checkpoint, record, draw, the user's); stop (saved)
        if a signal came."""
        record = self.train_epoch(epoch, stop)
        if record is None:  # a signal stopped training inside the epoch
            self.save()
            raise self._interrupted(stop, f"at epoch {epoch}, step {self._partial['step']}")
        record.update(self.validation())  # (every process: the evaluation is shared out) before callbacks
        self.metrics.append(record)
        self.epoch = epoch
        # (in a job, every process must agree: a signal reaches each one at its own moment)
        self.stop_requested = self.group.any(stop.signum is not None, self.data.device)
        if self.stop_requested and stop.signum is None:  # another process was signalled
            stop.signum = signal.SIGTERM
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)
        if self.stop_requested and epoch < self.config.schedule.epochs:
            raise self._interrupted(stop, f"after epoch {epoch}")

    @contextmanager
    def _peers_answer(self, epoch: int) -> Iterator[None]:
        """A collective that fails (a process died, or stopped answering for the process group's timeout) ends
        this one too, with one line naming the lost process where it can tell and how to go on."""
        try:
            yield
        except CollectiveError as exc:
            saved = self.checkpoint_path
            who = self._peers.lost() if self._peers is not None else "another process of the job"
            raise PeerError(
                f"{who} during epoch {epoch} ({exc}); {saved} holds the last checkpoint: continue "
                f"with pyro-vae train --resume {saved} (any number of processes)"
            ) from None

    def _interrupted(self, stop: StopRequest, where: str) -> RunInterrupted:
        path = self.checkpoint_path
        return RunInterrupted(
            f"stopped by {stop.name} {where}; saved {path}: continue with pyro-vae train --resume {path}", stop.signum
        )

    def train_epoch(self, epoch: int, stop: StopRequest | None = None) -> dict | None:
        """One pass over the training set (what ``pyro-vae train`` times as ``images_per_s``); ``None`` when
        ``stop`` was raised before the last step (the position is kept for :meth:`save` in ``_partial``)."""
        cfg = self.config
        seed = epoch_seed(cfg.seed, epoch)
        batch_size, epochs = cfg.optimizer.batch_size, cfg.schedule.epochs
        partial, self._partial = self._partial, None
        if partial is None or partial["epoch"] != epoch:
            partial = {"step": 0, "loss_sum": 0.0, "seen": 0, "seconds": 0.0}
            pyro.set_rng_seed(seed)  # (a resumed partial epoch continues from the checkpoint's RNG states)
        self.vae.train()
        lr = cfg.schedule.lr_at(epoch, cfg.optimizer.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n_train = self.data.count("train")
        steps_per_epoch = math.ceil(n_train / batch_size)
        total, seen, beta = partial["loss_sum"], partial["seen"], cfg.objective.beta
        start = time.perf_counter() - partial["seconds"]
        disable = None if self.progress is None else not self.progress  # None: only on a terminal
        bar = tqdm(
            total=n_train,
            initial=seen,
            desc=f"epoch {epoch}/{epochs}",
            unit="img",
            leave=False,
            disable=disable,
            mininterval=0.5,
        )
        group = self.group if self.group.parallel else None
        batches = self.data.train_batches(
            batch_size, seed, skip=partial["step"], rows=group and group.rows, with_labels=self.vae.needs_labels
        )
        with frozen_gc(), bar:
            for step, batch in enumerate(batches, start=partial["step"]):
                x = self.vae.observations(*batch) if self.vae.needs_labels else batch
                beta = cfg.objective.kl_weight((epoch - 1) * steps_per_epoch + step, steps_per_epoch)
                size = min(batch_size, n_train - step * batch_size)  # the global batch's (x holds our rows of it)
                shard = None if group is None else (group.rows(size), size)
                asked = stop is not None and stop.signum is not None
                loss = self._step(x, beta, epoch, step, shard, asked)  # the negative objective summed over the batch
                stopping = self._stopping(stop)
                total += loss
                for callback in self.callbacks:
                    callback.on_step_end(self, epoch, step, loss)
                seen += size
                bar.update(size)
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{total / seen:.2f}")
                if stopping and seen < n_train:
                    self._partial = {
                        "epoch": epoch,
                        "step": step + 1,
                        "loss_sum": total,
                        "seen": seen,
                        "seconds": time.perf_counter() - start,
                    }
                    return None
        seconds = time.perf_counter() - start
        self._say_how_it_stepped()
        return {
            "epoch": epoch,
            "train_loss": total / seen,
            "val_elbo": None,
            "beta": beta,
            "lr": lr,
            "seconds": seconds,
            "images_per_s": seen / seconds,
        }

    def _say_how_it_stepped(self) -> None:
        """Once: whether the step was compiled (and in how long), and why the compiled or traced step was not used."""
        svi, world = self.svi, self.group.world
        if not self._said_compile and (svi.compiled or svi.compile_disabled_reason):
            self._said_compile = True
            where = ""  # in a job: how many processes run the graph (counted by the steps' all-reduce)
            if world > 1 and svi.compiled_processes == world:
                where = f" (in each of the {world} processes)"
            elif world > 1 and svi.compiled_processes:
                where = f" (compiled in {svi.compiled_processes} of the {world} processes; the others train without it)"
            self.log(
                f"compiled the training step in {svi.compiled.seconds:.1f} s{where}"
                if svi.compiled
                else f"training without the compiled step: {svi.compile_disabled_reason}{where}"
            )
        if self.svi.jit_disabled_reason and not self._said_no_jit:
            self.log(f"training without the traced step: {self.svi.jit_disabled_reason}")
            self._said_no_jit = True

    def _stopping(self, stop: StopRequest | None) -> bool:
        """Whether to stop after this step: a signal came; in a job, where every process agreed to (the step's
        all-reduce carried each one's request: a signal reaches each process at its own moment)."""
        if stop is None:
            return False
        if not self.group.parallel:
            return stop.signum is not None
        if self.svi.stopping and stop.signum is None:  # another process was signalled
            stop.signum = signal.SIGTERM
        return self.svi.stopping

    def _step(self, x: torch.Tensor, beta: float, epoch: int, step: int, shard: Shard | None, stopping: bool) -> float:
        """One SVI step; a non-finite loss or gradient stops the run before Adam applies it."""
        try:
            job = {} if shard is None else {"shard": shard, "stop": stopping}  # (a job's rows; none for one process)
            return self.svi.step(x, beta, **job)
        except TrainingError as exc:
            bad = [
                name
                for name, p in self.vae.pyro_named_parameters().items()
                if p.grad is not None and not bool(p.grad.isfinite().all())
            ]
            self.optimizer.zero_grad(set_to_none=True)
            where = f", in {', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}," if bad else ""
            kept = f"{self.checkpoint_path} is kept" if self.checkpoint_path.exists() else "no checkpoint was written"
            raise TrainingError(f"{exc}{where} at epoch {epoch}, step {step + 1}; try a lower --lr ({kept})") from None

    def validation_elbo(self) -> float | None:
        return self.validation()["val_elbo"]

    def validation(self) -> dict:
        r"""``val_elbo``, the validation split's ELBO (``None`` without one), and for a classifying structure (M2)
        ``val_accuracy``, its classifier's accuracy there. Then how much of the latent space the model uses, on the
        first :data:`COLLAPSE_IMAGES` validation images (bounded work whatever the split's size; every process
        computes the same): ``val_active_units`` (``val_active_units_per_layer`` for several layers), and where
        defined ``val_kl_per_dim`` and ``val_mutual_information``
        (:func:`~pyro_vae.inference.collapse.collapse_diagnostics`)."""
        val = self.data.images.get("val")
        if val is None or val.shape[0] == 0:
            return {"val_elbo": None}
        labels = self.data.labels.get("val")
        batch = self.vae.bound_batch(val, labels)
        summary = evaluate(
            self.vae,
            batch,
            iw_samples=0,
            seed=self.config.seed,
            latent_means=False,
            group=self.group,
            labels=labels if self.vae.enumerates else None,
        ).summary()
        record = {"val_elbo": summary["elbo"]}
        if "accuracy" in summary:
            record["val_accuracy"] = summary["accuracy"]
        found = collapse_diagnostics(self.vae, batch[:COLLAPSE_IMAGES], seed=self.config.seed)
        return {**record, **{f"val_{key}": value for key, value in found.items()}}

    def write_metrics(self) -> None:
        """``OUT/metrics.jsonl`` from :attr:`metrics`, atomically (rank 0 only)."""
        if not self.group.is_main:
            return
        self._write(self.files.metrics, lambda: write_metrics(self.files.metrics, self.metrics))

    def save(self, path: str | Path | None = None, *, with_metrics: bool = False) -> None:
        """Write the checkpoint (to ``OUT/ckpt.pt`` unless ``path`` is given) atomically; on failure (a full disk)
        the previous one stays as it was. ``with_metrics``: ``OUT/metrics.jsonl`` is committed with it, renamed
        right after it, so the two agree on disk. When ``OUT/ckpt.pt`` already holds this very state
        (``best.pt`` of an epoch just checkpointed), it is linked instead of written again. In a job only rank 0
        writes (every process holds the same state)."""
        if not self.group.is_main:
            return
        path = Path(path) if path is not None else self.checkpoint_path
        if path != self.checkpoint_path and self._saved_epoch == self.epoch and self._partial is None:
            self._write(path, lambda: atomic_copy(self.checkpoint_path, path))
            return
        payload = {
            "config": self.config.to_dict(),
            "model_state": self.vae.state_dict(),
            "optim_state": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "rng": rng_state(),
            "metrics": self.metrics,
            "partial_epoch": self._partial,
        }
        files = {path: lambda tmp: write_checkpoint(tmp, payload)}
        if with_metrics:  # the checkpoint first: the metrics never list an epoch it lacks
            files[self.files.metrics] = lambda tmp: tmp.write_text(metrics_text(self.metrics))
        self._write(path, lambda: _write_together(files))
        if path == self.checkpoint_path:
            self._saved_epoch = None if self._partial is not None else self.epoch

    def _write(self, path: Path, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # e.g. ENOSPC: the atomic write removed its temporary file
            raise TrainingError(
                f"could not write {path} ({exc.strerror or exc}); the file there (if any) is unchanged"
            ) from None
