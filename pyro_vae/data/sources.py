"""Where images come from: each source reads its files into image stores (:mod:`pyro_vae.data.images`) by split.

* torchvision sets: ``mnist``, ``fashion-mnist``, ``kmnist`` (idx files), ``cifar10`` (python batches), ``svhn``
  (``.mat``, needs scipy), ``celeba`` (aligned JPEGs and the official partition). Missing files are downloaded by
  torchvision (which checks their checksums) when the folder is the default one; pyro-vae then reads the files
  itself, CIFAR-10's pickles with an unpickler that admits nothing but NumPy arrays;
* ``folder``: ``DIR/train/`` (required), ``DIR/val/``, ``DIR/test/``, images found recursively in sorted path order;
  when every image sits in a subfolder, the subfolders are the classes (torchvision's ImageFolder convention);
* ``array``: ``FILE.npz`` with ``train`` (required), ``val``, ``test`` and ``*_labels``; or ``FILE.npy``, one
  array, memory-mapped.

A source returns each split it has as a thunk, so only the splits asked for are read.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: downloads are not serialised
    fcntl = None
from .images import ArrayStore, FileStore, array_layout, as_nchw, check_pixels, conformed_shape, image_files

Store = ArrayStore | FileStore
IDX_SETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
TORCHVISION_SETS = (*IDX_SETS, "cifar10", "svhn", "celeba")
USER_SOURCES = ("folder", "array")
DATASETS = (*TORCHVISION_SETS, *USER_SOURCES)
NATIVE_SHAPES = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "kmnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
    "celeba": (3, 218, 178),
}
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "svhn": [str(digit) for digit in range(10)],
}
SUBFOLDER = {**IDX_SETS, "cifar10": "cifar-10-batches-py", "svhn": "svhn", "celeba": "celeba"}


def class_name(names: list[str] | None, label: int) -> str:
    """What to call class ``label``: its name when the source has one, else the number."""
    return names[label] if names and 0 <= label < len(names) else str(label)


@dataclass
class Source:
    """The splits a source has (``"train"`` always; ``"val"``/``"test"`` when it brings them), each a thunk giving
    ``(store, labels or None)``, and the class names when the labels are classes."""

    splits: dict[str, Callable[[], tuple[Store, Tensor | None]]]
    class_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)  # what the reader had to decide (an ambiguous array layout)


def read_source(dataset: str, root: Path, download: bool, channels: int | None, size: tuple[int, int] | None) -> Source:
    """The splits of ``dataset`` under ``root`` (a torchvision root; the folder itself for ``folder``; the file for
    ``array``), images conformed to ``channels`` and ``size`` (see :func:`pyro_vae.data.images.conform`)."""
    readers = {"cifar10": _cifar10, "svhn": _svhn, "celeba": _celeba, "folder": _folder, "array": _array}
    read = functools.partial(_idx_set, dataset) if dataset in IDX_SETS else readers[dataset]
    with _one_downloader(root) if download else contextlib.nullcontext():
        return read(root, download, channels, size)


@contextlib.contextmanager
def _one_downloader(root: Path) -> Iterator[None]:
    """An exclusive lock on ``root`` while a source that may be downloaded is read: the processes of a job (or two
    runs) on one machine do not download into the same folder at once; the later ones find the files there."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / ".pyro-vae-download.lock", "a")
    except OSError:  # a read-only root holds its data already (or the reader says what is missing)
        yield
        return
    with lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


def holds(dataset: str, root: Path) -> bool:
    """Whether ``root`` holds ``dataset``'s files (for a torchvision set: its subfolder)."""
    if dataset in USER_SOURCES:
        return root.exists()
    return (root / SUBFOLDER[dataset]).is_dir()


# -- torchvision's sets ---------------------------------------------------------------------------------------------


def _idx_set(dataset: str, root: Path, download: bool, channels, size) -> Source:
    def split(train: bool) -> Callable[[], tuple[Store, Tensor]]:
        def read() -> tuple[Store, Tensor]:
            images, labels = _read_idx_split(dataset, root, train, download)
            return ArrayStore(images.numpy()[:, None], channels, size), labels

        return read

    return Source({"train": split(True), "test": split(False)}, CLASS_NAMES[dataset])


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
    expected = 4 + 4 * ndim + int(np.prod([int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4)]))
    if size != expected:
        raise DataError(
            f"{path} is corrupt: {size} bytes where its header promises {expected} (truncated or damaged; "
            "delete it to download it again)"
        )


def _read_idx_split(dataset: str, root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """Raw uint8 images ``(N, H, W)`` and labels, via torchvision."""
    import torchvision  # imported here: it is slow to import and only data loading needs it

    folder = IDX_SETS[dataset]
    prefix = "train" if train else "t10k"
    for kind in ("images-idx3", "labels-idx1"):  # torchvision itself reports a truncated file as a missing set
        path = root / folder / "raw" / f"{prefix}-{kind}-ubyte"
        if path.is_file():
            check_idx_file(path)
    try:
        ds = getattr(torchvision.datasets, folder)(str(root), train=train, download=download)
    except RuntimeError:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DataError(f"no {folder} dataset under {root}{_no_download_hint(download)}") from None
    except OSError as exc:  # a failed download or unreadable file
        raise DataError(f"could not read or download {folder} into {root}: {exc}") from None
    if ds.data.ndim != 3 or ds.data.shape[0] != ds.targets.shape[0]:
        raise DataError(
            f"{folder} under {root} is inconsistent: {tuple(ds.data.shape)} images but "
            f"{ds.targets.shape[0]} labels in the {prefix} split"
        )
    return ds.data, ds.targets


def _no_download_hint(download: bool) -> str:
    return "" if download else " (omit --data-dir to download it, or point --data-dir at a torchvision root)"


def _download(dataset: str, root: Path, download: bool, splits: tuple[dict, ...] = ({},)) -> None:
    """Have torchvision fetch ``dataset`` into ``root`` (checksums checked) unless its folder is there; ``splits``:
    the keyword arguments of each torchvision call it takes (SVHN downloads per split)."""
    if holds(dataset, root):
        return
    if not download:
        raise DataError(f"no {dataset} dataset under {root}{_no_download_hint(download)}")
    import torchvision

    cls = {
        "cifar10": torchvision.datasets.CIFAR10,
        "svhn": torchvision.datasets.SVHN,
        "celeba": torchvision.datasets.CelebA,
    }[dataset]
    target = root / SUBFOLDER[dataset] if dataset == "svhn" else root  # SVHN's files go straight into its root
    try:
        for kwargs in splits:
            cls(str(target), download=True, **kwargs)
    except (RuntimeError, OSError) as exc:
        raise DataError(f"could not download {dataset} into {root}: {exc}") from None


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: dicts, lists, text, numbers and NumPy arrays."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }  # bytes, as Python 3 pickles them

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        data, labels = np.asarray(entry["data"], dtype=np.uint8), list(entry["labels"])
    except FileNotFoundError:
        raise DataError(f"{path} is missing (delete {path.parent} to download CIFAR-10 again)") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 batch, not loaded ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != data.shape[0]:
        raise DataError(f"{path} is not a CIFAR-10 batch: images {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10(root: Path, download: bool, channels, size) -> Source:
    def split(names: list[str]) -> Callable[[], tuple[Store, Tensor]]:
        def read() -> tuple[Store, Tensor]:
            _download("cifar10", root, download)
            batches = [_cifar_batch(root / SUBFOLDER["cifar10"] / name) for name in names]
            images = np.concatenate([b[0] for b in batches])
            return ArrayStore(images, channels, size), torch.tensor([y for b in batches for y in b[1]])

        return read

    train = [f"data_batch_{i}" for i in range(1, 6)]
    return Source({"train": split(train), "test": split(["test_batch"])}, CLASS_NAMES["cifar10"])


def _svhn(root: Path, download: bool, channels, size) -> Source:
    def split(name: str) -> Callable[[], tuple[Store, Tensor]]:
        def read() -> tuple[Store, Tensor]:
            try:
                from scipy.io import loadmat
            except ImportError:
                raise DataError("svhn's .mat files need scipy: pip install scipy (or pyro-vae[svhn])") from None
            _download("svhn", root, download, ({"split": "train"}, {"split": "test"}))
            path = root / "svhn" / f"{name}_32x32.mat"
            try:
                mat = loadmat(str(path))
                images, labels = mat["X"], mat["y"].astype(np.int64).reshape(-1)
            except FileNotFoundError:
                raise DataError(f"{path} is missing (delete {path.parent} to download SVHN again)") from None
            except (ValueError, KeyError, TypeError, OSError) as exc:
                raise DataError(f"{path} is not an SVHN .mat file ({type(exc).__name__}: {exc})") from None
            if (
                images.ndim != 4
                or images.shape[2] != 3
                or images.shape[3] != labels.shape[0]
                or images.dtype != np.uint8
            ):
                raise DataError(f"{path} is not an SVHN .mat file: X {images.shape} {images.dtype}, y {labels.shape}")
            labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
            return ArrayStore(np.ascontiguousarray(images.transpose(3, 2, 0, 1)), channels, size), torch.from_numpy(
                labels
            )

        return read

    return Source({"train": split("train"), "test": split("test")}, CLASS_NAMES["svhn"])


def _celeba(root: Path, download: bool, channels, size) -> Source:
    folder = root / SUBFOLDER["celeba"]
    partition = folder / "list_eval_partition.txt"

    def split(index: int) -> Callable[[], tuple[Store, None]]:
        def read() -> tuple[Store, None]:
            _download("celeba", root, download, ({"split": "all", "target_type": []},))
            try:
                rows = [line.split() for line in partition.read_text().splitlines() if line.strip()]
                names = [name for name, part in rows if int(part) == index]
            except (OSError, ValueError) as exc:
                raise DataError(f"{partition} cannot be read as CelebA's partition file ({exc})") from None
            if not names:
                raise DataError(f"{partition} lists no images for split {index}")
            return FileStore([folder / "img_align_celeba" / name for name in names], channels, size), None

        return read

    return Source({"train": split(0), "val": split(1), "test": split(2)})


# -- the user's own images ----------------------------------------------------------------------------------------


def _folder(root: Path, download: bool, channels, size) -> Source:
    if not (root / "train").is_dir():
        raise DataError(
            f"{root} has no train/ folder: put the training images in {root / 'train'} (and optionally val/ and test/)"
        )
    classes = _classes(root / "train")

    def split(name: str) -> Callable[[], tuple[Store, Tensor | None]]:
        def read() -> tuple[Store, Tensor | None]:
            files = image_files(root / name)
            if not files:
                raise DataError(f"no images under {root / name} (PNG, JPEG, BMP or WebP, found recursively)")
            labels = None
            if classes is not None:
                parts = [f.relative_to(root / name).parts for f in files]
                unknown = {p[0] for p in parts} - set(classes)
                if unknown or any(len(p) < 2 for p in parts):
                    raise DataError(
                        f"{root / name} has images outside the classes of train/ ({', '.join(classes)}): "
                        f"{sorted(unknown)[0] if unknown else 'an image at the top level'}"
                    )
                index = {c: i for i, c in enumerate(classes)}
                labels = torch.tensor([index[p[0]] for p in parts])
            return FileStore(files, channels, size), labels

        return read

    splits = {name: split(name) for name in ("train", "val", "test") if (root / name).is_dir()}
    return Source(splits, classes)


def _classes(train: Path) -> list[str] | None:
    """The class subfolders of ``train`` when every image is inside one, else ``None`` (unlabelled)."""
    top = [p for p in train.iterdir() if not p.name.startswith(".")]
    if not top or any(p.is_file() for p in top):
        return None
    return sorted(p.name for p in top)


def _array(root: Path, download: bool, channels, size) -> Source:
    headers = array_headers(root)
    if "train" not in headers:
        raise DataError(f"{root} has no array named 'train' (it has: {', '.join(headers) or 'none'})")
    unknown = sorted(set(headers) - {"train", "val", "test", "train_labels", "val_labels", "test_labels"})
    if unknown:
        raise DataError(f"{root} has an array named {unknown[0]!r}; the names are train, val, test and *_labels")
    notes: list[str] = []

    def split(name: str) -> Callable[[], tuple[Store, Tensor | None]]:
        where = f"{root}[{name}]"
        layout, note = array_layout(headers[name][0], where)
        if note:
            notes.append(note)

        def read() -> tuple[Store, Tensor | None]:
            images = as_nchw(_load_array(root, name), layout)
            check_pixels(images, where)
            labels = _load_array(root, f"{name}_labels") if f"{name}_labels" in headers else None
            return ArrayStore(images, channels, size), _labels(labels, len(images), where)

        return read

    splits = {name: split(name) for name in ("train", "val", "test") if name in headers}
    return Source(splits, None, notes)


def array_headers(root: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array in an ``.npz`` (by name) or ``.npy`` (as ``train``), from the headers alone."""
    if root.suffix not in (".npz", ".npy") or not root.is_file():
        raise DataError(
            f"--dataset array needs an .npz or .npy file as --data-dir, got {root}"
            + ("" if root.exists() else " (no such file)")
        )
    try:
        if root.suffix == ".npy":
            with open(root, "rb") as f:
                return {"train": _npy_header(f)}
        with zipfile.ZipFile(root) as archive:
            headers = {}
            for member in archive.namelist():
                with archive.open(member) as f:
                    headers[member.removesuffix(".npy")] = _npy_header(f)
            return headers
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{root} cannot be read as a NumPy file ({exc})") from None


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(shape), dtype


def _load_array(root: Path, name: str) -> np.ndarray:
    """One array: an ``.npy`` memory-mapped (it may not fit in memory), an ``.npz`` member read whole."""
    try:
        if root.suffix == ".npy":
            return np.load(root, mmap_mode="r", allow_pickle=False)
        with np.load(root, allow_pickle=False) as npz:
            return npz[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{root} cannot be read as a NumPy file ({exc})") from None


def probe_shape(dataset: str, root: Path, channels: int | None, size: tuple[int, int] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` the source's images will have, read from as little as possible: a torchvision set's known
    shape, an array's header, a folder's first training image's header."""
    if dataset in NATIVE_SHAPES:
        return conformed_shape(NATIVE_SHAPES[dataset], channels, size)
    if dataset == "array":
        _array(root, False, channels, size)  # the file's names checked
        shape = array_headers(root)["train"][0]
        layout, _ = array_layout(shape, f"{root}[train]")
        native = {"NHW": (1, *shape[1:3]), "NHWC": (shape[3], *shape[1:3]), "NCHW": tuple(shape[1:4])}[layout]
        return conformed_shape(native, channels, size)
    store, _ = _folder(root, False, channels, size).splits["train"]()
    return store.shape


def _labels(labels: np.ndarray | None, n: int, where: str) -> Tensor | None:
    if labels is None:
        return None
    if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}'s labels must be {n} integers, got {labels.dtype} {labels.shape}")
    return torch.from_numpy(labels.astype(np.int64))
