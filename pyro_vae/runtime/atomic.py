"""Atomic file writes: a file is either absent, the old version, or complete; never half written.

Used for everything pyro-vae writes (checkpoints, metrics, pictures, arrays), so an interrupted
command never leaves a truncated file behind in place of a good one. The data are fsynced before the
rename and the folder after it, so the new file also survives a power cut once the call returns.
A process killed inside the write leaves a hidden ``.NAME.XXXX.tmpSUFFIX`` file; the next trainer of
that run folder removes such files (:func:`remove_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP = ".tmp"  # marks a temporary file: .NAME.XXXX.tmpSUFFIX


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that infer the format from it work);
    on a clean exit it is flushed to disk, given the permissions a plainly created file would have
    (``mkstemp`` makes it private), and renamed over ``path``; on an error it is removed."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_paths(paths: Iterable[str | Path]) -> Iterator[list[Path]]:
    """:func:`atomic_path` for several files that must agree (a checkpoint and the metrics it lists): each is
    written and flushed to its temporary file first, and only then are they renamed, in order, one right after
    the other, so no slow write sits between two renames."""
    paths = [Path(p) for p in paths]
    tmps = []
    try:
        for path in paths:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{_TMP}{path.suffix}", dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(path.parent for path in paths):
        _fsync_folder(folder)


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """``path`` becomes a copy of ``source``, atomically: a hard link where the file system allows one (no data
    written; a later atomic write to ``source`` replaces its name, not the linked file), else a byte copy."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return Path(path)


def remove_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``folder/NAME`` (for each of ``names``) left
    behind; returns them. Call it only while no other process can be writing them (holding the run
    folder's lock)."""
    patterns = [
        re.compile(re.escape(f".{Path(n).stem}.") + r"[a-z0-9_]{8}" + re.escape(_TMP + Path(n).suffix)) for n in names
    ]
    stale = [p for p in Path(folder).iterdir() if p.is_file() and any(r.fullmatch(p.name) for r in patterns)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: fsync the directory); a no-op where that is unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask
