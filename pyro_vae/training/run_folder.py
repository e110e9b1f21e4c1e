"""A run's folder and the files in it, each named here once::

    OUT/ckpt.pt         the latest checkpoint: every checkpoint_every epochs, at the end, and when a signal came
    OUT/best.pt         the checkpoint of the epoch with the best validation ELBO
    OUT/metrics.jsonl   one JSON line per epoch, exactly the epochs ckpt.pt holds
    OUT/config.toml     the run: ``pyro-vae train --config OUT/config.toml`` repeats it
    OUT/plots/          picture snapshots every plot_every epochs
    OUT/tensorboard/    TensorBoard's event files (``--tensorboard``)
    OUT/.lock           held while a process builds or trains the run (:mod:`pyro_vae.training.run_lock`)

The first four are written atomically (a temporary file renamed over the target); :attr:`RunFolder.written`
lists them, so that a killed writer's temporary files can be found and removed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run's files under ``root``."""

    CHECKPOINT: ClassVar[str] = "ckpt.pt"
    BEST: ClassVar[str] = "best.pt"
    METRICS: ClassVar[str] = "metrics.jsonl"
    CONFIG: ClassVar[str] = "config.toml"
    PLOTS: ClassVar[str] = "plots"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    LOCK: ClassVar[str] = ".lock"
    written: ClassVar[tuple[str, ...]] = (CHECKPOINT, BEST, METRICS, CONFIG)

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def checkpoint(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def best(self) -> Path:
        return self.root / self.BEST

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def plots(self) -> Path:
        return self.root / self.PLOTS

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK


def deprecated_names(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the file-name constants that :class:`RunFolder` replaced (``names``: old name ->
    its attribute), each still there until 0.4 with a ``FutureWarning``."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated and goes away in pyro-vae 0.4: use "
            f"pyro_vae.training.run_folder.RunFolder.{names[name]}",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(RunFolder, names[name])

    return __getattr__
