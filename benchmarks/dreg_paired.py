"""Paired differences of the test bounds between the runs of benchmarks/dreg.sh, image by image on the same test
images: IWAE-100 on all 10,000, IWAE-5000 on the first 1,000 (one thread, seed 0 for every model).

    .venv/bin/python benchmarks/dreg_paired.py --data-dir ../shared/data > runs/dreg/paired.json
"""

import argparse
import json
import math

import torch

from pyro_vae import DataConfig, VAEData
from pyro_vae.inference.bounds import iwae_bound
from pyro_vae.pipeline import load_model

RUNS = {
    "iwae5": "runs/latent-layers/one-layer-iwae5",
    "iwae50": "runs/dreg/iwae50",
    "dreg5": "runs/dreg/dreg5",
    "dreg50": "runs/dreg/dreg50",
}
PAIRS = (("dreg5", "iwae5"), ("dreg50", "iwae50"), ("iwae50", "iwae5"), ("dreg50", "dreg5"))


@torch.no_grad()
def bounds(folder: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vae = load_model(f"{folder}/ckpt.pt", device="cpu")[0].eval()
    torch.manual_seed(0)
    b100 = torch.cat([iwae_bound(vae, x[i : i + 500], 100) for i in range(0, len(x), 500)])
    b5000 = torch.cat([iwae_bound(vae, x[i : i + 100], 5000) for i in range(0, 1000, 100)])
    return b100.double(), b5000.double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = VAEData(DataConfig("mnist", "dynamic"), args.data_dir, splits=("test",)).observed("test")
    found = {name: bounds(folder, x) for name, folder in RUNS.items()}
    out = {
        "means": {
            n: {"iwae100": b[0].mean().item(), "iwae5000_first1000": b[1].mean().item()} for n, b in found.items()
        }
    }
    for a, b in PAIRS:
        for i, key in enumerate(("iwae100", "iwae5000_first1000")):
            d = found[a][i] - found[b][i]
            out[f"{a}-{b}_{key}"] = {"mean": d.mean().item(), "stderr": (d.std() / math.sqrt(len(d))).item()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
