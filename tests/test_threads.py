"""The CPU thread budget: the arithmetic, /proc/stat, and a measurement beside real busy processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from pyro_vae.runtime.threads import ThreadBudget, cpu_busy_seconds, threads_for


def test_threads_fill_the_cpus_others_leave():
    assert threads_for(0.0, cpus=2, most=2) == 2
    assert threads_for(1.1, cpus=2, most=2) == 1
    assert threads_for(1.9, cpus=2, most=2) == 1  # never below one
    assert threads_for(0.4, cpus=16, most=4) == 4  # never above the process's own default
    assert threads_for(13.6, cpus=16, most=8) == 2


def test_busy_time_counts_only_our_cpus_and_not_idle_or_iowait():
    stat = (
        "cpu  900 0 900 9000 900 0 0 0 0 0\n"
        "cpu0 100 10 100 5000 400 20 30 40 0 0\n"
        "cpu1 200 0 200 4000 500 0 0 0 0 0\n"
        "intr 12345\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu_busy_seconds({0}, stat) == pytest.approx((100 + 10 + 100 + 20 + 30 + 40) / ticks)
    assert cpu_busy_seconds({0, 1}, stat) == pytest.approx((300 + 400) / ticks)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2, reason="needs Linux, 2 CPUs")
def test_busy_processes_beside_us_take_threads_away_and_restore_gives_them_back():
    cpus = len(os.sched_getaffinity(0))
    budget = ThreadBudget()
    hogs = [
        subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
        for _ in range(cpus)
    ]
    try:
        time.sleep(0.5)  # the hogs are spinning
        threads = budget.adjust()  # (the first call samples for a moment)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert threads == 1 and torch.get_num_threads() == 1
    budget.restore()
    assert torch.get_num_threads() == budget.most


def test_threads_option(tmp_path, capsys):
    code, _, err = run_cli(["train", "--threads", "many", "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "--threads must be auto or a count")
