r"""The optimiser and the schedule of a run: Adam's settings and batch size; how many epochs, the
learning-rate schedule, how often checkpoints and pictures are written, and when to warn of posterior collapse.

``lr_schedule="iwae"`` is Burda et al. (2016)'s: stage :math:`i = 0..7` lasts :math:`3^i` epochs at
learning rate :math:`\mathrm{lr} \cdot 10^{-i/7}` (3280 epochs in all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from ..options import Option, check_fields

LR_SCHEDULES = ("constant", "iwae")
IWAE_STAGES = 8  # Burda et al. 2016: stages i = 0..7 of 3**i epochs each


@dataclass
class OptimizerConfig:
    """Adam, on minibatches."""

    KEY: ClassVar[str] = "optimizer"
    lr: Annotated[float, Option("learning rate", min=0, min_open=True)] = 1e-3
    adam_eps: Annotated[float, Option("Adam's epsilon (the IWAE paper used 1e-4)", min=0, min_open=True)] = 1e-8
    batch_size: Annotated[int, Option("images per step", min=1)] = 128

    def validate(self) -> None:
        check_fields(self)


@dataclass
class ScheduleConfig:
    """How long, at what learning rate, and what is written when."""

    KEY: ClassVar[str] = "schedule"
    epochs: Annotated[int, Option("total epochs (also on --resume)", min=1, resumable=True)] = 10
    lr_schedule: Annotated[
        Literal[LR_SCHEDULES],
        Option("iwae: Burda et al. 2016's, stage i=0..7 lasts 3^i epochs at lr*10^(-i/7) (3280 epochs)"),
    ] = "constant"
    checkpoint_every: Annotated[int, Option("epochs between checkpoints", min=1)] = 1
    plot_every: Annotated[
        int,
        Option("write reconstruction and sample grids to OUT/plots every N epochs (0: never)", min=0, resumable=True),
    ] = 0
    collapse_warning: Annotated[
        float,
        Option(
            "warn once when, after the KL warm-up, fewer than this share of the latent units are active on the "
            "validation images (0: never)",
            min=0,
            max=1,
            resumable=True,
        ),
    ] = 0.1

    def validate(self) -> None:
        check_fields(self)

    def lr_at(self, epoch: int, lr: float) -> float:
        """The learning rate during (1-based) ``epoch``, from the base rate ``lr``."""
        if self.lr_schedule == "constant":
            return lr
        stage, last_epoch = 0, 1
        while epoch > last_epoch and stage < IWAE_STAGES - 1:
            stage += 1
            last_epoch += 3**stage
        return lr * 10 ** (-stage / 7)
