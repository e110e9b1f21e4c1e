"""Stopping training cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler, ``kill``).

While :func:`stop_requests` is active, either signal only sets a flag; the training loop reads it after
each step, saves a checkpoint that records where in the epoch it stopped, and raises
:class:`~pyro_vae.errors.RunInterrupted` (exit status 128 + signal number: 130 or 143). The first
signal also restores the previous handlers, so a second Ctrl-C interrupts at once (checkpoints are
written atomically, so even that never leaves a broken file). Handlers can only be installed from
the main thread; elsewhere the flag never rises and the signals keep their usual effect.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """``signum``: the signal that asked training to stop, or ``None``."""

    signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """A :class:`StopRequest` raised by the first SIGINT/SIGTERM inside the ``with`` block."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {}

    def handler(signum, frame) -> None:
        request.signum = signum
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
