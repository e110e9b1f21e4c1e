"""Training throughput: plain PyTorch vs stock Pyro vs what ``pyro-vae train`` runs, in one run.

Three training loops over the same networks, the same device-resident data and the same batches
(shuffled, dynamically binarized, Bernoulli likelihood, Adam at the same learning rate):

  plain       the reference: a hand-written PyTorch loop with the analytic-KL loss and
              ``torch.optim.Adam`` with its defaults, as in pytorch/examples' vae/main.py;
  stock-pyro  ``SVI(vae.model, vae.guide, pyro.optim.Adam, Trace_ELBO())`` stepped per batch, as in
              Pyro's VAE example (Pyro's default validation on);
  pyro-vae    ``Trainer.train_epoch``: exactly the loop ``pyro-vae train`` runs (the step compiled, under the
              command line's runtime policy);
  pyro-vae-no-compile
              the same with ``--no-compile`` (the traced ``JitTrace_ELBO`` step);
  numpyro, numpyro-scan
              the peer: the same MLP VAE in NumPyro, a jitted step per batch / the epoch in one
              ``lax.scan`` (``benchmarks/numpyro_vae.py``; run when ``pip install "pyro-vae[bench]"`` put
              numpyro and jax there, MLP on the CPU only). Reported with their ratio of pyro-vae to them.

Each round times one short epoch (``--train-images``, 100 batches by default) of each loop, in an
order that rotates from round to round, after ``--warmup-rounds`` untimed rounds: short rounds, many
of them, because a shared machine's speed drifts by ±15 % within seconds. Reported: images/s
(median, min and max over rounds), the ratios pyro-vae/plain and stock-pyro/plain (median of the
per-round ratios: each round's epochs ran back to back, so slow phases of the machine cancel), peak
memory, and each loop's epoch time against the network's FLOP bound on this machine (a
60,000-image epoch; training FLOPs counted by torch's FlopCounterMode, divided by the FLOP/s a large
float32 matmul reaches here). Peak memory on CUDA is ``max_memory_allocated`` per
loop; on CPU it is the peak RSS of a separate process that trains only that loop for one epoch.

    python benchmarks/throughput.py --data-dir ../shared/data                 # CPU, MLP 784-400-20, batch 128
    python benchmarks/throughput.py --data-dir ../shared/data --net conv --device cuda
    python benchmarks/throughput.py --data-dir ../shared/data --structure conditional   # the conditional VAE

With ``--structure conditional`` every loop trains the conditional VAE (the digit's one-hot label beside the pixels
in the encoder and beside z in the decoder): the plain loop concatenates the one-hot vectors itself, the Pyro loops
get the labels packed into the batch, as ``pyro-vae train`` does. With ``--structure semi-supervised`` they train M2
with the labels of ``--labelled`` images: the Pyro loops with ``TraceEnum_ELBO`` (the label enumerated), the plain
loop summing the 10 classes by hand (:func:`plain_m2_step`). With ``--structure hierarchical --latent-dims 100,50``
they train the model with those latent layers (``--guide diagonal``: bottom-up; ``ladder``: top-down), the plain
loop on the hand-written layered ELBO (:func:`plain_layered_step`: per-layer closed-form KLs where they exist).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pyro
import pyro.optim
import torch
import torch.nn.functional as F
from numpyro_vae import NUMPYRO_LOOPS, NumPyroLoops
from numpyro_vae import available as numpyro_available
from pyro.infer import SVI, Trace_ELBO
from torch.utils.flop_counter import FlopCounterMode

from pyro_vae import (
    VAE,
    Bernoulli,
    DataConfig,
    NetConfig,
    RunConfig,
    RuntimePolicy,
    StandardNormal,
    Trainer,
    VAEData,
    runtime_policy,
)
from pyro_vae.data.vae_data import keep_labels
from pyro_vae.inference.layered import analytic_layered_elbo
from pyro_vae.model.guides import DiagonalGaussianGuide, LadderGuide
from pyro_vae.model.structures import structure_class
from pyro_vae.training.trainer import epoch_seed

COMMAND_LINE = RuntimePolicy.command_line(thread_budget=False)
TORCH_LOOPS = ("plain", "stock-pyro", "pyro-vae", "pyro-vae-no-compile")
TRAINER_LOOPS = {"pyro-vae": True, "pyro-vae-no-compile": False}  # loop -> objective.compile
LOOPS = TORCH_LOOPS + NUMPYRO_LOOPS
FULL_EPOCH = 60_000  # images in an MNIST training epoch: epoch times are quoted for this many


def plain_step(
    vae: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference step: reparameterised sample, Bernoulli log-likelihood, closed-form KL to N(0, I) (with
    ``labels``: the conditional VAE's, each network given the one-hot label)."""
    hot = None if labels is None else F.one_hot(labels, len(vae.class_names)).to(x.dtype)
    loc, logvar = (vae.encoder(x) if hot is None else vae.encoder(x, hot)).chunk(2, dim=-1)
    z = loc + torch.exp(0.5 * logvar) * torch.randn_like(loc)
    logits = vae.decoder(z if hot is None else torch.cat([z, hot], -1))[..., 0, :]
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * (loc.pow(2) + logvar.exp() - 1 - logvar).sum()
    loss = recon + kl
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def plain_m2_step(
    vae: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor, weight: float
) -> torch.Tensor:
    """M2's loss written by hand: labelled rows -(ELBO(x, y) + log p(y)) - weight * log q(y|x); unlabelled rows
    -(sum_y q(y|x) (ELBO(x, y) + log p(y)) + H(q(y|x))), the 10 classes as one batch of 10 x rows."""
    k = len(vae.class_names)
    known = labels >= 0
    log_q_y = torch.log_softmax(vae.classifier(x), -1)
    xs = torch.cat([x[known], x[~known].repeat(k, 1)])
    unknown = int((~known).sum())
    ys = torch.cat([labels[known], torch.arange(k, device=x.device).repeat_interleave(unknown)])
    hot = F.one_hot(ys, k).to(x.dtype)
    loc, logvar = vae.encoder(xs, hot).chunk(2, dim=-1)
    z = loc + torch.exp(0.5 * logvar) * torch.randn_like(loc)
    logits = vae.decoder(torch.cat([z, hot], -1))[..., 0, :]
    recon = -F.binary_cross_entropy_with_logits(logits, xs, reduction="none").sum(-1)
    elbo = recon - 0.5 * (loc.pow(2) + logvar.exp() - 1 - logvar).sum(-1) - math.log(k)  # log p(y) = -log K
    n_known = int(known.sum())
    labelled = elbo[:n_known].sum() + weight * log_q_y[known].gather(1, labels[known, None]).sum()
    q = log_q_y[~known].exp()  # (unknown, K)
    unlabelled = (q * (elbo[n_known:].view(k, unknown).T - log_q_y[~known])).sum()
    loss = -(labelled + unlabelled)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def plain_layered_step(vae: VAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels=None) -> torch.Tensor:
    """A model with several latent layers, trained on its hand-written layered ELBO (plain torch, no Pyro)."""
    loss = -analytic_layered_elbo(vae, x).elbo.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


class Loops:
    """One model per loop, all starting from the same weights; ``run(name, epoch)`` trains one epoch."""

    def __init__(self, args: argparse.Namespace, data: VAEData) -> None:
        self.args, self.data = args, data
        net = NetConfig(args.net, tuple(args.hidden))
        self.models = {}
        cls = structure_class(args.structure)
        classes = {"class_names": tuple(map(str, range(10)))} if cls.needs_labels else {}
        if cls.enumerates:
            classes["classifier_weight"] = self.weight = 0.1 * data.count("train") / args.labelled
            data.labels["train"] = keep_labels(data.labels["train"], args.labelled, 0, 10)
        dims = tuple(args.latent_dims or (args.latent_dim,))
        if len(dims) > 1:
            classes.update(latent_dims=dims, layer_hidden=tuple(args.layer_hidden))
        family = LadderGuide if args.guide == "ladder" else DiagonalGaussianGuide
        for name in TORCH_LOOPS:
            pyro.set_rng_seed(0)
            self.models[name] = cls(
                net, StandardNormal(dims[-1]), Bernoulli(), family(dims[0]), image_shape=(1, 28, 28), **classes
            ).to(data.device)
        self.plain_optimizer = torch.optim.Adam(self.models["plain"].parameters(), lr=args.lr)
        stock = self.models["stock-pyro"]
        self.stock_svi = SVI(
            stock.model,
            stock.guide,
            pyro.optim.Adam({"lr": args.lr}),
            loss=stock.objective(RunConfig().objective) if cls.enumerates else Trace_ELBO(),
        )
        self.trainers = {}
        for name, compile in TRAINER_LOOPS.items():
            config = RunConfig().updated(
                {
                    "optimizer.batch_size": args.batch_size,
                    "optimizer.lr": args.lr,
                    "schedule.epochs": 10**6,
                    "objective.compile": compile,
                }
            )
            # Nothing is written: the benchmark calls train_epoch, never fit or save.
            run_folder = tempfile.mkdtemp(prefix="throughput-")  # the Trainer locks its folder; writes nothing there
            self.trainers[name] = Trainer(self.models[name], data, config, run_folder, progress=False)
        self.store = {name: {"params": {}, "constraints": {}} for name in TORCH_LOOPS}
        self.numpyro = None
        if set(args.loops) & set(NUMPYRO_LOOPS):
            images = data.images["train"].cpu().numpy()
            self.numpyro = NumPyroLoops(images, args.hidden[0], args.latent_dim, args.batch_size, args.lr)

    def run(self, name: str, epoch: int) -> tuple[float, int]:
        """Train ``name`` for one epoch; returns the mean loss per image and the images trained on."""
        seed = epoch_seed(0, epoch)  # the batches Trainer.train_epoch draws
        if name in NUMPYRO_LOOPS:
            return self.numpyro.run(name, seed)
        # Each loop has its own Pyro param store, as each would in its own process.
        with pyro.get_param_store().scope(self.store[name]) as state:
            if name in self.trainers:
                with runtime_policy(COMMAND_LINE):  # as `pyro-vae train` runs it (the thread count is fixed here)
                    loss = self.trainers[name].train_epoch(epoch)["train_loss"]
            else:
                model = self.models[name]
                plain = plain_m2_step if model.enumerates else plain_step
                plain = plain_layered_step if len(model.latent_dims) > 1 else plain
                extra = (self.weight,) if model.enumerates else ()
                step = {
                    "plain": lambda x, y: plain(model, self.plain_optimizer, x, y, *extra).item(),
                    "stock-pyro": lambda x, y: self.stock_svi.step(model.observations(x, y)),
                }[name]
                total, n = 0.0, 0
                labelled = model.needs_labels
                for batch in self.data.train_batches(self.args.batch_size, seed, with_labels=labelled):
                    x, y = batch if labelled else (batch, None)
                    total += step(x, y)
                    n += x.shape[0]
                loss = total / n
        self.store[name] = state
        return loss, self.data.count("train")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_flops_per_image(loops: Loops, batch_size: int) -> float:
    """Forward + backward FLOPs of the network for one image (matmuls and convolutions)."""
    x, labels = loops.data.images["train"][:batch_size], loops.data.labels["train"][:batch_size]
    scratch = torch.optim.SGD(loops.models["plain"].parameters(), lr=0.0)
    with FlopCounterMode(display=False) as counter:
        model = loops.models["plain"]
        if model.enumerates:
            plain_m2_step(model, scratch, torch.bernoulli(x), labels, loops.weight)
        else:
            plain_step(model, scratch, torch.bernoulli(x), labels if model.needs_labels else None)
    return counter.get_total_flops() / x.shape[0]


def matmul_flops_per_s(device: torch.device, n: int = 2048, seconds: float = 1.0) -> float:
    """Float32 FLOP/s of an n x n matmul on ``device``: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    synchronize(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def isolated_peak_memory(args: argparse.Namespace, name: str) -> dict:
    """Peak RSS of a fresh process that loads the data and trains only loop ``name`` for one epoch."""
    cmd = [
        sys.executable,
        __file__,
        "--loops",
        name,
        "--rounds",
        "1",
        "--warmup-rounds",
        "0",
        "--no-memory",
        "--no-flops",
        "--data-dir",
        args.data_dir,
        "--device",
        args.device,
        "--net",
        args.net,
        "--batch-size",
        str(args.batch_size),
        "--hidden",
        *map(str, args.hidden),
        "--latent-dim",
        str(args.latent_dim),
        "--structure",
        args.structure,
        "--labelled",
        str(args.labelled),
        *(["--latent-dims", ",".join(map(str, args.latent_dims))] if args.latent_dims else []),
        "--layer-hidden",
        *map(str, args.layer_hidden),
        "--guide",
        args.guide,
        "--train-images",
        str(args.train_images),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout)
    return {"peak_rss_mib": child["process"]["peak_rss_mib"], "rss_before_training_mib": child["process"]["rss_mib"]}


def benchmark(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    loops_run = list(dict.fromkeys(args.loops))
    data = VAEData(
        DataConfig(args.dataset, "dynamic", val_size=0, train_limit=args.train_images),
        args.data_dir,
        device,
        splits=("train",),
    )
    n_images = data.images["train"].shape[0]
    rss_before = current_rss_bytes()
    loops = Loops(args, data)
    rates: dict[str, list[float]] = {name: [] for name in loops_run}
    losses: dict[str, float] = {}
    cuda_peak: dict[str, int] = {name: 0 for name in loops_run}
    for round_ in range(args.warmup_rounds + args.rounds):
        shift = round_ % len(loops_run)
        for name in loops_run[shift:] + loops_run[:shift]:
            time.sleep(args.pause)  # the last loop's idle threads (torch's OpenMP, XLA's) stop spinning first
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            losses[name], images = loops.run(name, round_ + 1)
            synchronize(device)
            seconds = time.perf_counter() - start
            if device.type == "cuda":
                cuda_peak[name] = max(cuda_peak[name], torch.cuda.max_memory_allocated(device))
            if round_ >= args.warmup_rounds:
                rates[name].append(images / seconds)
            print(
                f"round {round_ + 1}{' (warm-up)' if round_ < args.warmup_rounds else ''}  {name:19s} "
                f"{images / seconds:9.0f} img/s  loss {losses[name]:.2f}",
                file=sys.stderr,
            )
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), "pyro": pyro.__version__},
        "config": {
            "dataset": args.dataset,
            "net": args.net,
            "hidden": args.hidden,
            "latent_dim": "+".join(map(str, args.latent_dims)) if args.latent_dims else args.latent_dim,
            "structure": args.structure,
            "latent_dims": args.latent_dims,
            "guide": args.guide,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "images_per_epoch": n_images,
            "rounds": args.rounds,
            "warmup_rounds": args.warmup_rounds,
        },
        "loops": {},
        "process": {
            "rss_mib": rss_before / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }
    for name in loops_run:
        r = rates[name]
        entry = {
            "images_per_s_median": statistics.median(r),
            "images_per_s_min": min(r),
            "images_per_s_max": max(r),
            "images_per_s": r,
            "epoch_seconds_median": FULL_EPOCH / statistics.median(r),
            "final_train_loss": losses[name],
        }
        if device.type == "cuda":
            entry["peak_memory_mib"] = cuda_peak[name] / 2**20
        result["loops"][name] = entry
    if "plain" in rates:
        for name in set(loops_run) - {"plain"}:
            per_round = [a / b for a, b in zip(rates[name], rates["plain"])]
            result["loops"][name]["ratio_to_plain_median"] = statistics.median(per_round)
            result["loops"][name]["ratio_to_plain_per_round"] = per_round
    for ours, peer in itertools.product(set(loops_run) & set(TRAINER_LOOPS), set(loops_run) & set(NUMPYRO_LOOPS)):
        per_round = [a / b for a, b in zip(rates[ours], rates[peer])]
        result["loops"][ours][f"ratio_to_{peer}_median"] = statistics.median(per_round)
    if args.memory and device.type == "cpu":
        for name in loops_run:
            result["loops"][name].update(isolated_peak_memory(args, name))
    if args.flops:
        flops = training_flops_per_image(loops, args.batch_size)
        peak = matmul_flops_per_s(device)
        bound = flops * FULL_EPOCH / peak
        result["flops"] = {
            "training_flops_per_image": flops,
            "matmul_flops_per_s": peak,
            "epoch_seconds_at_matmul_peak": bound,
        }
        for name in loops_run:
            result["loops"][name]["fraction_of_flop_bound"] = bound / result["loops"][name]["epoch_seconds_median"]
    return result


def report(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"{result['machine']['device_name']} ({result['machine']['torch_threads']} threads), {cfg['net']} "
        f"784-{'-'.join(map(str, cfg['hidden']))}-{cfg['latent_dim']}, batch {cfg['batch_size']}, "
        f"{cfg['images_per_epoch']} images/epoch, {cfg['rounds']} rounds"
    ]
    for name, e in result["loops"].items():
        ratio = "".join(
            f"  {e[f'ratio_to_{peer}_median']:.3f}x {peer}"
            for peer in ("plain", *NUMPYRO_LOOPS)
            if f"ratio_to_{peer}_median" in e
        )
        mem = (
            f"  peak {e.get('peak_memory_mib', e.get('peak_rss_mib', float('nan'))):.0f} MiB"
            if ("peak_memory_mib" in e or "peak_rss_mib" in e)
            else ""
        )
        bound = f"  {100 * e['fraction_of_flop_bound']:.0f}% of FLOP bound" if "fraction_of_flop_bound" in e else ""
        lines.append(
            f"  {name:19s} {e['images_per_s_median']:9.0f} img/s (min {e['images_per_s_min']:.0f}, "
            f"max {e['images_per_s_max']:.0f}){ratio}{mem}{bound}"
        )
    if "flops" in result:
        f = result["flops"]
        lines.append(
            f"  {f['training_flops_per_image'] / 1e6:.2f} MFLOP per image per step; matmul peak "
            f"{f['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s; epoch bound {f['epoch_seconds_at_matmul_peak']:.2f} s"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="torchvision root with MNIST / FashionMNIST")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--net", default="mlp", choices=["mlp", "conv"])
    p.add_argument("--hidden", type=int, nargs="+", default=[400])
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--structure", default="vae", choices=["vae", "conditional", "semi-supervised", "hierarchical"])
    p.add_argument(
        "--latent-dims", type=lambda text: [int(n) for n in text.split(",")], default=None, help="hierarchical: 100,50"
    )
    p.add_argument("--layer-hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--guide", default="diagonal", choices=["diagonal", "ladder"])
    p.add_argument("--labelled", type=int, default=100, help="semi-supervised: labelled training images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--train-images", type=int, default=12_800, help="images per round (the first N of MNIST's train set)"
    )
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup-rounds", type=int, default=1)
    p.add_argument(
        "--pause",
        type=float,
        default=0.5,
        help="seconds between loops: torch's and XLA's worker threads spin for a while after their "
        "loop ends, slowing the next loop",
    )
    p.add_argument(
        "--loops",
        nargs="+",
        choices=LOOPS,
        default=None,
        help="which loops to time [default: all; the NumPyro ones when installed, MLP on the CPU]",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU: measure each loop's peak RSS in its own process",
    )
    p.add_argument("--flops", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = p.parse_args(argv)
    if args.loops is None:
        peer = numpyro_available() and args.net == "mlp" and args.device == "cpu" and args.structure == "vae"
        args.loops = list(TORCH_LOOPS + (NUMPYRO_LOOPS if peer else ()))
    if set(args.loops) & set(NUMPYRO_LOOPS) and not (numpyro_available() and args.net == "mlp"):
        p.error('the NumPyro loops need numpyro and jax (pip install "pyro-vae[bench]") and --net mlp')
    if (args.structure == "hierarchical") != bool(args.latent_dims and len(args.latent_dims) > 1):
        p.error("--structure hierarchical goes with --latent-dims of two or more layers (e.g. 100,50)")
    if set(args.loops) & set(NUMPYRO_LOOPS) and args.structure != "vae":
        p.error("the NumPyro loops train the plain VAE only (--structure vae)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = benchmark(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
