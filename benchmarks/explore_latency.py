"""Request latency of ``pyro-vae explore``'s endpoints, per endpoint: median and 95th percentile in milliseconds.

    python benchmarks/explore_latency.py --data-dir ../shared/data [--requests 200] [--out FILE.json]
        [--mlp CKPT] [--conv CKPT] [--colour CKPT]

Three models, each served by its own ``pyro-vae explore --port 0 --limit 5000`` process (what a user runs) and
asked over one kept-alive HTTP/1.1 connection (what the page does), one request at a time:

* ``mlp``: the reference MLP (``--mlp``, default ``runs/latent-layers/one-layer-reference/ckpt.pt``: MNIST, z = 20);
* ``conv``: the conv tutorial's network (``configs/tutorial-conv-z20-bce.toml``: MNIST, z = 20), trained here for
  one epoch on 2,000 images unless ``--conv`` gives a checkpoint (the latency depends on the network, not its fit);
* ``colour``: a conv net on 32x32 colour pictures (600 fabricated shapes in three classes, 120 each for validation
  and test, by :func:`write_shapes`; logistic-mixture likelihood, z = 16), trained here for two epochs unless
  ``--colour`` gives one.

Each endpoint gets ``--requests`` timed requests after 10 untimed ones, with the page's parameters: ``points``
(the PCA view), ``image`` and ``encode`` of a point, ``decode`` of its mean with one coordinate moved (a slider),
``traverse`` (11 steps), ``interpolate`` (10 steps, linear) and ``sample`` (16 images). The timer runs from sending
the request to the last byte of the answer. Prints a table and one JSON line per model (``--out``: all of them).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("pyro-vae")
REFERENCE = ROOT / "runs" / "latent-layers" / "one-layer-reference" / "ckpt.pt"
SHAPES = ("disc", "square", "bar")
WARMUP = 10


def write_shapes(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """A folder of colour pictures of one shape each on a plain background: ``n`` in ``folder/train/<shape>/`` and
    ``n // 5`` each in ``val/`` and ``test/`` (the subfolders are the classes), a disc, a square or a bar in turn, of
    random colours, size and place."""
    g = torch.Generator().manual_seed(seed)
    for split, count in (("train", n), ("val", n // 5), ("test", n // 5)):
        for name in SHAPES:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = SHAPES[i % len(SHAPES)]
            draw_shape(shape, size, g).save(folder / split / shape / f"{i:05d}.png")
    return folder


def draw_shape(shape: str, size: int, g: torch.Generator) -> Image.Image:
    colours = [tuple(c) for c in (torch.rand(2, 3, generator=g) * 255).round().int().tolist()]
    radius = int(size * (0.18 + 0.17 * float(torch.rand(1, generator=g))))
    cx, cy = (int(radius + (size - 2 * radius) * float(torch.rand(1, generator=g))) for _ in range(2))
    image = Image.new("RGB", (size, size), colours[0])
    draw = ImageDraw.Draw(image)
    if shape == "disc":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colours[1])
    elif shape == "square":
        draw.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=colours[1])
    else:
        draw.rectangle((cx - radius, cy - radius // 3, cx + radius, cy + radius // 3), fill=colours[1])
    return image


def train(args: list[str], out: Path) -> Path:
    """``pyro-vae train ARGS --out OUT``; the checkpoint's path."""
    subprocess.run([SCRIPT, "train", *args, "--out", out, "--no-progress"], check=True, capture_output=True)
    return out / "ckpt.pt"


def conv_checkpoint(data_dir: Path, work: Path) -> Path:
    config = ROOT / "configs" / "tutorial-conv-z20-bce.toml"
    return train(["--config", config, "--data-dir", data_dir, "--train-limit", "2000", "--epochs", "1"], work / "conv")


def colour_checkpoint(work: Path) -> Path:
    folder = write_shapes(work / "shapes", 600)
    args = ["--dataset", "folder", "--data-dir", folder, "--binarize", "none", "--likelihood", "logistic-mixture"]
    args += ["--net", "conv", "--conv-channels", "32,64", "--hidden", "256", "--latent-dim", "16", "--epochs", "2"]
    return train([*args, "--batch-size", "50"], work / "colour")


class Explorer:
    """A ``pyro-vae explore`` process on a free port, and one kept-alive connection to it."""

    def __init__(self, checkpoint: Path, data_dir: Path | None) -> None:
        cmd = [SCRIPT, "explore", "--checkpoint", checkpoint, "--port", "0", "--limit", "5000", "--device", "cpu"]
        cmd += ["--data-dir", data_dir] if data_dir else []
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if " at http://" not in line:
            raise SystemExit(f"pyro-vae explore did not start: {self.process.stderr.read().strip()}")
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port))

    def ask(self, name: str, params: dict) -> tuple[float, bytes]:
        """Seconds from sending a request to the answer's last byte, and the answer."""
        body = json.dumps(params)
        start = time.perf_counter()
        self.connection.request("POST", f"/api/{name}", body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = response.read()
        seconds = time.perf_counter() - start
        if response.status != 200:
            raise SystemExit(f"/api/{name} {params}: {response.status} {answer.decode().strip()}")
        return seconds, answer

    def close(self) -> None:
        self.connection.close()
        self.process.terminate()  # (SIGINT would do, but not when this script runs in the background: ignored)
        self.process.communicate(timeout=30)


def requests(info: dict, means: list[list[float]], i: int) -> dict[str, dict]:
    """The page's request to each endpoint for the ``i``-th round (a different point and coordinate each time)."""
    n, d = info["count"], len(info["coordinates"])
    index, coordinate = i % n, i % d
    z = list(means[index % len(means)])
    z[coordinate] = info["slider"]["high"][coordinate]
    label = {"label": 0} if info["classes"] else {}
    return {
        "points": {"view": info["view"]},
        "image": {"index": index},
        "encode": {"index": index},
        "decode": {"z": z, **label},
        "traverse": {"z": z, "coordinate": coordinate, "steps": info["defaults"]["traverse"], **label},
        "interpolate": {"a": index, "b": (index + 1) % n, "steps": info["defaults"]["interpolate"]},
        "sample": {"n": info["defaults"]["samples"], "seed": i},
    }


def measure(explorer: Explorer, rounds: int) -> dict[str, dict[str, float]]:
    info = json.loads(explorer.ask("info", {})[1])
    means = [json.loads(explorer.ask("encode", {"index": i})[1])["mean"] for i in range(min(50, info["count"]))]
    times: dict[str, list[float]] = {}
    for i in range(WARMUP + rounds):
        for name, params in requests(info, means, i).items():
            seconds, _ = explorer.ask(name, params)
            if i >= WARMUP:
                times.setdefault(name, []).append(1000 * seconds)
    return {name: summary(values) for name, values in times.items()}


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "requests": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="torchvision root with MNIST")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint and model")
    parser.add_argument("--mlp", type=Path, default=REFERENCE)
    parser.add_argument("--conv", type=Path, default=None)
    parser.add_argument("--colour", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {
            "mlp": (args.mlp, args.data_dir),
            "conv": (args.conv or conv_checkpoint(args.data_dir, work), args.data_dir),
            "colour": (args.colour or colour_checkpoint(work), None),
        }
        for name, (checkpoint, data_dir) in models.items():
            explorer = Explorer(checkpoint, data_dir)
            try:
                endpoints = measure(explorer, args.requests)
            finally:
                explorer.close()
            result = {"model": name, "checkpoint": str(checkpoint), "cpus": os.cpu_count(), "endpoints": endpoints}
            results.append(result)
            print(json.dumps(result), flush=True)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


def table(results: list[dict]) -> str:
    names = list(results[0]["endpoints"])
    lines = ["endpoint      " + "".join(f"{r['model'] + ' median / p95 ms':>28}" for r in results)]
    for name in names:
        cells = "".join(
            f"{r['endpoints'][name]['median_ms']:>19.1f} / {r['endpoints'][name]['p95_ms']:<6.1f}" for r in results
        )
        lines.append(f"{name:<14}{cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
