"""A run's images, by split, as the model sees them: :class:`DataConfig` says which, :class:`VAEData` holds them.

Images come from a source (:mod:`pyro_vae.data.sources`: torchvision's sets, a folder, an array), are made one
``(C, H, W)`` (:mod:`pyro_vae.data.images`), and are binarized one of three ways:

* ``none``: grey levels in [0, 1] (use a continuous or discretized likelihood);
* ``static``: pixels thresholded at 0.5, once;
* ``dynamic``: every time a training image is used it is replaced by a fresh Bernoulli sample with
  the grey level as probability (Salakhutdinov & Murray 2008); the validation and test images get
  one fixed sample each (seed ``FIXED_BINARIZATION_SEED``), so bounds are comparable across runs.

Splits: a source's own ``val``/``test`` splits are used when it has them; otherwise they are carved from the
end of its training images, ``[train | val | test]``, with ``val_size`` (by default a tenth of them, at most
5,000) and ``test_size`` (by default as many as ``val_size``) images. The training
images are held on the device, or with ``stream`` read from disk batch by batch by ``workers`` processes (the
same batches, so the same run); a lazy source too large for memory streams anyway.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..options import Option, check_fields
from ..runtime.limits import available_bytes, check_fits, human_bytes
from .images import image_bytes, materialise, to_unit
from .sources import DATASETS, USER_SOURCES, Source, Store, holds, probe_shape, read_source

BINARIZATIONS = ("none", "dynamic", "static")
SPLITS = ("train", "val", "test")
FIXED_BINARIZATION_SEED = 1234
MAX_IMAGE_SIDE = 4096

VAL_SIZE_MAX = 5000


@dataclass
class DataConfig:
    """Which images, from where, made which size, binarized how, split how."""

    KEY: ClassVar[str] = "data"
    dataset: Annotated[
        Literal[DATASETS],
        Option(
            "which images: a torchvision set, a folder of images (--data-dir DIR with train/, optionally val/ and "
            "test/) or an array (--data-dir FILE.npz or FILE.npy)"
        ),
    ] = "mnist"
    binarize: Annotated[
        Literal[BINARIZATIONS],
        Option("none: grey levels; static: threshold 0.5; dynamic: a fresh Bernoulli sample per use"),
    ] = "dynamic"
    val_size: Annotated[
        int | None,
        Option(
            "validation images carved from the end of the training set when the source has no val split [default: a "
            f"tenth of the training images, at most {VAL_SIZE_MAX}]",
            min=0,
        ),
    ] = None
    test_size: Annotated[
        int | None,
        Option(
            "test images carved from the end of the training set when the source has no test split [default: val_size]",
            min=0,
        ),
    ] = None
    train_limit: Annotated[int | None, Option("use only the first N training images", min=1)] = None
    root: Annotated[
        str | None,
        Option(
            "where the data is: a torchvision root [default: $PYRO_VAE_DATA or ~/.cache/pyro-vae/data, downloaded "
            "there if missing], the image folder, or the array file",
            flag="--data-dir",
            resumable=True,
        ),
    ] = None
    channels: Annotated[int | None, Option("convert the images to 1 (grey) or 3 (colour) channels", min=1, max=3)] = (
        None
    )
    image_size: Annotated[
        tuple[int, ...] | None,
        Option(
            "resize to N x N (or H,W): scaled to cover, then centre-cropped", min=1, max=MAX_IMAGE_SIDE, max_items=2
        ),
    ] = None
    stream: Annotated[
        bool,
        Option(
            "read the training images from disk batch by batch instead of holding them in "
            "memory (automatic when they would not fit)",
            resumable=True,
        ),
    ] = False
    workers: Annotated[
        int | None,
        Option("processes decoding streamed images [default: min(4, CPUs - 1)]", min=0, max=64, resumable=True),
    ] = None
    shape: tuple[int, ...] | None = (
        None  # (C, H, W), recorded from the data: a checkpoint rebuilds its model without it
    )
    labelled: Annotated[
        int | None,
        Option(
            "--structure semi-supervised: keep the labels of N training images, the same number in each class, "
            "chosen from the seed; the rest are unlabelled [default: every label]",
            min=1,
        ),
    ] = None  # (last: DataConfig(dataset, binarize, ...) as before)

    def validate(self) -> None:
        check_fields(self)
        if self.channels == 2:
            raise ConfigError("data.channels (--channels) must be 1 or 3, got 2")
        if self.dataset in USER_SOURCES and self.root is None:
            raise ConfigError(
                f"--dataset {self.dataset} needs --data-dir (the "
                f"{'folder with train/' if self.dataset == 'folder' else '.npz or .npy file'})"
            )
        if self.shape is not None:
            shape = tuple(self.shape) if isinstance(self.shape, (list, tuple)) else ()
            if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
                raise ConfigError(f"data.shape must be three positive integers (C, H, W), got {self.shape!r}")

    @property
    def size(self) -> tuple[int, int] | None:
        """``image_size`` as ``(H, W)``."""
        if self.image_size is None:
            return None
        return (self.image_size[0], self.image_size[-1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image: recorded, else known for a torchvision set, else read from the source
        (the first image's header, or the array's) and recorded."""
        if self.shape is not None:
            return tuple(self.shape)
        shape = probe_shape(self.dataset, Path(self.root or "."), self.channels, self.size)
        if self.dataset in USER_SOURCES:
            self.shape = shape  # (a torchvision set's shape is known without recording it)
        return shape

    @property
    def data_dim(self) -> int:
        """Pixels per image, C x H x W (the models' ``data_dim``)."""
        return math.prod(self.image_shape)

    def describe(self) -> str:
        how = {
            "none": "grey levels in [0,1]",
            "static": "static binarization (threshold 0.5)",
            "dynamic": "dynamic binarization (test/val: one fixed Bernoulli sample)",
        }[self.binarize]
        shape = "x".join(map(str, self.image_shape))
        return f"{self.dataset} ({shape}), {how}"


def default_data_dir() -> Path:
    """``$PYRO_VAE_DATA`` if set, else ``~/.cache/pyro-vae/data`` (where torchvision downloads to)."""
    return Path(os.environ.get("PYRO_VAE_DATA") or Path.home() / ".cache" / "pyro-vae" / "data")


def _recorded_root(config: DataConfig) -> Path:
    """``config.root`` while it still holds the dataset (a checkpoint or config file from another machine
    may name a folder that is not here), else the default folder (the user's own data has no default)."""
    if config.root is not None and (config.dataset in USER_SOURCES or holds(config.dataset, Path(config.root))):
        return Path(config.root)
    return default_data_dir()


def _binarize_fixed(x: Tensor, mode: str, seed: int) -> Tensor:
    if mode == "static":
        return (x > 0.5).float()
    if mode == "dynamic":
        return bernoulli(x, torch.Generator().manual_seed(seed))
    return x


def bernoulli(p: Tensor, generator: torch.Generator) -> Tensor:
    """``torch.bernoulli(p, generator=generator)``, twice as fast on CPU (0.8 against 1.6 ms for a batch of 128
    MNIST images): torch's CPU kernel draws one float32 uniform per element, in order, and compares it with
    ``p``, which is what ``torch.rand(...) < p`` does, vectorised; a test checks that the two agree bit for bit.
    Other devices and dtypes use ``torch.bernoulli``."""
    if p.device.type != "cpu" or p.dtype != torch.float32:
        return torch.bernoulli(p, generator=generator)
    return torch.rand(p.shape, generator=generator).lt_(p)  # (in place: 1.0 where u < p, else 0.0)


def _bernoulli_rows(p: Tensor, rows: slice, total: int, generator: torch.Generator) -> Tensor:
    """Bernoulli draws of rows ``rows`` of a batch of ``total``, equal to those rows of the whole batch's draws: one
    uniform per element in order whatever its probability, so the other rows can be zeros."""
    if rows.start == 0 and rows.stop == total:
        return bernoulli(p, generator)
    whole = p.new_zeros(total, *p.shape[1:])
    whole[rows] = p
    return bernoulli(whole, generator)[rows]


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class VAEData:
    """Flattened float images ``(N, C*H*W)`` on ``device``, by split, with their labels (``None`` when the source
    has none) and class names."""

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
        source = read_source(config.dataset, root, download, config.channels, config.size)
        self.class_names, self.notes = source.class_names, source.notes
        stores = _split(source, config, splits)
        self._check_shape(stores)
        self.images: dict[str, Tensor] = {}
        self.labels: dict[str, Tensor | None] = {}
        self.sizes = {split: len(store) for split, (store, _) in stores.items()}
        self.stream = "train" in stores and self._streams(stores["train"][0])
        for split, (store, labels) in stores.items():
            self.labels[split] = None if labels is None else labels.to(self.device)
            if split == "train" and self.stream:
                self._train_store = store
            else:  # moved once: batches are then index operations on the device
                self.images[split] = self._prepare(materialise(store), split)

    def _check_shape(self, stores: dict[str, tuple[Store, Tensor | None]]) -> None:
        for split, (store, _) in stores.items():
            if self.config.shape is None:
                self.config.shape = store.shape
            if tuple(store.shape) != tuple(self.config.shape):
                shown = "x".join(map(str, store.shape))
                raise DataError(
                    f"the {split} images are {shown} (C x H x W) but this run's are "
                    f"{'x'.join(map(str, self.config.shape))}; pass --channels/--image-size to match"
                )

    def _streams(self, store: Store) -> bool:
        if self.config.stream:
            return True
        need, free = image_bytes(store), available_bytes(self.device)
        if store.lazy and need > free / 2:
            self.notes.append(
                f"the {len(store)} training images take {human_bytes(need)} as float32, more than half "
                f"the free memory ({human_bytes(free)}): streaming them from disk (--stream)"
            )
            return True
        check_fits(
            need,
            f"the {len(store)} training images as float32",
            "stream them (--stream, from a folder or an .npy) or lower --train-limit",
            self.device,
        )
        return False

    def _prepare(self, images: Tensor, split: str, fixed: bool = False) -> Tensor:
        """Levels as flattened floats on the device, binarized once unless this is the training set under dynamic
        binarization (``fixed``: binarized once all the same, as evaluation sees the training set)."""
        x = to_unit(images).flatten(1)
        if split != "train" or self.config.binarize == "static" or fixed:
            x = _binarize_fixed(x, self.config.binarize, FIXED_BINARIZATION_SEED + SPLITS.index(split))
        return x.to(self.device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config.shape)

    @property
    def data_dim(self) -> int:
        return math.prod(self.image_shape)

    def count(self, split: str) -> int:
        """How many images ``split`` has."""
        return self.sizes.get(split, 0)

    def observed(self, split: str) -> Tensor:
        """Images of ``split`` as the model sees them at evaluation (binarized where the mode says)."""
        return self.train_sample() if split == "train" else self.images[split]

    def train_sample(self, n: int | None = None) -> Tensor:
        """The first ``n`` (default: all) training images as evaluation sees them, with the training set's fixed
        binarization (a prefix of the whole set's: the draws go image by image); a streamed set is read only
        that far."""
        n = self.count("train") if n is None else min(n, self.count("train"))
        if self.stream:
            return self._prepare(materialise(self._train_store.subset(slice(0, n))), "train", fixed=True)
        x = self.images["train"][:n]
        return (
            _binarize_fixed(x.cpu(), "dynamic", FIXED_BINARIZATION_SEED).to(self.device)
            if self.config.binarize == "dynamic"
            else x
        )

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        skip: int = 0,
        rows: Callable[[int], slice] | None = None,
        with_labels: bool = False,
    ) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training batches for one epoch, reproducible from ``seed`` (one per epoch), from batch
        ``skip`` on (the same batches the full epoch would give there: a run stopped mid-epoch resumes).

        Under dynamic binarization each batch is a fresh Bernoulli sample of its images; a streamed epoch draws
        the same batches in the same order, so it gives the same run. ``rows(n)``: only these rows of each batch of
        ``n`` (one process's share in a job), binarized with the draws they get in the whole batch.
        ``with_labels``: each batch is ``(images, labels)`` (the training set must have labels).
        """
        labels = self.labels.get("train")
        if with_labels and labels is None:
            raise DataError("the training images have no labels")
        n = self.count("train")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        bin_gen = None
        if self.config.binarize == "dynamic":
            bin_gen = torch.Generator(device=self.device).manual_seed(seed)
            for start in range(0, min(n, skip * batch_size), batch_size):  # the skipped batches' draws, in order
                bernoulli(torch.zeros(min(batch_size, n - start), self.data_dim, device=self.device), bin_gen)
        batches = [order[start : start + batch_size] for start in range(skip * batch_size, n, batch_size)]
        shares = [slice(0, len(index)) if rows is None else rows(len(index)) for index in batches]
        indices = [index[share] for index, share in zip(batches, shares)]
        read = self._streamed(indices) if self.stream else self._held(indices)
        for batch, whole, share in zip(read, batches, shares):
            if bin_gen is not None:
                batch = _bernoulli_rows(batch, share, len(whole), bin_gen)
            yield (batch, labels.index_select(0, whole[share].to(labels.device))) if with_labels else batch

    def _held(self, indices: list[Tensor]) -> Iterator[Tensor]:
        x = self.images["train"]
        for index in indices:
            yield x.index_select(0, index.to(self.device))  # (4x faster than x[index] for a batch of rows)

    def _streamed(self, indices: list[Tensor]) -> Iterator[Tensor]:
        workers = default_workers() if self.config.workers is None else self.config.workers
        # Its own generator: a loader seeds its workers from the global RNG otherwise, shifting the model's draws.
        loader = torch.utils.data.DataLoader(
            _Batches(self._train_store),
            batch_size=None,
            sampler=indices,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            generator=torch.Generator().manual_seed(0),
        )
        for images in loader:
            if isinstance(images, str):  # a worker's DataError, passed back as its message
                raise DataError(images)
            yield self._prepare(images.to(self.device), "train")  # (levels cross to the device, not floats)


class _Batches(torch.utils.data.Dataset):
    """A store read a batch at a time (the sampler hands over each batch's indices)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: Tensor) -> Tensor | str:
        try:
            return self.store.get(index.numpy())
        except DataError as exc:  # returned, not raised: the loader would wrap it in a worker traceback
            return str(exc)


def default_val_size(n_train: int) -> int:
    """The validation split carved from ``n_train`` training images when ``val_size`` is not given: a tenth, at most
    :data:`VAL_SIZE_MAX` (MNIST's 60,000 give 5,000; a folder of 500 images, 50)."""
    return min(VAL_SIZE_MAX, n_train // 10)


def _split(source: Source, config: DataConfig, splits: tuple[str, ...]) -> dict[str, tuple[Store, Tensor | None]]:
    """The ``splits`` asked for: a source's own, or carved from the end of its training images."""
    own = {split for split in ("val", "test") if split in source.splits}
    carved = {"val", "test"} - own
    needs_train = "train" in splits or bool(set(splits) & carved)
    out: dict[str, tuple[Store, Tensor | None]] = {split: source.splits[split]() for split in own & set(splits)}
    if not needs_train:
        return out
    store, labels = source.splits["train"]()
    val_size = default_val_size(len(store)) if config.val_size is None else config.val_size
    sizes = {
        "val": val_size if "val" in carved else 0,
        "test": (val_size if config.test_size is None else config.test_size) if "test" in carved else 0,
    }
    n_train = len(store) - sizes["val"] - sizes["test"]
    if n_train < 1:
        raise ConfigError(
            f"the source has {len(store)} training images: val_size={sizes['val']} and "
            f"test_size={sizes['test']} leave none to train on (lower --val-size/--test-size)"
        )
    parts = {
        "train": slice(0, n_train if config.train_limit is None else min(n_train, config.train_limit)),
        "val": slice(n_train, n_train + sizes["val"]),
        "test": slice(n_train + sizes["val"], len(store)),
    }
    for split in splits:
        if split == "train" or split in carved:
            out[split] = (store.subset(parts[split]), None if labels is None else labels[parts[split]])
    return out


def keep_labels(labels: Tensor, n: int, seed: int, classes: int) -> Tensor:
    """``labels`` with all but ``n`` of them hidden (``-1``): ``n // classes`` kept in each class (one more in the
    first ``n % classes``), chosen by a permutation drawn from ``seed``. :class:`ConfigError` when ``n`` is more
    than the images or fewer than the classes; :class:`DataError` when a class has too few images."""
    if n > len(labels):
        raise ConfigError(f"--labelled {n} is more than the {len(labels)} training images")
    if n < classes:
        raise ConfigError(f"--labelled {n} is fewer than the {classes} classes: each class needs a labelled image")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(labels.device)
    kept = torch.full_like(labels, -1)
    for c in range(classes):
        quota = n // classes + (c < n % classes)
        members = order[labels[order] == c][:quota]
        if len(members) < quota:
            raise DataError(f"--labelled {n} needs {quota} images of class {c}; the training set has {len(members)}")
        kept[members] = c
    return kept
