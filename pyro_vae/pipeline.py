"""Whole jobs, as the CLI runs them: start or resume a training run, evaluate a checkpoint.

Each function takes plain arguments and returns library objects, so a script can do what the
CLI does in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyro
import torch

from .checkpoint import load_checkpoint, stored_config, vae_from_checkpoint, vae_from_config
from .data import DataConfig, VAEData
from .devices import resolve_device
from .errors import ConfigError
from .bounds import Evaluation, evaluate
from .guides import Guide
from .likelihoods import Likelihood
from .networks import NetConfig
from .priors import Prior
from .train import CHECKPOINT_NAME, TrainConfig, Trainer
from .vae import VAE


def start_run(
    data_config: DataConfig,
    net: NetConfig,
    prior: Prior,
    likelihood: Likelihood,
    train_config: TrainConfig,
    out_dir: str | Path,
    *,
    guide: Guide | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Trainer:
    """A :class:`Trainer` for a new run in ``out_dir`` (which must not hold a checkpoint unless ``overwrite``).

    The networks are initialised from ``train_config.seed``; components with random initial values
    (mixture means, pseudo-inputs, flows) are built by the caller, so seed before building them.
    """
    train_config.validate()
    data_config.validate()
    net.validate()
    out_dir = Path(out_dir)
    if (out_dir / CHECKPOINT_NAME).exists() and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds a run ({CHECKPOINT_NAME}); continue it with --resume "
            f"{out_dir / CHECKPOINT_NAME}, choose another --out, or pass --overwrite"
        )
    dev = resolve_device(device)
    data = VAEData(data_config, data_dir, dev, splits=("train", "val"))
    pyro.set_rng_seed(train_config.seed)  # the initial weights depend on the seed alone
    vae = VAE(net, prior, likelihood, guide).to(dev)
    if overwrite:
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    return Trainer(vae, data, train_config, out_dir, progress=progress, log=log)


def resume_run(
    checkpoint: str | Path,
    *,
    epochs: int | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Trainer:
    """A :class:`Trainer` that continues the run stored in ``checkpoint`` (to ``epochs`` in total)."""
    ckpt = load_checkpoint(checkpoint)
    train_config = stored_config(ckpt, "train", TrainConfig)
    if epochs is not None:
        train_config.epochs = epochs
    if train_config.epochs < ckpt["epoch"]:
        raise ConfigError(f"checkpoint has {ckpt['epoch']} epochs done; --epochs {train_config.epochs} is fewer")
    dev = resolve_device(device)
    data = VAEData(stored_config(ckpt, "data", DataConfig), data_dir, dev, splits=("train", "val"))
    vae = vae_from_config(ckpt["config"]["model"]).to(dev)
    trainer = Trainer(vae, data, train_config, out_dir or Path(checkpoint).parent, progress=progress, log=log)
    trainer.load_state(ckpt)
    return trainer


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[VAE, dict]:
    """The trained model in ``checkpoint`` on ``device``, and the checkpoint itself."""
    ckpt = load_checkpoint(checkpoint)
    return vae_from_checkpoint(ckpt, resolve_device(device)), ckpt


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    num_particles: int = 1,
    iw_samples: int = 100,
    data_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 500,
    device: str = "auto",
) -> tuple[Evaluation, dict]:
    """Bounds of a checkpoint's model on one split; returns the evaluation and descriptive fields."""
    if num_particles < 1 or iw_samples < 0 or batch_size < 1 or (limit is not None and limit < 1):
        raise ConfigError("--num-particles, --batch-size and --limit must be positive, --iw-samples >= 0")
    vae, ckpt = load_model(checkpoint, device)
    data_config = stored_config(ckpt, "data", DataConfig)
    device_ = next(vae.parameters()).device
    data = VAEData(data_config, data_dir, device_, splits=(split,))
    x = data.observed(split)
    if limit is not None:
        x = x[:limit]
    if x.shape[0] == 0:
        raise ConfigError(f"the {split} split is empty for this run (val_size={data_config.val_size})")
    vae.likelihood.check_data(x)
    result = evaluate(vae, x, num_particles=num_particles, iw_samples=iw_samples, batch_size=batch_size, seed=seed)
    info = {
        "checkpoint": str(checkpoint),
        "epoch": ckpt["epoch"],
        "dataset": data_config.dataset,
        "binarize": data_config.binarize,
        "data": data_config.describe(),
        "split": split,
        "likelihood": ckpt["config"]["model"]["likelihood"]["target"],
        "prior": ckpt["config"]["model"]["prior"]["target"],
        "guide": ckpt["config"]["model"].get("guide", {"target": "pyro_vae.guides:DiagonalGaussianGuide"})["target"],
        "device": str(device_),
        "torch_threads": torch.get_num_threads(),
    }
    return result, info
