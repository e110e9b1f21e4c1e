"""Where a GPU's time goes: the IWAE pass by chunk size, and one training epoch under the profilers.

    python benchmarks/gpu_profile.py --checkpoint runs/reference/ckpt.pt --data-dir DIR --out OUT [--device cuda]

* ``OUT/profile.json``: IWAE K (default 5000) over ``--images`` test images (default 1,000) for each budget of
  decoder outputs a pass (the device's: ``bounds._CUDA_ELEMENTS_PER_CHUNK`` or ``_ELEMENTS_PER_CHUNK``, set here
  for the measurement only): seconds, peak
  memory, the bound; then the reference config's epochs 1-5 (60,000 images, no validation) timed one by one,
  epoch 3 under the torch profiler (its kernels' total time) and epoch 4 under cProfile;
* ``OUT/profile_ops.txt``: the torch profiler's table of epoch 3, by host time and by device time;
* ``OUT/profile_python.txt``: cProfile of epoch 4, by own time and by cumulative time.

``benchmarks/gpu.sh`` runs it after the reference run. On a CPU (``--device cpu``) it runs too, for a dry run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path

import pyro
import torch

from pyro_vae import DataConfig, RunConfig, VAEData, start_run
from pyro_vae.inference import bounds
from pyro_vae.pipeline import load_model

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "mnist-reference.toml"
BUDGETS = (1 << 22, 1 << 24, 1 << 26, 1 << 27, 1 << 28)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iwae_by_chunk(
    checkpoint: Path, data_dir: str, device: torch.device, images: int, k: int, budgets: tuple[int, ...]
) -> dict:
    vae, _ = load_model(checkpoint, device=str(device))
    x = VAEData(DataConfig("mnist", "dynamic"), data_dir, device, splits=("test",)).observed("test")[:images]
    budget_name = "_CUDA_ELEMENTS_PER_CHUNK" if device.type == "cuda" else "_ELEMENTS_PER_CHUNK"
    saved, out = getattr(bounds, budget_name), {}
    try:
        for budget in budgets:
            setattr(bounds, budget_name, budget)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            pyro.set_rng_seed(0)
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                value = torch.cat([bounds.iwae_bound(vae, x[i : i + 500], k) for i in range(0, len(x), 500)])
            synchronize(device)
            out[str(budget)] = {
                "seconds": time.perf_counter() - start,
                "iwae": value.mean().item(),
                "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
                "particles_a_pass": bounds.iwae_chunk(min(500, len(x)), x.shape[-1], k, device),
            }
            print("iwae", budget, out[str(budget)], flush=True)
    finally:
        setattr(bounds, budget_name, saved)
    return {"images": len(x), "k": k, "by_budget": out}


def profiled_epochs(data_dir: str, device: torch.device, out: Path, train_limit: int | None) -> dict:
    from torch.profiler import ProfilerActivity, profile

    overrides = {"data.root": data_dir, "data.val_size": 0}
    if train_limit:
        overrides["data.train_limit"] = train_limit
    with pyro.get_param_store().scope():
        trainer = start_run(
            RunConfig.read_toml(REFERENCE, overrides), tempfile.mkdtemp(), device=str(device), progress=False
        )
        seconds = {}

        def epoch(n: int) -> None:
            synchronize(device)
            start = time.perf_counter()
            trainer.train_epoch(n)
            synchronize(device)
            seconds[n] = time.perf_counter() - start

        epoch(1)
        epoch(2)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            epoch(3)
        table = prof.key_averages()
        text = table.table(sort_by="self_cpu_time_total", row_limit=40)
        if device.type == "cuda":
            text += "\n\n" + table.table(sort_by="self_device_time_total", row_limit=25)
        (out / "profile_ops.txt").write_text(text)
        kernels = sum(e.self_device_time_total for e in table) / 1e6 if device.type == "cuda" else None
        python = cProfile.Profile()
        python.enable()
        epoch(4)
        python.disable()
        report = io.StringIO()
        pstats.Stats(python, stream=report).sort_stats("tottime").print_stats(40)
        pstats.Stats(python, stream=report).sort_stats("cumulative").print_stats(40)
        (out / "profile_python.txt").write_text(report.getvalue())
        epoch(5)
    return {
        "epoch_seconds": seconds,
        "images": trainer.data.count("train"),
        "epoch_3_kernel_seconds": kernels,
        "note": "epoch 3 ran under the torch profiler, epoch 4 under cProfile",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a model trained on MNIST (the reference run)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--iw-samples", type=int, default=5000)
    p.add_argument("--train-limit", type=int, default=None, help="fewer training images (a dry run)")
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    args = p.parse_args()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "iwae_by_chunk": iwae_by_chunk(
            args.checkpoint, args.data_dir, device, args.images, args.iw_samples, tuple(args.budgets)
        ),
        "epochs": profiled_epochs(args.data_dir, device, args.out, args.train_limit),
    }
    (args.out / "profile.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
