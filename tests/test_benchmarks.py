"""Benchmarks are run on demand, not in the suite; this only checks that the scripts run (the GPU script as its
CPU dry run, so it cannot rot while no GPU is at hand)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_benchmark_runs(tmp_path, data_dir):
    out = tmp_path / "throughput.json"
    cmd = [
        sys.executable,
        ROOT / "benchmarks" / "throughput.py",
        "--data-dir",
        data_dir,
        "--train-images",
        "256",
        "--batch-size",
        "64",
        "--hidden",
        "32",
        "--latent-dim",
        "4",
        "--rounds",
        "2",
        "--warmup-rounds",
        "0",
        "--pause",
        "0",
        "--out",
        out,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert {"plain", "stock-pyro", "pyro-vae"} <= set(result["loops"])  # (and NumPyro's, where the bench extra is)
    for name, loop in result["loops"].items():
        assert len(loop["images_per_s"]) == 2 and loop["images_per_s_median"] > 0, name
        assert loop["peak_rss_mib"] > loop["rss_before_training_mib"] > 0, name
        assert 0 < loop["fraction_of_flop_bound"] < 1, name
    assert result["loops"]["pyro-vae"]["ratio_to_plain_median"] > 0
    # The three loops train the same model on the same batches: their losses are alike.
    losses = [loop["final_train_loss"] for loop in result["loops"].values()]
    assert max(losses) - min(losses) < 0.05 * min(losses)
    assert "img/s" in proc.stdout and "x plain" in proc.stdout


def test_the_gpu_script_dry_runs_on_a_cpu(tmp_path, data_dir):
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", ROOT / "benchmarks" / "gpu.sh", tmp_path / "out", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    tests = json.loads((out / "cuda_tests.json").read_text())
    assert tests["failed"] == 0 and tests["tests"] == tests["passed"] + tests["skipped"] > 0
    for net in ("mlp", "conv"):
        loops = set(json.loads((out / f"throughput-{net}.json").read_text())["loops"])
        assert {"plain", "stock-pyro", "pyro-vae"} <= loops  # (and NumPyro's for the MLP, where the bench extra is)
    assert json.loads((out / "epoch.json").read_text())["images"] == 2000
    reference = json.loads((out / "reference.json").read_text())
    assert reference["test_elbo"] < 0 and reference["within_noise"] is None  # a 1-epoch dry run is no comparison
    assert json.loads((out / "iwae5000.json").read_text())["k"] == 50
    assert json.loads((out / "all_reduce.json").read_text())["backend"] == "gloo"
    assert (out / "runs" / "torchrun_epoch" / "ckpt.pt").is_file()
    assert json.loads((out / "machine.json").read_text())["quick"] is True
    profile = json.loads((out / "profile.json").read_text())
    assert list(profile["epochs"]["epoch_seconds"]) == ["1", "2", "3", "4", "5"]
    assert len(profile["iwae_by_chunk"]["by_budget"]) == 2 and (out / "profile_python.txt").stat().st_size > 0
    summary = (out / "summary.md").read_text()
    assert "QUICK dry run" in summary and "failed" not in summary.replace("0 failed", "")


def test_throughput_benchmark_runs_the_other_structures(tmp_path, data_dir):
    """The conditional VAE, M2 and two-layer loops: the plain loop's hand-written losses are the Pyro loops' (alike
    losses)."""
    for structure, extra in (
        ("conditional", []),
        ("semi-supervised", ["--labelled", "50"]),
        ("hierarchical", ["--latent-dims", "4,2", "--layer-hidden", "16", "--guide", "ladder"]),
    ):
        out = tmp_path / f"{structure}.json"
        cmd = [sys.executable, ROOT / "benchmarks" / "throughput.py", "--data-dir", data_dir, "--structure", structure]
        cmd += ["--train-images", "512", "--batch-size", "64", "--hidden", "32", "--latent-dim", "4", "--rounds", "2"]
        cmd += ["--warmup-rounds", "0", "--pause", "0", "--no-memory", *extra, "--out", out]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        loops = json.loads(out.read_text())["loops"]
        assert {"plain", "stock-pyro", "pyro-vae"} <= set(loops)
        losses = [loop["final_train_loss"] for loop in loops.values()]
        assert max(losses) - min(losses) < 0.05 * min(losses), (structure, losses)
