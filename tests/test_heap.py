"""reused_heap: freed memory is reused inside the block and handed back when it ends (glibc only)."""

from __future__ import annotations

import resource

import pytest
import torch

from pyro_vae.runtime import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="glibc's malloc only")

SIZE = 64 << 20  # float32 elements: 256 MiB, far above glibc's largest mmap threshold
PAGES = 4 * SIZE // 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _faults_to_fill() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(SIZE)  # allocated, every page written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_freed_memory_is_reused_inside_and_returned_after():
    with heap.reused_heap():
        # 64-byte aligned blocks need a few rounds (measured: at most 5) before freed ones coalesce into
        # reusable space; after that every round reuses them.
        for _ in range(6):
            _faults_to_fill()
        with heap.reused_heap():  # nested blocks keep the setting until the outermost ends
            assert sum(_faults_to_fill() for _ in range(6)) < PAGES // 4
        inside = _rss_bytes()
    assert inside - _rss_bytes() > SIZE * 4 // 2  # the retained heap went back to the kernel
    assert _faults_to_fill() > PAGES // 2  # large blocks are mmap-ed again, fresh pages each time
