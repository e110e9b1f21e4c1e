"""Training step speed of ``--objective iwae-dreg`` against ``--objective iwae`` at the same particle counts, in one
run: the reference model (configs/mnist-reference.toml: MLP 784-400-20, batch 128, Adam 1e-3) stepped by
:class:`~pyro_vae.inference.fast_svi.FastSVI` (the step ``pyro-vae train`` takes) on the same fixed batches of
dynamically binarized MNIST. For each K, each round times ``--steps`` steps of each of the two loops, back to back,
the order alternating from round to round, each loop's timed steps after one untimed one (which pays for memory the
other K's loops left in another shape); reported per K: images/s (median over rounds) and the median of the
per-round ratios dreg / iwae (each round's two loops ran back to back, so a shared machine's slow phases cancel).

    python benchmarks/dreg_speed.py --data-dir ../shared/data --particles 5 50 --out runs/dreg/speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyro
import torch

from pyro_vae import DataConfig, RunConfig, VAEData
from pyro_vae.inference.fast_svi import FastSVI, make_adam

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("iwae", "iwae-dreg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--config", default=str(ROOT / "configs" / "mnist-reference.toml"))
    parser.add_argument("--particles", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = RunConfig.read_toml(args.config)
    batch = base.optimizer.batch_size
    images = VAEData(DataConfig("mnist", "none"), args.data_dir, splits=("train",)).images["train"]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.bernoulli(images[i * batch : (i + 1) * batch], generator=generator) for i in range(args.steps)]

    loops = {}
    for k in args.particles:
        for kind in OBJECTIVES:
            config = base.updated({"objective.kind": kind, "objective.particles": k})
            vae = config.build_model()
            svi = FastSVI(
                vae.model, vae.guide, make_adam(vae.parameters(), config.optimizer.lr), vae.objective(config.objective)
            )
            loops[kind, k] = (svi, {"params": {}, "constraints": {}})

    def run(key) -> float:
        svi, store = loops[key]
        with pyro.get_param_store().scope(store) as state:
            svi.step(batches[-1], 1.0)  # (untimed)
            start = time.perf_counter()
            for x in batches:
                svi.step(x, 1.0)
            seconds = time.perf_counter() - start
        loops[key] = (svi, state)
        return len(batches) * batch / seconds

    with pyro.validation_enabled(True):  # (FastSVI validates the first step only, as in training)
        for key in loops:
            run(key)
    rates = {key: [] for key in loops}
    for k in args.particles:
        for r in range(args.rounds):
            for kind in OBJECTIVES if r % 2 == 0 else reversed(OBJECTIVES):
                rates[kind, k].append(run((kind, k)))
            print(f"K={k} round {r + 1}/{args.rounds}: " + "  ".join(f"{o} {rates[o, k][-1]:.0f}" for o in OBJECTIVES))
    results = {"config": args.config, "threads": args.threads, "batch_size": batch, "steps": args.steps, "by_k": {}}
    for k in args.particles:
        ratios = [d / i for d, i in zip(rates["iwae-dreg", k], rates["iwae", k])]
        results["by_k"][k] = {
            "iwae_images_per_s": statistics.median(rates["iwae", k]),
            "dreg_images_per_s": statistics.median(rates["iwae-dreg", k]),
            "ratio_dreg_to_iwae_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
        r = results["by_k"][k]
        print(
            f"K={k}: iwae {r['iwae_images_per_s']:.0f} img/s, iwae-dreg {r['dreg_images_per_s']:.0f} img/s, "
            f"dreg/iwae {r['ratio_dreg_to_iwae_median']:.3f} (rounds {r['ratio_min']:.3f}..{r['ratio_max']:.3f})"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
