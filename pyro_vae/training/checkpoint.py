"""Checkpoints: one file holding tensors and plain data only.

Layout (a dict)::

    format        "pyro-vae-checkpoint", format_version 2
    config        the run's RunConfig as plain data (pyro_vae.config; format 1 held {"model", "data", "train"},
                  converted when read by RunConfig.from_checkpoint)
    model_state   the VAE's state_dict
    optim_state   the torch.optim.Adam state dict (version 0.1: pyro.optim.Adam's, per parameter name)
    epoch         epochs completed
    rng           torch / CUDA / numpy / python RNG states
    metrics       the per-epoch records also written to metrics.jsonl
    versions      pyro-vae, pyro-ppl, torch, python

It is read with ``torch.load(weights_only=True)`` (no pickled code runs) and the model is rebuilt from
``config`` (:meth:`pyro_vae.config.RunConfig.from_checkpoint`); writes go to a temporary file that is renamed over
the target, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import platform
import random
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch

from ..errors import CheckpointError
from ..model.vae import VAE
from ..runtime.atomic import atomic_path
from ..version import __version__

FORMAT = "pyro-vae-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("config", "model_state", "optim_state", "epoch", "rng", "metrics")


def versions() -> dict:
    # str(): torch.__version__ is a TorchVersion, which weights_only loading refuses.
    return {
        "pyro_vae": __version__,
        "pyro": str(pyro.__version__),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus format and versions) atomically to ``path``."""
    with atomic_path(path) as tmp:
        write_checkpoint(tmp, payload)


def write_checkpoint(path: str | Path, payload: dict) -> None:
    """``payload`` plus format and versions, written to ``path`` as it is (callers make it atomic)."""
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(), **payload}, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint onto the CPU; :class:`CheckpointError` if it is missing or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":  # torch.save's zip archive, or its legacy pickle
        raise CheckpointError(f"{path} is not a checkpoint (not a file written by torch.save)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it refuses anyway; the error says why
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes can fail decoding in any way (KeyError, EOFError, ...)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's weights-only refusal is a long text; its "WeightsUnpickler error" line says why.
        reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {reason[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint")
    if ckpt.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt.get('format_version')!r}; this pyro-vae reads "
            f"formats {' and '.join(map(str, READABLE_VERSIONS))}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    _check_layout(ckpt, path)
    return ckpt


def _check_layout(ckpt: dict, path: Path) -> None:
    """The types the rest of the code relies on, so that a damaged or crafted file fails here, in one line."""
    config = ckpt["config"]
    problems = [
        not (isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in ("model", "data"))),
        not (
            isinstance(ckpt["model_state"], dict)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model_state"].items())
        ),
        not isinstance(ckpt["optim_state"], dict),
        not (type(ckpt["epoch"]) is int and ckpt["epoch"] >= 0),
        not isinstance(ckpt["rng"], dict),
        not (isinstance(ckpt["metrics"], list) and all(isinstance(m, dict) for m in ckpt["metrics"])),
        not isinstance(ckpt.get("partial_epoch") or {}, dict),
    ]
    names = ("config", "model_state", "optim_state", "epoch", "rng", "metrics", "partial_epoch")
    bad = [name for name, problem in zip(names, problems) if problem]
    if bad:
        raise CheckpointError(f"{path} is a damaged checkpoint (malformed {', '.join(bad)})")


def load_weights(vae: VAE, ckpt: dict) -> VAE:
    """``vae`` (rebuilt from the checkpoint's config) with the checkpoint's trained weights."""
    try:
        vae.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the stored architecture: {exc}") from None
    return vae


def adam_state_from_pyro(pyro_state: dict, vae: VAE, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer``'s state dict rebuilt from a version-0.1 checkpoint's ``pyro.optim.Adam`` state.

    Pyro kept one torch Adam per parameter, keyed by its param-store name. Adam is elementwise, so each
    parameter's step count and moment estimates carry over unchanged into the one optimizer.
    """
    state = optimizer.state_dict()
    index = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
    for name, param in vae.pyro_named_parameters().items():
        if name in pyro_state:
            (moments,) = pyro_state[name]["state"].values()
            state["state"][index[id(param)]] = moments
    return state


def is_pyro_optim_state(optim_state: dict) -> bool:
    """True for ``pyro.optim`` state (keyed by parameter name), false for a torch optimizer's state dict."""
    return set(optim_state) != {"state", "param_groups"}
