"""Images/s and peak memory of colour conv models on image folders, held in memory and streamed.

    python benchmarks/image_data.py [--images 4000] [--big-images 40000] [--epochs 1]

1. Speed: a folder of ``--images`` smooth random colour PNGs at 32x32 and at 64x64; one epoch of a conv VAE with
   the logistic-mixture likelihood (5 components) on each, in memory and with ``--stream``: training images/s
   (from ``metrics.jsonl``) and peak resident memory (one ``pyro-vae train`` process per case).
2. Memory against data size: a cheap model (Gaussian likelihood, so the data, not the model, dominates memory) on
   32x32 folders of ``--images`` and ``--big-images`` PNGs, in memory and streamed. Held in memory, the peak
   grows with the float32 copy of the images; streamed, it stays where the small folder's was.
Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

SCRIPT = Path(sys.executable).with_name("pyro-vae")
COMMON = [
    "--binarize",
    "none",
    "--net",
    "conv",
    "--conv-channels",
    "32,64,128",
    "--hidden",
    "256",
    "--latent-dim",
    "32",
    "--batch-size",
    "128",
    "--val-size",
    "500",
    "--test-size",
    "500",
    "--no-progress",
]
MIXTURE = ["--likelihood", "logistic-mixture", "--mixture-components", "5", *COMMON]
CHEAP = ["--likelihood", "gaussian", "--conv-channels", "8,16", "--hidden", "64", *COMMON]


def write_folder(folder: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` smooth random colour PNGs of ``size`` x ``size`` under ``folder/train`` (written in pieces)."""
    g = torch.Generator().manual_seed(seed)
    (folder / "train").mkdir(parents=True)
    for start in range(0, n, 1000):
        coarse = torch.rand(min(1000, n - start), 3, size // 8, size // 8, generator=g)
        images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        for i, image in enumerate((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
            Image.fromarray(image).save(folder / "train" / f"{start + i:06d}.png")


def run_case(name: str, folder: Path, out: Path, extra: list[str], epochs: int, model: list[str]) -> dict:
    """One ``pyro-vae train`` in a fresh process; its images/s and peak RSS (of the largest process)."""
    command = [
        str(SCRIPT),
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(folder),
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        *model,
        *extra,
    ]
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    n = sum(1 for _ in (folder / "train").iterdir())
    return {
        "case": name,
        "train_images": n - 1000,
        "float32_mib": round(4 * (n - 1000) * math.prod(_shape(folder)) / 2**20),
        "images_per_s": round(metrics[-1]["images_per_s"]),
        "peak_rss_mib": round(int(done.stdout.split()[-1]) / 1024),
        "wall_s": round(time.perf_counter() - start, 1),
        "val_elbo": round(metrics[-1]["val_elbo"], 1),
        "torch_threads": torch.get_num_threads(),
    }


def _shape(folder: Path) -> tuple[int, int, int]:
    with Image.open(next((folder / "train").iterdir())) as img:
        return (3, img.height, img.width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--big-images", type=int, default=40000)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in (32, 64):
            folder = tmp / f"folder{size}"
            write_folder(folder, args.images + 1000, size)
            for mode, extra in (("in memory", []), ("streamed", ["--stream"])):
                report(
                    run_case(
                        f"speed {size}x{size}x3 {mode}",
                        folder,
                        tmp / f"run{size}{mode[0]}",
                        extra,
                        args.epochs,
                        MIXTURE,
                    )
                )
        if args.big_images:
            folder = tmp / "big32"
            write_folder(folder, args.big_images + 1000, 32, seed=1)
            for n, where in ((args.images, tmp / "folder32"), (args.big_images, folder)):
                for mode, extra in (("in memory", []), ("streamed", ["--stream"])):
                    report(
                        run_case(f"memory {n} images 32x32x3 {mode}", where, tmp / f"mem{n}{mode[0]}", extra, 1, CHEAP)
                    )


def report(case: dict) -> None:
    print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
