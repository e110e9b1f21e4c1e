"""One writer per run folder: an exclusive ``flock`` on ``OUT/.lock``.

A training process takes the lock before it touches anything in its run folder and holds it until
it is done (in a job of several processes, rank 0 does, for the job: the others never touch the folder). A
second trainer pointed at the same folder (with ``--overwrite`` or ``--resume``) is
refused with the first one's pid instead of interleaving its checkpoints and metrics with the first.
The kernel releases a ``flock`` when the process that holds it dies, however it dies, so a killed
run never leaves a stale lock behind; the file itself stays (removing it would race with a new taker).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ..errors import RunInUseError
from ..runtime.distributed import current
from .run_folder import RunFolder, deprecated_names

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, runs are not locked
    fcntl = None

__getattr__ = deprecated_names(__name__, {"LOCK_NAME": "LOCK"})  # until 0.4
_RANK_0_HOLDS_IT = object()  # what a lock of another rank holds: rank 0's lock stands for the whole job


class RunFolderLock:
    """The exclusive right to write in ``folder`` (created if missing); :class:`RunInUseError` if taken."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunFolderLock:
        if self.held:
            return self
        if not current().is_main:
            self._file = _RANK_0_HOLDS_IT
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(RunFolder(self.folder).lock, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid = f.read(32).strip() or "unknown"
                f.close()
                raise RunInUseError(f"{self.folder} is in use by another run (pid {pid})") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None and self._file is not _RANK_0_HOLDS_IT:
            self._file.close()  # closing the descriptor releases the flock
        self._file = None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def locked(folder: str | Path) -> Iterator[RunFolderLock]:
    """The run folder's lock, taken, for a Trainer to adopt; released if building the Trainer fails."""
    lock = RunFolderLock(folder).acquire()
    try:
        yield lock
    except BaseException:
        lock.release()
        raise
