"""MNIST and Fashion-MNIST held in memory on the training device, with three binarizations.

* ``none``: grey levels in [0, 1] (use a continuous likelihood).
* ``static``: pixels thresholded at 0.5, once.
* ``dynamic``: every time a training image is used it is replaced by a fresh Bernoulli sample with
  the grey level as probability (Salakhutdinov & Murray 2008); the validation and test images get
  one fixed sample each (seed ``FIXED_BINARIZATION_SEED``), so bounds are comparable across runs.

The validation split is the *last* ``val_size`` images of the training set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..options import Option, check_fields
from ..model.networks import IMAGE_SHAPE

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
BINARIZATIONS = ("none", "dynamic", "static")
SPLITS = ("train", "val", "test")
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],  # fmt: skip
}
FIXED_BINARIZATION_SEED = 1234


@dataclass
class DataConfig:
    """Which images, from where, binarized how, split how."""

    KEY: ClassVar[str] = "data"
    dataset: Annotated[Literal[tuple(DATASETS)], Option("which images")] = "mnist"
    binarize: Annotated[Literal[BINARIZATIONS], Option(
        "none: grey levels; static: threshold 0.5; dynamic: a fresh Bernoulli sample per use")] = "dynamic"
    val_size: Annotated[int, Option("validation images carved from the end of the training set", min=0)] = 5000
    train_limit: Annotated[int | None, Option("use only the first N training images", min=1)] = None
    root: Annotated[str | None, Option(
        "torchvision root holding the dataset [default: $PYRO_VAE_DATA or ~/.cache/pyro-vae/data, downloaded there "
        "if missing]", flag="--data-dir", resumable=True)] = None  # fmt: skip

    def validate(self) -> None:
        check_fields(self)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return IMAGE_SHAPE

    @property
    def data_dim(self) -> int:
        """Pixels per image (the models' ``data_dim``)."""
        return math.prod(self.image_shape)

    def describe(self) -> str:
        how = {"none": "grey levels in [0,1]", "static": "static binarization (threshold 0.5)",
               "dynamic": "dynamic binarization (test/val: one fixed Bernoulli sample)"}[self.binarize]  # fmt: skip
        return f"{self.dataset}, {how}"


def default_data_dir() -> Path:
    """``$PYRO_VAE_DATA`` if set, else ``~/.cache/pyro-vae/data`` (where torchvision downloads to)."""
    return Path(os.environ.get("PYRO_VAE_DATA") or Path.home() / ".cache" / "pyro-vae" / "data")


def check_idx_file(path: Path) -> None:
    """Raise :class:`DataError` naming ``path`` unless it is a whole idx file of unsigned bytes: the magic
    number ``00 00 08 ndim``, ``ndim`` big-endian sizes, then exactly their product in bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4)
        ndim = header[3] if len(header) == 4 and header[:3] == b"\x00\x00\x08" else 0
        dims = f.read(4 * ndim)
    if not 1 <= ndim <= 4 or len(dims) != 4 * ndim:
        raise DataError(f"{path} is corrupt: not an idx file of bytes (delete it to download it again)")
    expected = 4 + 4 * ndim + math.prod(int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    if size != expected:
        raise DataError(
            f"{path} is corrupt: {size} bytes where its header promises {expected} (truncated or damaged; "
            "delete it to download it again)"
        )


def _recorded_root(config: DataConfig) -> Path:
    """``config.root`` while it still holds the dataset (a checkpoint or config file from another machine
    may name a folder that is not here), else the default folder."""
    if config.root is not None and (Path(config.root) / DATASETS[config.dataset]).is_dir():
        return Path(config.root)
    return default_data_dir()


def _check_raw_files(dataset: str, root: Path, train: bool) -> None:
    """The idx files torchvision will read for this split, if present, are whole (torchvision itself
    reports a truncated file as a missing dataset)."""
    prefix = "train" if train else "t10k"
    for kind in ("images-idx3", "labels-idx1"):
        path = root / DATASETS[dataset] / "raw" / f"{prefix}-{kind}-ubyte"
        if path.is_file():
            check_idx_file(path)


def _read_split(dataset: str, root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """Raw uint8 images ``(N, 28, 28)`` and labels, via torchvision."""
    import torchvision  # imported here: it is slow to import and only data loading needs it

    _check_raw_files(dataset, root, train)
    cls = getattr(torchvision.datasets, DATASETS[dataset])
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True ..."
        hint = "" if download else " (omit --data-dir to download it, or point --data-dir at a torchvision root)"
        raise DataError(f"no {DATASETS[dataset]} dataset under {root}{hint}") from None
    except OSError as exc:  # a failed download or unreadable file
        raise DataError(f"could not read or download {DATASETS[dataset]} into {root}: {exc}") from None
    if ds.data.shape[0] != ds.targets.shape[0] or tuple(ds.data.shape[1:]) != IMAGE_SHAPE[1:]:
        raise DataError(
            f"{DATASETS[dataset]} under {root} is inconsistent: {tuple(ds.data.shape)} images but "
            f"{ds.targets.shape[0]} labels in the {'train' if train else 't10k'} split "
            f"(expected images of {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]})"
        )
    return ds.data, ds.targets


def _binarize_fixed(x: Tensor, mode: str, seed: int) -> Tensor:
    if mode == "static":
        return (x > 0.5).float()
    if mode == "dynamic":
        return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    return x


class VAEData:
    """Flattened float images on ``device``, by split, with their labels."""

    def __init__(
        self,
        config: DataConfig,
        root: str | Path | None = None,  # overrides config.root
        device: torch.device | str = "cpu",
        splits: tuple[str, ...] = SPLITS,
        download: bool | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device)
        root = Path(root) if root is not None else _recorded_root(config)
        if download is None:
            download = root == default_data_dir()
        self.root = root.resolve()  # recorded in checkpoints: a resumed run finds its data again
        self.images: dict[str, Tensor] = {}
        self.labels: dict[str, Tensor] = {}
        if {"train", "val"} & set(splits):
            data, labels = _read_split(config.dataset, root, train=True, download=download)
            n_train = data.shape[0] - config.val_size
            if n_train < 1:
                raise ConfigError(f"val_size={config.val_size} leaves no training images")
            parts = {"train": slice(0, n_train), "val": slice(n_train, None)}
            if config.train_limit is not None:
                parts["train"] = slice(0, min(n_train, config.train_limit))
            for split in ("train", "val"):
                if split in splits:
                    self._put(split, data[parts[split]], labels[parts[split]])
        if "test" in splits:
            self._put("test", *_read_split(config.dataset, root, train=False, download=download))

    def _put(self, split: str, data: Tensor, labels: Tensor) -> None:
        x = data.flatten(1).float() / 255.0
        if split != "train" or self.config.binarize == "static":
            x = _binarize_fixed(x, self.config.binarize, FIXED_BINARIZATION_SEED + SPLITS.index(split))
        # Moved once: batches are then index operations on the device.
        self.images[split] = x.to(self.device)
        self.labels[split] = labels.to(self.device)

    def observed(self, split: str) -> Tensor:
        """Images of ``split`` as the model sees them at evaluation (binarized where the mode says)."""
        if split == "train" and self.config.binarize == "dynamic":
            return _binarize_fixed(self.images["train"].cpu(), "dynamic", FIXED_BINARIZATION_SEED).to(self.device)
        return self.images[split]

    def train_batches(self, batch_size: int, seed: int, skip: int = 0) -> Iterator[Tensor]:
        """Shuffled training batches for one epoch, reproducible from ``seed`` (one per epoch), from batch
        ``skip`` on (the same batches the full epoch would give there: a run stopped mid-epoch resumes).

        Under dynamic binarization each batch is a fresh Bernoulli sample of its images.
        """
        x = self.images["train"]
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(x.shape[0], generator=gen).to(self.device)
        bin_gen = None
        if self.config.binarize == "dynamic":
            bin_gen = torch.Generator(device=self.device).manual_seed(seed)
        for i, start in enumerate(range(0, x.shape[0], batch_size)):
            batch = x[order[start : start + batch_size]]
            if bin_gen is not None:
                batch = torch.bernoulli(batch, generator=bin_gen)  # drawn for skipped batches too, for the stream
            if i >= skip:
                yield batch
