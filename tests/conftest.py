"""Shared fixtures. Tests use the real MNIST/Fashion-MNIST files in ../shared/data (no download)."""

from __future__ import annotations

import os
from pathlib import Path

# torch.compile costs seconds per model and the suite trains hundreds of small ones: the training step runs
# uncompiled here (the numbers --no-compile gives), in this process and in the commands it starts. The tests
# of the compiled step turn compiling back on with the ``compiling`` fixture.
os.environ["TORCH_COMPILE_DISABLE"] = "1"

import pyro
import pytest
import torch

from pyro_vae import DataConfig, ModelConfig, NetConfig, RunConfig, start_run
from pyro_vae.model.config import component_config

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PYRO_VAE_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw").is_dir():
        pytest.fail(f"test data not found at {DATA_DIR} (set PYRO_VAE_TEST_DATA to a torchvision root)")
    return DATA_DIR


@pytest.fixture
def compiling(monkeypatch):
    """torch.compile on, for this test (and the commands it starts)."""
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "0")


@pytest.fixture(autouse=True)
def pyro_validation():
    """Pyro validation stays on in every test (it catches improper likelihoods and shape errors)."""
    pyro.enable_validation(True)
    yield
    assert pyro.infer.util.is_validation_enabled()


SMALL_NET = NetConfig(kind="mlp", hidden=(64,))
# small_run's keyword -> the RunConfig key it sets
SHORT_KEYS = {
    "structure": "model.structure",
    "classifier_weight": "model.classifier_weight",
    "latent_dims": "model.latent_dims",
    "labelled": "data.labelled",
    "objective": "objective.kind",
    "particles": "objective.particles",
    "beta": "objective.beta",
    "warmup_epochs": "objective.warmup_epochs",
    "warmup_start": "objective.warmup_start",
    "jit": "objective.jit",
    "lr": "optimizer.lr",
    "adam_eps": "optimizer.adam_eps",
    "batch_size": "optimizer.batch_size",
    "lr_schedule": "schedule.lr_schedule",
    "checkpoint_every": "schedule.checkpoint_every",
    "plot_every": "schedule.plot_every",
}


def small_config(
    data_dir,
    *,
    epochs=2,
    likelihood=None,
    binarize="dynamic",
    net=SMALL_NET,
    prior=None,
    train_limit=2000,
    seed=0,
    guide=None,
    latent_dim=8,
    **settings,
) -> RunConfig:
    """A RunConfig on a small slice of MNIST; components are given as instances (their config is read off them),
    ``settings`` by the short names of SHORT_KEYS."""
    parts = {
        kind: component_config(part)
        for kind, part in (("prior", prior), ("likelihood", likelihood), ("guide", guide))
        if part is not None
    }
    config = RunConfig(
        seed=seed,
        data=DataConfig("mnist", binarize, val_size=500, train_limit=train_limit, root=str(data_dir)),
        model=ModelConfig(latent_dim=latent_dim, net=net, **parts),
    )
    config.schedule.epochs, config.optimizer.batch_size = epochs, 100
    trust = [part.module for part in parts.values() if part.module]
    return config.updated({SHORT_KEYS[k]: v for k, v in settings.items()}, trust)


def small_run(out_dir, data_dir, *, device="cpu", callbacks=(), **options):
    """A Trainer for :func:`small_config` (fast enough for unit tests); the tests' own components are trusted."""
    config = small_config(data_dir, **options)
    tests = [part.module for part in (config.model.prior, config.model.likelihood, config.model.guide) if part.module]
    return start_run(config, out_dir, device=device, progress=False, trust_modules=tests, callbacks=callbacks)


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


# `make test-fast` runs the rest: these files train runs end to end, start commands or jobs of processes.
SLOW_FILES = {
    "test_agreement.py",
    "test_benchmarks.py",
    "test_cli.py",
    "test_combinations.py",
    "test_compiled_step.py",
    "test_conditional.py",
    "test_cuda.py",
    "test_device_portability.py",
    "test_distributed.py",
    "test_evaluation.py",
    "test_examples.py",
    "test_faults.py",
    "test_fuzz.py",
    "test_image_data.py",
    "test_plots.py",
    "test_quality.py",
    "test_readme_tour.py",
    "test_semi_supervised.py",
    "test_sharing.py",
    "test_train.py",
    "test_trust.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
