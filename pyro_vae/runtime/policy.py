"""What pyro-vae may change about the whole process while it trains or evaluates: off unless asked.

Three settings make the command line faster, and each reaches beyond the call that uses it:

* ``reuse_heap``: while :func:`~pyro_vae.inference.bounds.evaluate` runs, glibc's malloc keeps freed memory for the
  next chunk (:mod:`pyro_vae.runtime.heap`); the thresholds are global to the process.
* ``freeze_gc``: each training epoch runs with ``gc.freeze()`` (the collector skips the objects that existed
  before it); only when nothing was frozen before, so a caller's frozen objects stay frozen.
* ``thread_budget``: before each training epoch on the CPU, torch's intra-op thread pool (one per process) is
  sized to the CPUs other processes leave free (:mod:`pyro_vae.runtime.threads`), then put back.

A library call uses none of them. ``pyro-vae`` turns them on (it owns its process; ``--threads N`` or
``OMP_NUM_THREADS`` fix the thread count instead); in Python::

    with pyro_vae.runtime_policy(RuntimePolicy(reuse_heap=True)):
        pyro_vae.evaluate(vae, x, iw_samples=5000)

The policy is a context variable: it applies to the code inside the ``with`` block, in this thread.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

from .heap import reused_heap


@dataclass(frozen=True)
class RuntimePolicy:
    """Which process-wide settings pyro-vae may change (see the module docstring); all off by default."""

    reuse_heap: bool = False
    freeze_gc: bool = False
    thread_budget: bool = False

    @classmethod
    def command_line(cls, thread_budget: bool = True) -> RuntimePolicy:
        """What ``pyro-vae`` uses: everything, the thread budget unless the thread count was fixed."""
        return cls(reuse_heap=True, freeze_gc=True, thread_budget=thread_budget)


_OFF = RuntimePolicy()
_CURRENT: ContextVar[RuntimePolicy] = ContextVar("pyro_vae_runtime_policy", default=_OFF)  # (frozen: immutable)


def current_policy() -> RuntimePolicy:
    return _CURRENT.get()


@contextmanager
def runtime_policy(policy: RuntimePolicy) -> Iterator[RuntimePolicy]:
    """``policy`` for the code inside the block."""
    token = _CURRENT.set(policy)
    try:
        yield policy
    finally:
        _CURRENT.reset(token)


@contextmanager
def frozen_gc() -> Iterator[None]:
    r"""Under ``freeze_gc``, and when nothing is frozen yet: ``gc.freeze()`` for the block, ``gc.unfreeze()`` after.

    Each Pyro step allocates hundreds of small dicts (messages, trace nodes), so the collector runs several times
    per step, and its periodic full collections walk every object in the process (~200,000: torch's and Pyro's
    own). None of those can become garbage during an epoch, so freezing them loses nothing; in a step-level timing
    of the reference MLP at batch 128 on CPU it made the Pyro step 8 % faster (``benchmarks/RESULTS.md``).
    """
    if not current_policy().freeze_gc or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def heap_reuse() -> AbstractContextManager[None]:
    """Under ``reuse_heap``: :func:`~pyro_vae.runtime.heap.reused_heap`; otherwise nothing."""
    return reused_heap() if current_policy().reuse_heap else nullcontext()
