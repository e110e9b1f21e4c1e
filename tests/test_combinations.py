"""Every prior x likelihood x guide that makes sense: one epoch, save, reload as `pyro-vae elbo` does, agree."""

import math

import pytest

from pyro_vae import ComponentConfig, DataConfig, ModelConfig, NetConfig, RunConfig, Trainer, VAEData
from pyro_vae.errors import ConfigError
from pyro_vae.model.components import REGISTRY
from pyro_vae.pipeline import evaluate_checkpoint

D = 4
NET = NetConfig(hidden=(32,))
PRIORS, LIKELIHOODS, GUIDES = (
    {name: cls for name, cls in REGISTRY[kind].items() if cls.__module__.startswith("pyro_vae")}
    for kind in ("prior", "likelihood", "guide")
)
# The one-layer families (the ladder infers several layers: tests/test_hierarchical.py)
GUIDES = {name: cls for name, cls in GUIDES.items() if cls.layers != "top-down"}
SMALL = {"mog": {"num_components": 3}, "vamp": {"num_components": 10}, "flow": {"num_flows": 1}}  # a fast sweep


def model_config(prior: str, likelihood: str, guide: str) -> ModelConfig:
    return ModelConfig(
        D, NET, ComponentConfig(prior, dict(SMALL.get(prior, {}))), ComponentConfig(likelihood), ComponentConfig(guide)
    )


def refused(prior: str, likelihood: str, guide: str) -> bool:
    try:
        model_config(prior, likelihood, guide).validate()
        return False
    except ConfigError:
        return True


COMBINATIONS = [(p, lik, g) for p in PRIORS for lik in LIKELIHOODS for g in GUIDES if not refused(p, lik, g)]


@pytest.fixture(scope="module")
def slices(data_dir) -> dict[str, VAEData]:
    return {
        mode: VAEData(DataConfig("mnist", mode, val_size=100, train_limit=300), data_dir, splits=("train", "val"))
        for mode in ("dynamic", "none")
    }


def test_the_sweep_covers_every_component():
    """Only the VampPrior with the IAF guide is refused (see ModelConfig.validate)."""
    assert len(COMBINATIONS) == len(PRIORS) * len(LIKELIHOODS) * len(GUIDES) - len(LIKELIHOODS)
    assert all(refused("vamp", lik, "iaf") for lik in LIKELIHOODS)
    assert {c[0] for c in COMBINATIONS} == set(PRIORS) and {c[2] for c in COMBINATIONS} == set(GUIDES)


@pytest.mark.parametrize("prior,likelihood,guide", COMBINATIONS)
def test_combination_trains_saves_reloads_and_agrees(prior, likelihood, guide, slices, data_dir, tmp_path):
    data = slices["dynamic" if likelihood == "bernoulli" else "none"]
    vae = model_config(prior, likelihood, guide).build(image_shape=data.image_shape)
    config = RunConfig().updated({"schedule.epochs": 1, "optimizer.batch_size": 100})
    trainer = Trainer(vae, data, config, tmp_path, progress=False)
    trainer.fit()
    assert math.isfinite(trainer.metrics[0]["train_loss"]) and math.isfinite(trainer.metrics[0]["val_elbo"])
    result, info = evaluate_checkpoint(tmp_path / "ckpt.pt", data_dir=data_dir, limit=200, iw_samples=4, seed=1)
    summary = result.summary()
    assert abs(summary["agreement_z"]) < 4, summary
    assert math.isfinite(summary["iwae"]) and info["guide"].startswith(guide)
    assert ("elbo_bits_per_dim" in summary) == REGISTRY["likelihood"][likelihood].discrete
