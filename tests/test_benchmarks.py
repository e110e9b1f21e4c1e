"""Benchmarks are run on demand, not in the suite; this only checks that the throughput script runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_runs(tmp_path, data_dir):
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, ROOT / "benchmarks" / "throughput.py", "--data-dir", data_dir, "--train-images", "256",
           "--batch-size", "64", "--hidden", "32", "--latent-dim", "4", "--rounds", "2", "--warmup-rounds", "0",
           "--out", out]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["loops"]) == {"plain", "stock-pyro", "pyro-vae"}
    for name, loop in result["loops"].items():
        assert len(loop["images_per_s"]) == 2 and loop["images_per_s_median"] > 0, name
        assert loop["peak_rss_mib"] > loop["rss_before_training_mib"] > 0, name
        assert 0 < loop["fraction_of_flop_bound"] < 1, name
    assert result["loops"]["pyro-vae"]["ratio_to_plain_median"] > 0
    # The three loops train the same model on the same batches: their losses are alike.
    losses = [loop["final_train_loss"] for loop in result["loops"].values()]
    assert max(losses) - min(losses) < 0.05 * min(losses)
    assert "img/s" in proc.stdout and "x plain" in proc.stdout
