r"""Reuse freed memory while a pass allocates many large, short-lived tensors (glibc's malloc, Linux).

glibc gives a freed block back to the kernel when it was larger than the mmap threshold (at most 32 MiB) or when
the free space at the top of the heap exceeds the trim threshold. The next tensor of that size is then fresh
pages, which the kernel faults in and zeroes 4 KiB at a time. An IWAE pass frees and re-allocates the same
feature maps chunk after chunk (a conv decoder's are 125 MB at batch 500 x 10 particles): evaluating a conv
model spent more time in those page faults than in its convolutions (``benchmarks/RESULTS.md``).

Inside :func:`reused_heap` every block comes from the heap (``M_MMAP_MAX = 0``) and freed memory stays there
(``M_TRIM_THRESHOLD`` at its largest, 2 GiB), so each chunk reuses the last one's pages. On leaving, large
blocks go back to ``mmap`` and the unused heap is returned to the kernel (``malloc_trim``). The thresholds are then
left at the values glibc's own adaptive rule ends at after large frees (mmap above 32 MiB, trim above 64 MiB), because
setting any of them turns that rule off. What is computed does not change, only where its memory comes from.
It works for a thread that allocates from glibc's main heap, as a process's main thread does until an
allocation fails: glibc then moves the thread to a secondary arena for good, and serves blocks this large
there from mmap whatever the settings. Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_MAX_DEFAULT = 65536
_MMAP_THRESHOLD_MAX = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where glibc's adaptive threshold stops
_NO_TRIM = (1 << 31) - 1  # the largest value mallopt takes: trim only above 2 GiB of free heap

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname (find_library would start ldconfig on every import)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def _mallopt(param: int, value: int) -> None:
    _LIBC.mallopt(ctypes.c_int(param), ctypes.c_int(value))


def _trim() -> None:
    _LIBC.malloc_trim(ctypes.c_size_t(0))


@contextmanager
def reused_heap() -> Iterator[None]:
    """Within this block freed memory is kept by the process and reused (see the module docstring); nests."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1 and _LIBC is not None:
            _mallopt(_M_MMAP_MAX, 0)
            _mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _LIBC is not None:
                _mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
                _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                _mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
                _trim()
