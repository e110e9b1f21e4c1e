"""A ready conv config in pyro-vae against the same network written independently in plain PyTorch.

    python benchmarks/conv_replica.py --data-dir DIR --config configs/tutorial-keras-conv-z2.toml \\
        --epochs 10 --seeds 0 1 2 [--limit 2000] [--loops ...] [--set model.net.init=torch] [--json OUT]

For each seed, three trainings on the same data (the run's training split, its dynamic binarization, its batch
order), from the same initial weights, evaluated on the same fixed-binarization test images:

* ``pyro-vae``: ``start_run(config, ...).fit()``, what ``pyro-vae train --config`` runs (Pyro's ``Trace_ELBO``; kept
  in ``--keep`` for ``pyro-vae plot``);
* ``replica``: the network built here from ``torch.nn`` layers by its own code (:func:`replica_networks`), the
  initial weights copied from pyro-vae's model, trained by a hand-written loop: reparameterised sample,
  Bernoulli log-likelihood of the logits, closed-form KL to N(0, I), ``torch.optim.Adam`` at the config's rate;
* ``replica-mc-kl``: ``replica`` trained with Pyro's one-sample KL estimate instead of the closed form (a check on
  whether an instability is the estimator's or pyro-vae's).
* ``replica-own-init``: the same loop from the replica's own initial weights (drawn here from the seed, by the
  config's rule: PyTorch's defaults, or Glorot-uniform weights and zero biases for ``init = "glorot"``).

Reported per run and epoch: the test ELBO (closed-form KL, one sample, nats per image) and the active units
(posterior-mean variance > 0.01). pyro-vae and the replica from the same weights see the same batches; their
latent noise differs (each draws its own), so their trajectories agree in distribution, not step by step.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae import Callback, RunConfig, VAEData, start_run
from pyro_vae.errors import TrainingError
from pyro_vae.training.trainer import epoch_seed


class Residual(nn.Module):
    """``x + conv3x3(act(conv3x3(act(x))))``, the residual config's block, written here."""

    def __init__(self, channels: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            act(), nn.Conv2d(channels, channels, 3, padding=1), act(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def replica_networks(config: RunConfig, shape: tuple[int, int, int], outputs: int) -> tuple[nn.Module, nn.Module]:
    """Encoder ``x (n, C*H*W) -> (n, 2 d)`` and decoder ``z (n, d) -> (n, outputs*C*H*W)`` (output-major, then
    channel, then pixel) for a conv or residual config, written from the layer list, not from
    pyro_vae.model.networks (the same layout, parameters in the same order). Sides must halve exactly."""
    net, d = config.model.net, config.model.latent_dim
    channels, hidden, (c, h, w) = net.channels, net.hidden[0], shape
    act = {"relu": nn.ReLU, "elu": nn.ELU}[net.activation]
    residual = net.kind == "resnet"
    stages = len(channels)
    if h % 2**stages or w % 2**stages or (residual and net.layout == "keras"):
        raise SystemExit("the replica covers sides that halve exactly, and the residual net in the mirror layout")
    kernel = 3 if net.layout == "keras" else 4
    encoder: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
    for n_in, n_out in zip((c, *channels), channels):
        encoder += [nn.Conv2d(n_in, n_out, kernel, 2, 1), act()] + ([Residual(n_out, act)] if residual else [])
    small = (channels[-1], h >> stages, w >> stages)
    encoder += [nn.Flatten(), nn.Linear(math.prod(small), hidden), act(), nn.Linear(hidden, 2 * d)]
    if net.layout == "keras":  # dense straight to the map; transposed stages keep the channels; a 3x3 to the output
        decoder: list[nn.Module] = [nn.Linear(d, math.prod(small)), act(), nn.Unflatten(1, small)]
        for n_in, n_out in zip(reversed(channels), reversed(channels)):
            decoder += [nn.ConvTranspose2d(n_in, n_out, 3, 2, 1, output_padding=1), act()]
        decoder += [nn.Conv2d(channels[0], outputs * c, 3, 1, 1), nn.Flatten()]
    else:  # pyro-vae's mirrored layout: kernel 4, stride 2, a dense layer of `hidden` both ways
        decoder = [nn.Linear(d, hidden), act(), nn.Linear(hidden, math.prod(small)), act(), nn.Unflatten(1, small)]
        outs = (*reversed(channels[:-1]), outputs * c)
        for i, (n_in, n_out) in enumerate(zip(reversed(channels), outs)):
            decoder += [Residual(n_in, act)] if residual else []
            decoder += [nn.ConvTranspose2d(n_in, n_out, 4, 2, 1)] + ([act()] if i < stages - 1 else [])
        decoder.append(nn.Flatten())
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def bernoulli_log_likelihood(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image: log p(x | logits ``out``), summed over pixels."""
    return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)


def logistic_mixture_log_likelihood(
    out: torch.Tensor, x: torch.Tensor, channels: int, components: int, min_scale: float = 1e-3, levels: int = 256
) -> torch.Tensor:
    """Per image: log p(x) under PixelCNN++'s discretized logistic mixture (Salimans et al. 2017, their
    ``discretized_mix_logistic_loss`` moved to pixels in [0, 1]), from ``out`` ``(n, 4*K*C*L)`` read the way the
    config's likelihood reads it: per (part, component, channel, pixel), the parts being the mixture logit's share
    of each channel, sigmoid location, min_scale + softplus scale, tanh channel coefficient."""
    n = len(out)
    part = out.view(n, 4, components, channels, -1)
    log_weights = torch.log_softmax(part[:, 0].sum(2), dim=1)  # (n, K, L)
    loc, scale, coeff = torch.sigmoid(part[:, 1]), min_scale + F.softplus(part[:, 2]), torch.tanh(part[:, 3])
    x = x.view(n, 1, channels, -1)
    if channels == 3:  # the green mean moves with red, the blue with red and green
        loc = torch.stack(
            [
                loc[:, :, 0],
                loc[:, :, 1] + coeff[:, :, 0] * x[:, :, 0],
                loc[:, :, 2] + coeff[:, :, 1] * x[:, :, 0] + coeff[:, :, 2] * x[:, :, 1],
            ],
            dim=2,
        )
    half = 0.5 / (levels - 1)
    centred = x - loc
    upper, lower, mid = (centred + half) / scale, (centred - half) / scale, centred / scale
    log_below_upper = upper - F.softplus(upper)  # log sigmoid: all the mass below the top level's upper edge
    log_above_lower = -F.softplus(lower)
    delta = torch.sigmoid(upper) - torch.sigmoid(lower)
    log_density_mid = mid - torch.log(scale) - 2 * F.softplus(mid) + math.log(2 * half)  # where delta underflows
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp_min(1e-12)), log_density_mid)
    log_mass = torch.where(x < half, log_below_upper, torch.where(x > 1 - half, log_above_lower, inner))
    return torch.logsumexp(log_mass.sum(2) + log_weights, dim=1).sum(-1)


def log_likelihood(config: RunConfig, shape: tuple[int, int, int]):
    """The replica's ``log p(x | decoder output)`` for the config's likelihood, and the outputs per pixel value."""
    like = config.model.likelihood
    if like.name == "bernoulli":
        return bernoulli_log_likelihood, 1
    if like.name == "logistic-mixture":
        k = like.options.get("mixture_components", 5)
        return functools.partial(logistic_mixture_log_likelihood, channels=shape[0], components=k), 4 * k
    raise SystemExit(f"the replica covers the bernoulli and logistic-mixture likelihoods, not {like.name}")


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """pyro-vae's parameters into the replica, in registration order, shapes checked (the layouts must agree)."""
    ours = [p for p in source.parameters()]
    theirs = list(target.parameters())
    if [tuple(p.shape) for p in ours] != [tuple(p.shape) for p in theirs]:
        raise SystemExit(f"layouts differ: {[tuple(p.shape) for p in ours]} vs {[tuple(p.shape) for p in theirs]}")
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)


def negative_elbo(
    encoder: nn.Module, decoder, x: torch.Tensor, loglik, monte_carlo_kl: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: -ELBO with one reparameterised sample and the closed-form KL (or, with ``monte_carlo_kl``, the
    one-sample estimate log q(z|x) - log p(z) at that sample, as Pyro's ``Trace_ELBO`` forms it); and the posterior
    means."""
    loc, log_var = encoder(x).chunk(2, dim=-1)
    eps = torch.randn_like(loc)
    z = loc + torch.exp(0.5 * log_var) * eps
    if monte_carlo_kl:  # log N(z; loc, scale) with z's own gradient kept, minus log N(z; 0, 1)
        log_q = -0.5 * ((z - loc) / torch.exp(0.5 * log_var)).pow(2) - 0.5 * log_var
        kl = (log_q + 0.5 * z.pow(2)).sum(-1)
    else:
        kl = 0.5 * (loc.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    return kl - loglik(decoder(z), x), loc


@torch.no_grad()
def test_scores(encoder: nn.Module, decoder, x: torch.Tensor, loglik, chunk: int = 500) -> dict:
    torch.manual_seed(0)
    pieces = [negative_elbo(encoder, decoder, x[i : i + chunk], loglik) for i in range(0, len(x), chunk)]
    loss, means = torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
    variances = means.var(0)
    return {
        "elbo": -loss.mean().item(),
        "elbo_stderr": loss.std().item() / math.sqrt(len(loss)),
        "active_units": int((variances > 0.01).sum()),
        "latent_variances": [round(v, 6) for v in variances.tolist()],
    }


def train_replica(
    config: RunConfig,
    data: VAEData,
    encoder: nn.Module,
    decoder: nn.Module,
    test: torch.Tensor,
    loglik,
    epochs: int,
    seed: int,
    monte_carlo_kl: bool = False,
) -> list[dict]:
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.optimizer.lr)
    rows = []
    for epoch in range(1, epochs + 1):
        torch.manual_seed(epoch_seed(seed, epoch) + 1)  # the replica's own latent noise
        start = time.perf_counter()
        for step, x in enumerate(data.train_batches(config.optimizer.batch_size, epoch_seed(config.seed, epoch)), 1):
            loss, _ = negative_elbo(encoder, decoder, x, loglik, monte_carlo_kl)
            if not torch.isfinite(loss.sum()):  # where pyro-vae's trainer would stop; the loop stops too
                rows.append({"epoch": epoch, "nonfinite_loss_at_step": step})
                print(json.dumps(rows[-1]), flush=True)
                return rows
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
        scores = test_scores(encoder, decoder, test, loglik)
        rows.append({"epoch": epoch, "seconds": time.perf_counter() - start, **scores})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def pyro_vae_decoder(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    """pyro-vae's decoder with its output ``(n, outputs, C*H*W)`` laid out as the replica's ``(n, outputs*C*H*W)``."""
    return lambda z: vae.decoder(z).flatten(-2)


class TestScores(Callback):
    """After each epoch of ``fit``, the test scores of the model as it is (the benchmark's own measurement)."""

    def __init__(self, test: torch.Tensor, loglik) -> None:
        self.test, self.loglik, self.rows = test, loglik, []

    def on_epoch_end(self, trainer, record: dict) -> None:
        scores = test_scores(trainer.vae.encoder, pyro_vae_decoder(trainer.vae), self.test, self.loglik)
        self.rows.append({"epoch": record["epoch"], "seconds": record["seconds"], **scores})
        print(json.dumps(self.rows[-1]), flush=True)


def train_pyro_vae(config: RunConfig, test: torch.Tensor, loglik, keep: Path | None) -> list[dict]:
    """``start_run(config, ...).fit()``, as ``pyro-vae train --config`` runs it; the run folder is ``keep`` (for
    ``pyro-vae plot`` and ``elbo`` afterwards) or a temporary one."""
    scores = TestScores(test, loglik)
    with tempfile.TemporaryDirectory() as tmp, pyro.get_param_store().scope():
        trainer = start_run(config, keep or tmp, device="cpu", progress=False, overwrite=True, callbacks=[scores])
        try:
            trainer.fit()
        except TrainingError as e:  # a non-finite loss or gradient: recorded, as the replica records its own
            scores.rows.append({"epoch": len(scores.rows) + 1, "stopped": str(e)})
            print(json.dumps(scores.rows[-1]), flush=True)
    return scores.rows


@torch.no_grad()
def likelihood_agreement(vae, loglik, x: torch.Tensor) -> float:
    """Largest |replica log p(x|z) - pyro-vae's likelihood log p(x|z)| per image at the starting weights: the
    replica reads the decoder's output as the config's likelihood does (a cross-check of the replica itself)."""
    z = torch.randn(len(x), vae.latent_dim, generator=torch.Generator().manual_seed(0))
    out = vae.decoder(z)
    return (loglik(out.flatten(-2), x) - vae.likelihood.log_prob(out, x)).abs().max().item()


def write_colour_mnist(mnist_root: str, out: Path) -> None:
    """MNIST's digits as 8-bit RGB at 32x32 into ``out`` (an ``.npz`` with train and test, for ``--dataset array``):
    each digit padded by 2 and painted ``ink * x + paper * (1 - x)`` with its own random ink and paper colours (a
    colour set with real structure, for colour configs where CIFAR-10 is not at hand)."""
    from torchvision.datasets import MNIST

    g = torch.Generator().manual_seed(0)
    arrays = {}
    for name, train in (("train", True), ("test", False)):
        x = F.pad(MNIST(mnist_root, train=train, download=False).data.float() / 255, (2, 2, 2, 2))[..., None]
        ink, paper = torch.rand(2, len(x), 1, 1, 3, generator=g)
        arrays[name] = (255 * (ink * x + paper * (1 - x))).round().to(torch.uint8).numpy()
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument(
        "--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "tutorial-keras-conv-z2.toml"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--limit", type=int, default=2000, help="test images evaluated")
    p.add_argument("--loops", nargs="+", default=["pyro-vae", "replica", "replica-own-init"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override, e.g. model.net.init=torch (TOML values: numbers, strings, [lists])",
    )
    p.add_argument("--keep", type=Path, default=None, help="keep pyro-vae's runs here (KEEP/seedN/ckpt.pt)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--colour-mnist",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help="train on MNIST painted in random colours at 32x32 (written to FILE.npz from --data-dir's "
        "MNIST when missing) instead of the config's data: for colour configs",
    )
    args = p.parse_args()
    data_dir = args.data_dir
    if args.colour_mnist:
        if not args.colour_mnist.exists():
            write_colour_mnist(args.data_dir, args.colour_mnist)
        data_dir = str(args.colour_mnist)
        args.set = ["data.dataset=array", "data.test_size=0", *args.set]
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value  # a bare word: a string
    results = []
    for seed in args.seeds:
        config = RunConfig.read_toml(
            args.config, {"data.root": data_dir, "seed": seed, "schedule.epochs": args.epochs, **overrides}
        )
        data = VAEData(config.data, data_dir, splits=("train", "test"))
        test = data.observed("test")[: args.limit]
        initial = config.build_model()  # the weights start_run starts from (build_model seeds itself)
        shape = tuple(config.data.image_shape)
        loglik, outputs = log_likelihood(config, shape)
        print(
            f"# seed {seed}: |replica - pyro-vae| log p(x|z) at the start, largest: "
            f"{likelihood_agreement(initial, loglik, test[:200]):.2e} nats",
            flush=True,
        )
        for loop in args.loops:
            print(f"# seed {seed}: {loop}", flush=True)
            if loop == "pyro-vae":
                rows = train_pyro_vae(config, test, loglik, args.keep and args.keep / f"seed{seed}")
            else:
                torch.manual_seed(seed)
                encoder, decoder = replica_networks(config, shape, outputs)
                if config.model.net.init == "glorot":  # Keras's start: Glorot-uniform weights, zero biases
                    for layer in [*encoder.modules(), *decoder.modules()]:
                        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                            nn.init.xavier_uniform_(layer.weight)
                            nn.init.zeros_(layer.bias)
                if loop in ("replica", "replica-mc-kl"):
                    copy_weights(initial.encoder, encoder)
                    copy_weights(initial.decoder, decoder)
                rows = train_replica(
                    config, data, encoder, decoder, test, loglik, args.epochs, seed, loop == "replica-mc-kl"
                )
            results.append({"seed": seed, "loop": loop, "epochs": rows})
    summary = {}
    for loop in args.loops:
        last = [r["epochs"][-1] for r in results if r["loop"] == loop]
        summary[loop] = {
            "elbo_median": statistics.median(r.get("elbo", math.nan) for r in last),
            "elbo_by_seed": [round(r.get("elbo", math.nan), 2) for r in last],
            "active_units_by_seed": [r.get("active_units") for r in last],
        }
        print(loop, json.dumps(summary[loop]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"config": str(args.config), "epochs": args.epochs, "results": results, "summary": summary}, indent=1
            )
        )


if __name__ == "__main__":
    main()
