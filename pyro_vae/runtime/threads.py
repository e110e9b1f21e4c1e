r"""How many CPU threads a training process uses when it shares its CPUs with other work.

torch's OpenMP threads spin while they wait for each other. With more spinning threads than free cores (two
trainings on one machine), every step waits for a descheduled thread: on 2 cores two processes of 2 threads
each train at about a quarter of the speed of one (``benchmarks/RESULTS.md``). :class:`ThreadBudget` gives the
process the cores the *others* leave free, re-measured before every epoch:

.. math::
    \text{threads} = \min\Big(T_{max},\ \max\big(1,\ n_{cpu} - \mathrm{round}(\text{others})\big)\Big), \qquad
    \text{others} = \frac{\Delta\,\text{busy CPU time of our CPUs} - \Delta\,\text{our own CPU time}}
                          {\Delta\,\text{wall time}}

with busy times from ``/proc/stat`` (the CPUs in the process's affinity mask) and our own from ``os.times``.
The first measurement is a short sample before training starts. The thread count changes how the arithmetic is
split; on some CPUs that leaves every number as it was, on others (an AVX-512 Xeon) torch's kernels split their
sums by thread and the weights differ at float32 rounding. A run that must repeat bit for bit fixes the count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

FIRST_SAMPLE_S = 0.1


def cpu_busy_seconds(cpus: set[int], stat: str | None = None) -> float | None:
    """Busy time (all but idle and iowait) of ``cpus`` since boot, from ``/proc/stat``; ``None`` off Linux."""
    try:
        text = stat if stat is not None else Path("/proc/stat").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]  # minus idle and iowait
    return busy / ticks


def threads_for(others: float, cpus: int, most: int) -> int:
    """Threads that fit beside ``others`` busy CPUs out of ``cpus``, at most ``most``, at least 1."""
    return min(most, max(1, cpus - round(others)))


class ThreadBudget:
    """Re-sizes torch's intra-op thread pool before each epoch to the CPUs other processes leave free (never above
    the thread count the process started with); :meth:`restore` puts that count back."""

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.log = log or (lambda message: None)
        self.most = torch.get_num_threads()
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self._mark: tuple[float, float, float] | None = None

    def _now(self) -> tuple[float, float, float] | None:
        busy = cpu_busy_seconds(self.cpus)
        if busy is None:
            return None
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system

    def others(self) -> float | None:
        """CPUs other processes kept busy since the last call (the first call samples for a moment)."""
        if self._mark is None:
            self._mark = self._now()
            time.sleep(FIRST_SAMPLE_S)
        now = self._now()
        if now is None or self._mark is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._mark, now
        self._mark = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-3))

    def adjust(self) -> int:
        """Set and return the thread count for the next epoch."""
        others = self.others()
        current = torch.get_num_threads()
        if others is None:
            return current
        threads = threads_for(others, len(self.cpus), self.most)
        if threads != current:
            torch.set_num_threads(threads)
            self.log(
                f"other processes keep {others:.1f} of {len(self.cpus)} CPUs busy: training with {threads} "
                f"thread{'s' if threads > 1 else ''} (of {self.most}); --threads N fixes the count"
            )
        return threads

    def restore(self) -> None:
        torch.set_num_threads(self.most)
