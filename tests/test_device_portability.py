"""Checkpoints move between devices: one saved on a GPU works on a machine without one.

Without a GPU, a GPU checkpoint is simulated: the same checkpoint saved with every tensor's storage
tagged ``cuda:0``, which is what ``torch.save`` writes for CUDA tensors. ``torch.load`` without a
``map_location`` refuses such a file on a CPU-only machine, so the test proves the commands map it.
(The other direction, a CPU checkpoint on a GPU, is in ``test_cuda.py``.)
"""

import pickle
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.serialization as serialization
from test_cli import run_cli


@contextmanager
def storages_tagged_cuda():
    entry = (0, lambda storage: "cuda:0" if storage.device.type == "cpu" else None, lambda storage, location: None)
    serialization._package_registry.insert(0, entry)  # what register_package does, but removable afterwards
    try:
        yield
    finally:
        serialization._package_registry.remove(entry)


@pytest.fixture
def gpu_checkpoint(trained, tmp_path):
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    path = tmp_path / "gpu_run" / "ckpt.pt"
    path.parent.mkdir()
    with storages_tagged_cuda():
        torch.save(ckpt, path)
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, pickle.UnpicklingError), match="CUDA"):  # (torch 2.4 wraps it)
            torch.load(path, weights_only=True)  # really a CUDA file
    return path


def test_every_command_reads_a_gpu_checkpoint_on_the_cpu(gpu_checkpoint, trained, data_dir, tmp_path, capsys):
    common = ["--checkpoint", gpu_checkpoint, "--device", "cpu"]
    code, out, _ = run_cli(["elbo", *common, "--data-dir", data_dir, "--limit", 200, "--iw-samples", 5], capsys)
    assert code == 0 and "device=cpu" in out
    code, out, _ = run_cli(
        ["plot", *common, "--data-dir", data_dir, "--out", tmp_path / "p", "--num-points", 100], capsys
    )
    assert code == 0 and (tmp_path / "p" / "reconstructions.png").is_file()
    code, _, _ = run_cli(["sample", *common, "-n", 4, "--out", tmp_path / "s.npy"], capsys)
    assert code == 0 and np.load(tmp_path / "s.npy").shape == (4, 1, 28, 28)
    code, _, _ = run_cli(
        ["encode", *common, "--data-dir", data_dir, "--limit", 50, "--out", tmp_path / "l.npz"], capsys
    )
    assert code == 0
    code, _, err = run_cli(
        [
            "train",
            "--resume",
            gpu_checkpoint,
            "--epochs",
            3,
            "--device",
            "cpu",
            "--data-dir",
            data_dir,
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    resumed = torch.load(gpu_checkpoint, weights_only=True)  # rewritten on the CPU by the resumed run
    assert resumed["epoch"] == 3 and all(t.device.type == "cpu" for t in resumed["model_state"].values())
