"""The reference MNIST run through three doors: torchvision's files, a folder of PNGs, an .npz array.

    python benchmarks/three_doors.py --data-dir ../shared/data [--config configs/mnist-reference.toml]

Writes MNIST's 60,000 training and 10,000 test images as PNGs named in their original order
(``train/00000.png``...) and as one ``.npz``, runs ``pyro-vae train --config CONFIG`` on each source and
``pyro-vae elbo --json`` on each checkpoint, and prints one JSON line per door: the test ELBO, the IWAE
bound and the training time. The three must print the same numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pyro_vae.data.sources import _read_idx_split

SCRIPT = Path(sys.executable).with_name("pyro-vae")


def export(data_dir: Path, folder: Path, npz: Path) -> None:
    arrays = {}
    for split, train in (("train", True), ("test", False)):
        images = _read_idx_split("mnist", data_dir, train, False)[0].numpy()
        (folder / split).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / split / f"{i:05d}.png")
        arrays[split] = images
    np.savez(npz, **arrays)


def door(name: str, config: str, source: list[str], out: Path) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [str(SCRIPT), "train", "--config", config, *source, "--out", str(out), "--no-progress"],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    done = subprocess.run(
        [str(SCRIPT), "elbo", "--checkpoint", str(out / "ckpt.pt"), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    s = json.loads(done.stdout)
    return {
        "door": name,
        "test_elbo": round(s["elbo"], 3),
        "elbo_stderr": round(s["elbo_stderr"], 3),
        "iwae": round(s["iwae"], 3),
        "train_s": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--config", default="configs/mnist-reference.toml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        export(args.data_dir, tmp / "folder", tmp / "mnist.npz")
        print(json.dumps({"exported_s": round(time.perf_counter() - start, 1)}), flush=True)
        doors = {
            "torchvision": ["--dataset", "mnist", "--data-dir", str(args.data_dir)],
            "folder": ["--dataset", "folder", "--data-dir", str(tmp / "folder")],
            "array": ["--dataset", "array", "--data-dir", str(tmp / "mnist.npz")],
        }
        for name, source in doors.items():
            print(json.dumps(door(name, args.config, source, tmp / name)), flush=True)


if __name__ == "__main__":
    main()
