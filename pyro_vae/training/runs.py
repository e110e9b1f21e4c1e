"""Where a :class:`~pyro_vae.training.trainer.Trainer` comes from: a new run (:func:`start_run`) or a stored one
continued from its checkpoint (:func:`resume_run`).

Both assemble the same parts in one order (:func:`_assemble`): the config is complete and valid; the device is
resolved; the model is checked to fit on it (before anything is allocated); the run folder is locked (before
anything is written); the data is read; the model is built; the Trainer adopts the lock. A new run's model is
built from its seed; a resumed run's gets the checkpoint's weights and optimiser state afterwards.

In a job of several processes each process takes its own GPU for ``device`` (``cuda:LOCAL_RANK``), rank 0 alone
touches the run folder, and an input error on any process stops all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import RunConfig, settings
from ..data.vae_data import VAEData, keep_labels
from ..errors import ConfigError, DataError
from ..model.structures import structure_class
from ..runtime.devices import resolve_device
from ..runtime.distributed import current, device_name
from ..runtime.limits import check_vae_fits
from .callbacks import Callback
from .checkpoint import load_checkpoint
from .run_folder import RunFolder
from .run_lock import locked
from .trainer import Trainer


def start_run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    trust_modules: Iterable[str] = (),
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """A :class:`Trainer` for a new run of ``config`` in ``out_dir`` (which must not hold a checkpoint unless
    ``overwrite``); call ``.fit()`` on it. Everything is checked before any data is read. ``trust_modules``:
    modules besides ``pyro_vae`` whose components the config may name; ``callbacks`` run after the built-in ones
    (TensorBoard, your own)."""
    with current().together():  # an input error on any process stops every one
        config = config.resolved(trust_modules)  # (trust is decided here; the caller's config is not changed)
        return _assemble(config, Path(out_dir), device, config.data.root, None, overwrite, progress, log, callbacks)


def resume_run(
    checkpoint: str | Path,
    *,
    epochs: int | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool | None = None,
    plot_every: int | None = None,
    changes: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    trust_modules: Iterable[str] = (),
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """A :class:`Trainer` that continues the run stored in ``checkpoint`` (to ``epochs`` in total;
    ``plot_every``, when given, replaces the stored picture interval; ``data_dir`` replaces the recorded data
    folder; ``changes``: other settings a resumed run may change, by dotted key, e.g. ``{"data.stream": True}``;
    ``trust_modules``: modules besides ``pyro_vae`` whose components the checkpoint may rebuild, see
    :mod:`pyro_vae.model.rebuild`)."""
    group = current()
    with group.together():  # an input error on any process stops every one
        if Path(checkpoint).is_dir():
            raise ConfigError(f"{checkpoint} is an exported model (weights only); resume from the run's ckpt.pt")
        ckpt = group.from_main(lambda: load_checkpoint(checkpoint))
        config = RunConfig.from_checkpoint(ckpt, trust_modules)  # (trust is decided here)
        given = (("schedule.epochs", epochs), ("schedule.plot_every", plot_every))
        changes = {**(changes or {}), **{key: value for key, value in given if value is not None}}
        resumable = {s.key for s in settings() if s.option.resumable}
        fixed = sorted(set(changes) - resumable)
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} cannot change on --resume (the checkpoint fixes them)")
        if changes:
            config = config.updated(changes, trust_modules)
        if config.schedule.epochs < ckpt["epoch"]:
            raise ConfigError(f"checkpoint has {ckpt['epoch']} epochs done; --epochs {config.schedule.epochs} is fewer")
        folder = Path(out_dir or Path(checkpoint).parent)
        return _assemble(config, folder, device, data_dir, ckpt, True, progress, log, callbacks)


def _assemble(
    config: RunConfig,
    folder: Path,
    device: str,
    data_dir: str | Path | None,
    ckpt: dict | None,
    overwrite: bool,
    progress: bool | None,
    log: Callable[[str], None] | None,
    callbacks: Sequence[Callback],
) -> Trainer:
    """Device, size check, lock, data, model, Trainer for ``config`` (resolved: its components' classes found,
    trust decided): the one order for a new run (``ckpt`` None: the model built from the seed) and a resumed one
    (the checkpoint's state loaded into it)."""
    group = current()
    dev = resolve_device(device_name(device, group))
    classes_from_data = structure_class(config.model.structure).needs_labels and not config.model.class_names
    if not classes_from_data:  # (else the model's size depends on the classes the data has: checked below)
        check_vae_fits(lambda: config.untrained_model(), dev, training=True)
    with locked(folder) as lock:  # before anything is written (Trainer.fit replaces metrics.jsonl)
        if ckpt is None and group.is_main and RunFolder(folder).checkpoint.exists() and not overwrite:
            raise ConfigError(
                f"{folder} already holds a run ({RunFolder.CHECKPOINT}); continue it with --resume "
                f"{RunFolder(folder).checkpoint}, choose another --out, or pass --overwrite"
            )
        data = VAEData(config.data, data_dir, dev, splits=("train", "val"))
        if classes_from_data:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, class_names=class_names(data)))
            check_vae_fits(lambda: config.untrained_model(), dev, training=True)
        config = _hide_labels(config, data)
        vae = config.build_model() if ckpt is None else config.untrained_model()
        trainer = Trainer(vae.to(dev), data, config, folder, progress=progress, log=log, lock=lock, callbacks=callbacks)
        if ckpt is not None:
            trainer.load_state(ckpt)
        return trainer


def class_names(data: VAEData) -> tuple[str, ...]:
    """The names of the classes of ``data``'s labels: the source's (a torchvision set's, a folder's class folders), else
    the numbers 0..max label; :class:`DataError` when its training images have no labels."""
    if data.labels.get("train") is None:
        raise DataError(
            f"this structure needs labelled images and the {data.config.dataset} training images have none (labels "
            "come from a torchvision set, class folders train/NAME/, or a train_labels array)"
        )
    if data.class_names:
        return tuple(data.class_names)
    labels = [y for y in (data.labels.get("train"), data.labels.get("val")) if y is not None and len(y)]
    return tuple(str(i) for i in range(max(int(y.max()) for y in labels) + 1))


def _hide_labels(config: RunConfig, data: VAEData) -> RunConfig:
    """``--labelled N``: all but N training labels hidden, from the seed (a resumed run hides the same ones); and the
    semi-supervised structure's default classifier weight, the paper's 0.1 x images / labelled images, recorded."""
    labels = data.labels.get("train")
    if config.data.labelled is not None and labels is not None:
        classes = len(config.model.class_names or ())
        data.labels["train"] = labels = keep_labels(labels, config.data.labelled, config.seed, classes)
    if config.model.structure != "semi-supervised" or config.model.classifier_weight is not None or labels is None:
        return config
    weight = 0.1 * data.count("train") / max(1, int((labels >= 0).sum()))
    return dataclasses.replace(config, model=dataclasses.replace(config.model, classifier_weight=weight))
