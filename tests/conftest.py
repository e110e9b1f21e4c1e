"""Shared fixtures. Tests use the real MNIST/Fashion-MNIST files in ../shared/data (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae import Bernoulli, DataConfig, NetConfig, StandardNormal, TrainConfig
from pyro_vae.pipeline import start_run

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYRO_VAE_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"test data not found at {DATA_DIR} (set PYRO_VAE_TEST_DATA to a torchvision root)")
    return DATA_DIR


@pytest.fixture(autouse=True)
def pyro_validation():
    """Pyro validation stays on in every test (it catches improper likelihoods and shape errors)."""
    pyro.enable_validation(True)
    yield
    assert pyro.infer.util.is_validation_enabled()


SMALL_NET = NetConfig(kind="mlp", latent_dim=8, hidden=(64,))


def small_run(out_dir, data_dir, *, epochs=2, likelihood=None, binarize="dynamic", net=SMALL_NET, prior=None,
              train_limit=2000, seed=0, device="cpu", guide=None, **train_options):  # fmt: skip
    """A Trainer on a small slice of MNIST (fast enough for unit tests); ``train_options`` go to TrainConfig."""
    return start_run(
        DataConfig("mnist", binarize, val_size=500, train_limit=train_limit),
        net,
        prior or StandardNormal(net.latent_dim),
        likelihood or Bernoulli(),
        TrainConfig(epochs=epochs, batch_size=100, lr=1e-3, seed=seed, **train_options),
        out_dir,
        guide=guide,
        data_dir=data_dir,
        device=device,
        progress=False,
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir):
    """A small Bernoulli MLP VAE trained for 2 epochs, and its run folder."""
    trainer = small_run(tmp_path_factory.mktemp("trained"), data_dir)
    trainer.fit()
    return trainer


@pytest.fixture(scope="session")
def test_images(data_dir) -> dict[str, torch.Tensor]:
    """First 500 MNIST test images: dynamically binarized (fixed sample) and grey-level."""
    from pyro_vae import VAEData

    out = {}
    for mode in ("dynamic", "none"):
        out[mode] = VAEData(DataConfig("mnist", mode), data_dir, splits=("test",)).observed("test")[:500]
    return out
