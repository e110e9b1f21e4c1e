r"""Per-image values summarised the one way every report does: the mean over the images and its standard error,
:math:`s / \sqrt n` (NaN for a single image, which has no spread to estimate)."""

from __future__ import annotations

import math

from torch import Tensor


def mean_stderr(values: Tensor) -> tuple[float, float]:
    """The mean of per-image ``values`` and its standard error, in float64."""
    values = values.double()
    stderr = values.std().item() / math.sqrt(values.numel()) if values.numel() > 1 else float("nan")
    return values.mean().item(), stderr
