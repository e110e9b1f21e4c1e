"""Pictures as PNG bytes for the explorer's endpoints.

Contract: :func:`png_strip` takes pictures ``(n, C, H, W)``, floats in [0, 1] or 8-bit, one or three channels, and
returns one PNG of them side by side with no gap (tile ``i`` is columns ``i*W .. (i+1)*W - 1``), each float pixel
rounded to the nearest of the 256 levels (``round(255 x)``, as torchvision's ``save_image``). Encoded in memory by
Pillow (already there: torchvision and matplotlib need it; torchvision's own PNG encoder is deprecated), with light
compression (level 1: these pictures are small, and a slider wants them fast); nothing touches the disk.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torch import Tensor

COMPRESSION = 1


def to_bytes(pictures: Tensor) -> Tensor:
    """Pictures as 8-bit levels on the CPU (floats in [0, 1] are rounded to the nearest level)."""
    if pictures.dtype == torch.uint8:
        return pictures.cpu()
    return pictures.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def png_strip(pictures: Tensor) -> bytes:
    """``(n, C, H, W)`` pictures in a row, as the bytes of one PNG of ``n*W`` by ``H`` pixels (grey or RGB)."""
    if pictures.dim() != 4 or pictures.shape[1] not in (1, 3) or pictures.shape[0] < 1:
        raise ValueError(f"pictures must be (n >= 1, C in 1 or 3, H, W), got {tuple(pictures.shape)}")
    levels = to_bytes(pictures)
    row = levels.permute(2, 0, 3, 1).reshape(levels.shape[2], -1, levels.shape[1])  # (H, n*W, C)
    array = row.squeeze(-1).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=COMPRESSION)
    return buffer.getvalue()
