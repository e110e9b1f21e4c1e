r"""Image stores: a split's images, held in memory or read from files on demand, always handed out as
``(k, C, H, W)`` tensors of uint8 levels 0..255 (or floats in [0, 1] for float arrays).

Every source ends here, so there is one rule for making images the size a run asks for
(:func:`conform`):

* channels: 1 -> 3 repeats the grey level; 3 -> 1 takes the ITU-R 601-2 luma
  :math:`L = (299 R + 587 G + 114 B) / 1000` (PIL's ``convert("L")``, rounded the same way); a fourth (alpha)
  channel is dropped;
* size ``(H, W)``: the image is scaled (antialiased) so that it covers ``H x W`` keeping its aspect ratio,
  then centre-cropped to exactly ``H x W`` (torchvision's ``Resize`` + ``CenterCrop``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes read as one channel
CHANNEL_COUNTS = (1, 3, 4)  # channel counts an array may have (4: the alpha channel is dropped)


# level / 255 for each level, correctly rounded. On the CPU the division itself is (IEEE); CUDA divides by a Python
# scalar as a multiplication by its float32 reciprocal, which puts 126 of the 256 levels one ulp off, so there the
# levels are looked up: a batch converted on the GPU (a streamed run) equals the same batch converted on the CPU.
_UNIT_LEVELS = torch.arange(256, dtype=torch.float64).div(255).float()


def to_unit(x: Tensor) -> Tensor:
    """Levels 0..255 as floats in [0, 1], ``level / 255`` correctly rounded on every device (float images are
    already there)."""
    if x.dtype != torch.uint8:
        return x.float()
    if x.device.type == "cpu":
        return x.float() / 255.0
    return _unit_levels(x.device)[x.int()]


@functools.cache
def _unit_levels(device: torch.device) -> Tensor:
    return _UNIT_LEVELS.to(device)  # (copied to a device once, not with every streamed batch)


def conformed_shape(
    shape: tuple[int, int, int], channels: int | None, size: tuple[int, int] | None
) -> tuple[int, int, int]:
    """The ``(C, H, W)`` images of ``shape`` have after :func:`conform`."""
    c = channels or (3 if shape[0] == 4 else shape[0])
    return (c, *(size or shape[1:]))


def conform(x: Tensor, channels: int | None, size: tuple[int, int] | None) -> Tensor:
    """``x`` ``(k, C, H, W)`` with ``channels`` channels (``None``: as they are, alpha dropped) and ``size``
    ``(H, W)`` (``None``: as it is), by the rules in the module docstring."""
    if x.shape[1] == 4:
        x = x[:, :3]
    if channels == 1 and x.shape[1] == 3:
        x = _luma(x)
    elif channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = _cover_and_crop(x, size)
    return x.contiguous()


def _luma(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:  # PIL's fixed-point formula, so a folder and an array give the same levels
        r, g, b = (x[:, i : i + 1].to(torch.int32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _cover_and_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    from torchvision.transforms.v2 import functional as TF  # slow to import; only resizing needs it

    h, w = x.shape[-2:]
    scale = max(size[0] / h, size[1] / w)
    covering = [max(size[0], round(h * scale)), max(size[1], round(w * scale))]
    resized = TF.resize(x, covering, antialias=True)
    if x.dtype != torch.uint8:
        resized = resized.clamp(0, 1)
    return TF.center_crop(resized, list(size))


# -- arrays ------------------------------------------------------------------------------------------------------


def array_layout(shape: tuple[int, ...], source: str) -> tuple[str, str | None]:
    """How an image array of ``shape`` is laid out: ``"NHW"``, ``"NHWC"`` or ``"NCHW"``, and a note when the
    shape allows two readings (then the channels-last one is taken, NumPy's and PIL's convention)."""
    if len(shape) == 3:
        return "NHW", None
    if len(shape) == 4:
        last, first = shape[3] in CHANNEL_COUNTS, shape[1] in CHANNEL_COUNTS
        if last and first:
            return (
                "NHWC",
                f"{source}: read images shaped {shape} as (N, H, W, C); transpose the array if its channels come first",
            )
        if last:
            return "NHWC", None
        if first:
            return "NCHW", None
    raise DataError(
        f"{source}: images must be shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4; got {shape}"
    )


def as_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    """A view of ``array`` as ``(N, C, H, W)``."""
    if layout == "NHW":
        return array[:, None]
    if layout == "NHWC":
        return array.transpose(0, 3, 1, 2)
    return array


def check_pixels(array: np.ndarray, source: str) -> None:
    """Images are uint8 levels or floats in [0, 1]; anything else is a :class:`DataError` naming ``source``."""
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{source}: images must be uint8 (0..255) or floats in [0, 1], got dtype {array.dtype}")
    for start in range(0, array.shape[0], 4096):  # in pieces: the array may be memory-mapped
        piece = np.asarray(array[start : start + 4096])
        if not np.isfinite(piece).all() or piece.min(initial=0.0) < 0 or piece.max(initial=0.0) > 1:
            raise DataError(
                f"{source}: float images must lie in [0, 1] (scale them, or store uint8 0..255); "
                f"found values in [{np.nanmin(piece):g}, {np.nanmax(piece):g}]"
            )


class ArrayStore:
    """Images in an ``(N, C, H, W)`` array (in memory or memory-mapped), conformed batch by batch."""

    lazy = False

    def __init__(self, array: np.ndarray, channels: int | None = None, size: tuple[int, int] | None = None):
        self.array, self.channels, self.size = array, channels, size
        self.lazy = isinstance(array, np.memmap) or isinstance(getattr(array, "base", None), np.memmap)

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return conformed_shape(tuple(self.array.shape[1:]), self.channels, self.size)

    def get(self, index: np.ndarray) -> Tensor:
        piece = np.ascontiguousarray(self.array[np.asarray(index)])
        if piece.dtype != np.uint8:
            piece = piece.astype(np.float32)
        return conform(torch.from_numpy(piece), self.channels, self.size)

    def subset(self, part: slice) -> ArrayStore:
        return ArrayStore(self.array[part], self.channels, self.size)


# -- files ---------------------------------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted path order (dotfiles skipped); any other file is a
    :class:`DataError` naming it."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p, folder)):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"{path} is not an image ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}); move it out of {folder}"
            )
        files.append(path)
    return files


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_image(path: Path, channels: int | None) -> Tensor:
    """One image file as ``(C, H, W)`` uint8 (``channels`` ``None``: 1 for grey files, else 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = "L" if (channels or (1 if img.mode in GREY_MODES else 3)) == 1 else "RGB"
            array = np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


def file_shape(path: Path, channels: int | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image file from its header (not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return (channels or (1 if img.mode in GREY_MODES else 3), img.height, img.width)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc})") from None


class FileStore:
    """Images in files, decoded when asked for (by the training loop's workers when streamed). Without a
    ``size`` every file must have the first file's size; a file that does not is a :class:`DataError` naming
    both."""

    lazy = True

    def __init__(self, paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None):
        if not paths:
            raise DataError("no images")
        self.paths, self.size = list(paths), size
        self.channels = channels or file_shape(self.paths[0], None)[0]
        self.shape = conformed_shape(file_shape(self.paths[0], self.channels), None, size)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: np.ndarray) -> Tensor:
        images = [self._read(int(i)) for i in np.asarray(index).reshape(-1)]
        return torch.stack(images) if images else torch.zeros((0, *self.shape), dtype=torch.uint8)

    def _read(self, i: int) -> Tensor:
        image = conform(read_image(self.paths[i], self.channels)[None], None, self.size)[0]
        if self.size is None and tuple(image.shape[1:]) != self.shape[1:]:
            h, w = self.shape[1:]
            raise DataError(
                f"images of different sizes: {self.paths[0]} is {h}x{w} but {self.paths[i]} is "
                f"{image.shape[1]}x{image.shape[2]}; pass --image-size N (or H,W) to resize them all"
            )
        return image

    def subset(self, part: slice) -> FileStore:
        store = FileStore.__new__(FileStore)
        store.paths, store.channels, store.size, store.shape = self.paths[part], self.channels, self.size, self.shape
        return store


def materialise(store: ArrayStore | FileStore, chunk: int = 4096) -> Tensor:
    """Every image of ``store`` as one ``(N, C, H, W)`` tensor."""
    n = len(store)
    if n == 0:
        return torch.zeros((0, *store.shape), dtype=torch.uint8)
    return torch.cat([store.get(np.arange(s, min(n, s + chunk))) for s in range(0, n, chunk)])


def image_bytes(store: ArrayStore | FileStore) -> int:
    """Bytes the store's images take as float32 (how the training set is held in memory)."""
    return 4 * len(store) * math.prod(store.shape)
