"""reused_heap: freed memory is reused inside the block and handed back when it ends (glibc only).

The check runs in a fresh process, as ``pyro-vae elbo`` does. After an allocation fails, glibc moves the thread to
a secondary arena for good, where blocks of this size are always mmap-ed (checked: after one failed 128 TiB
``torch.empty``, every 256 MiB block was mmap-ed inside the block). In the whole suite's long process the main
thread had been moved so (every block mmap-ed there too), so the check cannot run in it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyro_vae.runtime import heap

pytestmark = pytest.mark.skipif(heap._LIBC is None, reason="glibc's malloc only")

CHECK = """
import contextlib
import resource
import torch
import pyro_vae.cli.main  # what `pyro-vae elbo` has loaded (with torch alone: 131,073 faults, not reused)
from pyro_vae.runtime import heap

BLOCK = {block}

SIZE = 64 << 20  # float32 elements: 256 MiB, far above glibc's largest mmap threshold
PAGES = 4 * SIZE // resource.getpagesize()

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def faults_to_fill():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(SIZE)  # allocated, every page written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with BLOCK():
    # 64-byte aligned blocks need a few rounds (measured: at most 5) before freed ones coalesce into
    # reusable space; after that every round reuses them.
    for _ in range(6):
        faults_to_fill()
    with BLOCK():  # nested blocks keep the setting until the outermost ends
        reused = sum(faults_to_fill() for _ in range(6))
        assert reused < PAGES // 4, (reused, PAGES)  # the same pages, not fresh ones
    inside = rss_bytes()
assert inside - rss_bytes() > SIZE * 4 // 2  # the retained heap went back to the kernel
assert faults_to_fill() > PAGES // 2  # large blocks are mmap-ed again, fresh pages each time
"""


@pytest.mark.parametrize("block, works", [("heap.reused_heap", True), ("contextlib.nullcontext", False)])
def test_freed_memory_is_reused_inside_and_returned_after(block, works):
    done = subprocess.run([sys.executable, "-c", CHECK.format(block=block)], capture_output=True, text=True)
    assert (done.returncode == 0) == works, done.stderr[-2000:]
    if not works:  # the negative control fails at the reuse check, not before it
        assert "AssertionError: (" in done.stderr  # the message of the reuse check
