"""A ready conv config in pyro-vae against the same network written independently in plain PyTorch.

    python benchmarks/conv_replica.py --data-dir DIR --config configs/tutorial-keras-conv-z2.toml \\
        --epochs 10 --seeds 0 1 2 [--limit 2000] [--loops ...] [--set model.net.init=torch] [--json OUT]

For each seed, three trainings on the same data (the run's training split, its dynamic binarization, its batch
order), from the same initial weights, evaluated on the same fixed-binarization test images:

* ``pyro-vae``: ``RunConfig.build(...).fit()``, what ``pyro-vae train --config`` runs (Pyro's ``Trace_ELBO``; kept
  in ``--keep`` for ``pyro-vae plot``);
* ``replica``: the network built here from ``torch.nn`` layers by its own code (:func:`replica_networks`), the
  initial weights copied from pyro-vae's model, trained by a hand-written loop: reparameterised sample,
  Bernoulli log-likelihood of the logits, closed-form KL to N(0, I), ``torch.optim.Adam`` at the config's rate;
* ``replica-own-init``: the same loop from the replica's own initial weights (drawn here from the seed, by the
  config's rule: PyTorch's defaults, or Glorot-uniform weights and zero biases for ``init = "glorot"``).

Reported per run and epoch: the test ELBO (closed-form KL, one sample, nats per image) and the active units
(posterior-mean variance > 0.01). pyro-vae and the replica from the same weights see the same batches; their
latent noise differs (each draws its own), so their trajectories agree in distribution, not step by step.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import tomllib
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae import Callback, RunConfig, VAEData
from pyro_vae.training.trainer import epoch_seed


def replica_networks(config: RunConfig) -> tuple[nn.Module, nn.Module]:
    """Encoder ``x (n, 784) -> (n, 2 d)`` and decoder ``z (n, d) -> logits (n, 784)`` for a 28x28 grey conv config,
    written from the layer list, not from pyro_vae.model.networks (the same layout, parameters in the same order)."""
    net, d = config.model.net, config.model.latent_dim
    c1, c2 = net.channels
    hidden = net.hidden[0]
    act = {"relu": nn.ReLU}[net.activation]
    if net.layout == "keras":
        encoder = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, c1, 3, 2, 1), act(), nn.Conv2d(c1, c2, 3, 2, 1),
                                act(), nn.Flatten(), nn.Linear(c2 * 49, hidden), act(), nn.Linear(hidden, 2 * d))
        decoder = nn.Sequential(nn.Linear(d, c2 * 49), act(), nn.Unflatten(1, (c2, 7, 7)),
                                nn.ConvTranspose2d(c2, c2, 3, 2, 1, output_padding=1), act(),
                                nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=1), act(),
                                nn.Conv2d(c1, 1, 3, 1, 1), nn.Flatten())
    else:  # pyro-vae's mirrored layout: kernel 4, stride 2, a dense layer of `hidden` both ways
        encoder = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, c1, 4, 2, 1), act(), nn.Conv2d(c1, c2, 4, 2, 1),
                                act(), nn.Flatten(), nn.Linear(c2 * 49, hidden), act(), nn.Linear(hidden, 2 * d))
        decoder = nn.Sequential(nn.Linear(d, hidden), act(), nn.Linear(hidden, c2 * 49), act(),
                                nn.Unflatten(1, (c2, 7, 7)), nn.ConvTranspose2d(c2, c1, 4, 2, 1), act(),
                                nn.ConvTranspose2d(c1, 1, 4, 2, 1), nn.Flatten())
    return encoder, decoder


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """pyro-vae's parameters into the replica, in registration order, shapes checked (the layouts must agree)."""
    ours = [p for p in source.parameters()]
    theirs = list(target.parameters())
    if [tuple(p.shape) for p in ours] != [tuple(p.shape) for p in theirs]:
        raise SystemExit(f"layouts differ: {[tuple(p.shape) for p in ours]} vs {[tuple(p.shape) for p in theirs]}")
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)


def negative_elbo(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: -ELBO with one reparameterised sample and the closed-form KL; and the posterior means."""
    loc, log_var = encoder(x).chunk(2, dim=-1)
    z = loc + torch.exp(0.5 * log_var) * torch.randn_like(loc)
    recon = -F.binary_cross_entropy_with_logits(decoder(z), x, reduction="none").sum(-1)
    kl = 0.5 * (loc.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    return kl - recon, loc


@torch.no_grad()
def test_scores(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor) -> dict:
    torch.manual_seed(0)
    loss, means = negative_elbo(encoder, decoder, x)
    variances = means.var(0)
    return {"elbo": -loss.mean().item(), "elbo_stderr": loss.std().item() / math.sqrt(len(loss)),
            "active_units": int((variances > 0.01).sum()), "latent_variances": [round(v, 6) for v in variances.tolist()]}


def train_replica(config: RunConfig, data: VAEData, encoder: nn.Module, decoder: nn.Module, test: torch.Tensor,
                  epochs: int, seed: int) -> list[dict]:  # fmt: skip
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.optimizer.lr)
    rows = []
    for epoch in range(1, epochs + 1):
        torch.manual_seed(epoch_seed(seed, epoch) + 1)  # the replica's own latent noise
        start = time.perf_counter()
        for x in data.train_batches(config.optimizer.batch_size, epoch_seed(config.seed, epoch)):
            loss, _ = negative_elbo(encoder, decoder, x)
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
        rows.append({"epoch": epoch, "seconds": time.perf_counter() - start, **test_scores(encoder, decoder, test)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class TestScores(Callback):
    """After each epoch of ``fit``, the test scores of the model as it is (the benchmark's own measurement)."""

    def __init__(self, test: torch.Tensor) -> None:
        self.test, self.rows, self.start = test, [], time.perf_counter()

    def on_epoch_end(self, trainer, record: dict) -> None:
        vae = trainer.vae
        scores = test_scores(vae.encoder, lambda z: vae.decoder(z)[..., 0, :], self.test)
        self.rows.append({"epoch": record["epoch"], "seconds": record["seconds"], **scores})
        print(json.dumps(self.rows[-1]), flush=True)


def train_pyro_vae(config: RunConfig, test: torch.Tensor, keep: Path | None) -> list[dict]:
    """``RunConfig.build(...).fit()``, as ``pyro-vae train --config`` runs it; the run folder is ``keep`` (for
    ``pyro-vae plot`` and ``elbo`` afterwards) or a temporary one."""
    scores = TestScores(test)
    with tempfile.TemporaryDirectory() as tmp, pyro.get_param_store().scope():
        trainer = config.build(keep or tmp, device="cpu", progress=False, overwrite=True, callbacks=[scores])
        trainer.fit()
    return scores.rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" /
                   "tutorial-keras-conv-z2.toml")  # fmt: skip
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--limit", type=int, default=2000, help="test images evaluated")
    p.add_argument("--loops", nargs="+", default=["pyro-vae", "replica", "replica-own-init"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override, e.g. model.net.init=torch (TOML values: numbers, strings, [lists])")
    p.add_argument("--keep", type=Path, default=None, help="keep pyro-vae's runs here (KEEP/seedN/ckpt.pt)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value  # a bare word: a string
    results = []
    for seed in args.seeds:
        config = RunConfig.read_toml(args.config, {"data.root": args.data_dir, "seed": seed,
                                                   "schedule.epochs": args.epochs, **overrides})  # fmt: skip
        data = VAEData(config.data, args.data_dir, splits=("train", "test"))
        test = data.observed("test")[: args.limit]
        initial = config.build_model()  # the weights RunConfig.build starts from (build_model seeds itself)
        for loop in args.loops:
            print(f"# seed {seed}: {loop}", flush=True)
            if loop == "pyro-vae":
                rows = train_pyro_vae(config, test, args.keep and args.keep / f"seed{seed}")
            else:
                torch.manual_seed(seed)
                encoder, decoder = replica_networks(config)
                if config.model.net.init == "glorot":  # Keras's start: Glorot-uniform weights, zero biases
                    for layer in [*encoder.modules(), *decoder.modules()]:
                        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                            nn.init.xavier_uniform_(layer.weight)
                            nn.init.zeros_(layer.bias)
                if loop == "replica":
                    copy_weights(initial.encoder, encoder)
                    copy_weights(initial.decoder, decoder)
                rows = train_replica(config, data, encoder, decoder, test, args.epochs, seed)
            results.append({"seed": seed, "loop": loop, "epochs": rows})
    summary = {}
    for loop in args.loops:
        last = [r["epochs"][-1] for r in results if r["loop"] == loop]
        summary[loop] = {"elbo_median": statistics.median(r["elbo"] for r in last),
                         "elbo_by_seed": [round(r["elbo"], 2) for r in last],
                         "active_units_by_seed": [r["active_units"] for r in last]}
        print(loop, json.dumps(summary[loop]))
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), "epochs": args.epochs, "results": results,
                                         "summary": summary}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
