"""Labels inside a batch: how a model structure with the label in it (:mod:`pyro_vae.model.structures`) receives it.

A batch for such a structure is one tensor ``(n, D + 1)``: an image's ``D`` pixels, then its label as a float
(:data:`UNLABELLED`, -1, where the label is not given). One tensor, because every path that moves batches (a job's
rows, the compiled step, the chunked bounds, validation) then carries each label with its image without knowing of
labels. A float32 holds every integer below 2**24 exactly; :data:`MAX_CLASSES` is far below.
"""

from __future__ import annotations

import torch
from torch import Tensor

UNLABELLED = -1
MAX_CLASSES = 10_000


def pack(x: Tensor, labels: Tensor) -> Tensor:
    """Images ``(n, D)`` and their labels ``(n,)`` (``UNLABELLED`` where not given) as one batch ``(n, D + 1)``."""
    return torch.cat([x, labels.to(x.dtype).unsqueeze(-1)], -1)


def unpack(batch: Tensor) -> tuple[Tensor, Tensor]:
    """``(images, labels)`` of a packed batch: ``(..., D)`` and ``(...,)`` integer labels."""
    return batch[..., :-1], batch[..., -1].round().long()


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``(..., num_classes)`` rows of zeros with a one at each label (an unlabelled row is all zeros). A comparison,
    not ``F.one_hot``, which reads the largest label back from the device (a sync, and no compiled graph)."""
    return (labels.unsqueeze(-1) == torch.arange(num_classes, device=labels.device)).to(dtype)
