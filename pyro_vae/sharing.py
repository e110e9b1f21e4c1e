"""Handing a trained model on: an exported folder that the rest of the ecosystem reads, and the Hugging Face Hub.

``pyro-vae export CKPT DIR`` writes the layout Hugging Face uses::

    DIR/config.json        {"format": "pyro-vae-model", "format_version": 1, "config": the RunConfig,
                            "epoch", "metrics", "versions"}      (JSON: no code)
    DIR/model.safetensors  the model's weights (safetensors: tensors only, no pickle at all)
    DIR/README.md          a model card: data, components, training, validation bounds, how to use it

:func:`read_model` reads such a folder, a checkpoint file, or ``hf://OWNER/NAME[@REVISION]`` (downloaded
through ``huggingface_hub``, ``pip install "pyro-vae[hub]"``) into the same checkpoint-like dict, so every
command that takes ``--checkpoint`` takes any of the three; :func:`load` gives the model itself. The
components a config names are rebuilt under the same trust rules as a checkpoint's
(:mod:`pyro_vae.model.rebuild`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import CheckpointError, ConfigError, first_line
from .model.vae import VAE
from .runtime.atomic import atomic_path
from .runtime.devices import resolve_device
from .training.checkpoint import load_checkpoint, load_weights, versions

EXPORT_FORMAT = "pyro-vae-model"
EXPORT_VERSION = 1
CONFIG_JSON, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
HUB_PREFIX = "hf://"


def read_model(path: str | Path) -> dict:
    """A checkpoint file, an exported folder or ``hf://REPO`` as a checkpoint-like dict (``config``,
    ``model_state``, ``epoch``, ``metrics``, ``versions``, ``format_version``; an exported model also has
    ``exported: True`` and no optimiser or RNG state)."""
    if str(path).startswith(HUB_PREFIX):
        path = download(str(path)[len(HUB_PREFIX) :])
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    return load_checkpoint(path)


def read_folder(folder: Path) -> dict:
    """An exported folder, read with ``json`` and ``safetensors`` only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (folder / CONFIG_JSON).is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is a folder but not an exported model (it needs {CONFIG_JSON} and {WEIGHTS})")
    try:
        meta = json.loads((folder / CONFIG_JSON).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{folder / CONFIG_JSON} is not JSON ({exc})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != EXPORT_FORMAT
        or meta.get("format_version") != EXPORT_VERSION
    ):
        raise CheckpointError(
            f"{folder / CONFIG_JSON} is not a pyro-vae model config (format {EXPORT_FORMAT} {EXPORT_VERSION})"
        )
    try:
        weights = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS} is not a readable safetensors file ({exc})") from None
    problems = [
        key
        for key, ok in (
            ("config", isinstance(meta.get("config"), dict)),
            ("epoch", type(meta.get("epoch")) is int),
            ("metrics", isinstance(meta.get("metrics"), list)),
        )
        if not ok
    ]
    if problems:
        raise CheckpointError(f"{folder / CONFIG_JSON} is damaged (malformed {', '.join(problems)})")
    return {
        "config": meta["config"],
        "model_state": weights,
        "epoch": meta["epoch"],
        "metrics": meta["metrics"],
        "versions": meta.get("versions", {}),
        "format_version": 2,
        "exported": EXPORT_VERSION,
    }


def load(path: str | Path, device: str = "auto", trust_modules: Iterable[str] = ()) -> VAE:
    """The trained model in a checkpoint file, an exported folder or ``hf://REPO``, on ``device``."""
    ckpt = read_model(path)
    config = RunConfig.from_checkpoint(ckpt, trust_modules)
    return load_weights(config.untrained_model(), ckpt).to(resolve_device(device))


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, trust_modules: Iterable[str] = ()) -> Path:
    """Write ``out_dir/{config.json, model.safetensors, README.md}`` for the model in ``checkpoint`` (each file
    atomically). The config is converted and checked first, so an export always loads back."""
    from safetensors.torch import save_file

    ckpt = read_model(checkpoint)
    config = RunConfig.from_checkpoint(ckpt, trust_modules)
    load_weights(config.untrained_model(), ckpt)  # the weights fit the architecture
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; export writes a folder")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "config": config.to_dict(),
        "epoch": ckpt["epoch"],
        "metrics": _json_metrics(ckpt["metrics"]),
        "versions": versions(),
    }
    # safetensors stores each tensor once, contiguous and unshared.
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in ckpt["model_state"].items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata={"format": EXPORT_FORMAT})
    with atomic_path(out / CONFIG_JSON) as tmp:
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
    with atomic_path(out / CARD) as tmp:
        tmp.write_text(model_card(config, ckpt, n_parameters(ckpt)))
    return out


def _json_metrics(metrics: list) -> list:
    return [{k: v for k, v in m.items() if isinstance(v, (int, float, str, type(None)))} for m in metrics]


def n_parameters(ckpt: dict) -> int:
    return sum(t.numel() for t in ckpt["model_state"].values() if isinstance(t, torch.Tensor))


def best_validation(metrics: list) -> tuple[float, int] | None:
    """The best validation ELBO in a run's records and its epoch, or ``None``."""
    scored = [(m["val_elbo"], m["epoch"]) for m in metrics if isinstance(m.get("val_elbo"), (int, float))]
    return max(scored) if scored else None


def describe_component(component) -> str:
    """``mog(num_components=10)``; a component from another module is prefixed ``module:``."""
    options = ", ".join(f"{k}={v}" for k, v in component.options.items() if v is not None)
    module = f"{component.module}:" if component.module else ""
    return f"{module}{component.name}" + (f"({options})" if options else "")


def model_card(config: RunConfig, ckpt: dict, parameters: int) -> str:
    """A short README for an exported model."""
    import tomli_w

    model, data, best = config.model, config.data, best_validation(ckpt["metrics"])
    last = ckpt["metrics"][-1].get("val_elbo") if ckpt["metrics"] else None
    bounds = (
        "not measured (no validation split)"
        if best is None
        else (
            f"best {best[0]:.2f} nats per image (epoch {best[1]}), last {last:.2f}"
            if last is not None
            else f"best {best[0]:.2f} nats per image (epoch {best[1]})"
        )
    )
    rows = [
        ("data", f"{data.dataset}, binarize = {data.binarize}, images {' x '.join(map(str, data.image_shape))}"),
        (
            "model",
            f"{model.structure}, latent {' + '.join(map(str, model.layer_dims()))}, {model.net.kind} "
            f"{list(model.net.hidden)} {model.net.activation}, {parameters:,} parameters",
        ),
        ("prior p(z)", describe_component(model.prior)),
        ("likelihood p(x|z)", describe_component(model.likelihood)),
        ("guide q(z|x)", describe_component(model.guide)),
        (
            "training",
            f"{ckpt['epoch']} epochs, objective {config.objective.kind}, Adam lr {config.optimizer.lr}, "
            f"batch {config.optimizer.batch_size}, seed {config.seed}",
        ),
        ("validation ELBO", bounds),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""---
library_name: pyro-vae
tags: [vae, pyro, variational-autoencoder]
---
# A pyro-vae model: {data.dataset} VAE

A variational autoencoder written as a Pyro model/guide pair and trained with SVI by
[pyro-vae](https://pypi.org/project/pyro-vae/) {ckpt.get("versions", {}).get("pyro_vae", "")}.
Bounds are log-likelihood bounds in nats per image (higher is better).

| | |
|---|---|
{table}

## Use

```bash
pip install pyro-vae
pyro-vae elbo --checkpoint THIS_FOLDER          # or --checkpoint hf://OWNER/NAME
pyro-vae sample --checkpoint THIS_FOLDER -n 64 --out samples.png
```

```python
import pyro_vae
vae = pyro_vae.load("THIS_FOLDER")
```

`model.safetensors` holds the weights (no pickle); `config.json` the run's config, which
`pyro-vae train --config` also reads as TOML:

```toml
{tomli_w.dumps(config.to_dict()).strip()}
```
"""


def download(repo: str) -> Path:
    """``OWNER/NAME[@REVISION]`` from the Hugging Face Hub into its local cache; the local folder."""
    hub = _hub()
    repo_id, _, revision = repo.partition("@")
    try:
        return Path(
            hub.snapshot_download(
                repo_id=repo_id, revision=revision or None, allow_patterns=[CONFIG_JSON, WEIGHTS, CARD]
            )
        )
    except Exception as exc:  # the hub's errors (offline, not found, no access) are many classes
        raise CheckpointError(
            f"could not download {HUB_PREFIX}{repo} ({type(exc).__name__}: {first_line(exc)})"
        ) from None


def push(folder: str | Path, repo: str) -> str:
    """Upload an exported folder to the Hugging Face Hub repository ``repo`` (created if missing); its URL."""
    hub = _hub()
    try:
        api = hub.HfApi()
        api.create_repo(repo_id=repo, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, allow_patterns=[CONFIG_JSON, WEIGHTS, CARD])
    except Exception as exc:  # the hub's errors (offline, no token, no access) are many classes
        raise CheckpointError(f"could not upload to {repo} ({type(exc).__name__}: {first_line(exc)})") from None
    return f"https://huggingface.co/{repo}"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ConfigError('the Hugging Face Hub needs huggingface_hub: pip install "pyro-vae[hub]"') from None
    return huggingface_hub
