"""Training in several processes on this machine's CPUs: throughput, scaling, communication, the reference run.

    python benchmarks/distributed.py --data-dir ../shared/data [--train-images 20000] [--reference]

* **Throughput**: the reference MLP (784-400-20, global batch ``--batch-size``, default 128) for 2 epochs of
  ``--train-images`` images, timed in the second epoch (``images_per_s`` of ``metrics.jsonl``) as one process
  with 1 thread, one process with every core's thread, and ``torchrun --nproc-per-node N`` (N = 2 ..
  ``--max-procs``, one thread each, Gloo), every loop with the compiled step (the default); then the job of
  ``--max-procs`` again with ``--no-compile`` (how jobs trained before they compiled), in the same run.
  Scaling efficiency = images/s of N processes / (N x one process with one thread); ``speedup``: images/s against
  the one-thread process.
* **Communication**: the one all-reduce a step makes (the gradients of every parameter plus the loss, float32)
  timed between N Gloo processes on this host, against the step time of one process, for the reference MLP and
  the default conv net.
* ``--reference``: the reference run (``configs/mnist-reference.toml``) under ``torchrun --nproc-per-node 2``,
  then ``pyro-vae elbo`` on its checkpoint in one process and sharded over two: the test ELBO against the
  single-process run's (README: -102.714 +- 0.266 compiled, -102.689 +- 0.266 with ``--no-compile``; a job compiles
  its step in every process), and the two evaluations' numbers side by side.

Prints one JSON object per measurement and a Markdown summary; ``--json FILE`` keeps them. On one machine the
processes share its cores and memory bandwidth: this measures the mechanism, not a cluster's network.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SCRIPT = Path(sys.executable).with_name("pyro-vae")
REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "mnist-reference.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(procs: int, args: list[str], threads: int = 1) -> subprocess.CompletedProcess:
    """``pyro-vae ARGS`` as one process or a torchrun job of ``procs``, each with ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if procs == 1:
        command = [str(SCRIPT), *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(procs),
            "--master-port",
            str(free_port()),
            "--no-python",
            str(SCRIPT),
            *args,
        ]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return result


def throughput(
    data_dir: Path, images: int, batch: int, procs: int, threads: int, out: Path, compile: bool = True
) -> dict:
    args = [
        "train",
        "--config",
        str(REFERENCE),
        "--data-dir",
        str(data_dir),
        "--train-limit",
        str(images),
        "--val-size",
        "1000",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        str(threads),
        "--batch-size",
        str(batch),
        "--compile" if compile else "--no-compile",
    ]
    start = time.perf_counter()
    launch(procs, args, threads)
    wall = time.perf_counter() - start
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "what": "throughput",
        "batch_size": batch,
        "processes": procs,
        "threads_each": threads,
        "compiled": compile,
        "images_per_s": round(metrics[-1]["images_per_s"]),
        "train_loss": metrics[-1]["train_loss"],
        "process_wall_s": round(wall, 1),
    }


def _all_reduce_worker(rank: int, world: int, port: int, sizes: list[int], repeats: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    found = {}
    for n in sizes:
        flat = torch.zeros(n)
        for _ in range(10):
            dist.all_reduce(flat)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            dist.all_reduce(flat)
            times.append(time.perf_counter() - start)
        found[n] = statistics.median(times)
    if rank == 0:
        Path(out).write_text(json.dumps(found))
    dist.destroy_process_group()


def all_reduce_seconds(world: int, sizes: list[int], repeats: int = 200) -> dict[int, float]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        mp.start_processes(
            _all_reduce_worker,
            args=(world, free_port(), sizes, repeats, str(out)),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
        return {int(k): v for k, v in json.loads(out.read_text()).items()}


def parameter_count(net: str) -> int:
    from pyro_vae import RunConfig

    config = RunConfig.read_toml(REFERENCE)
    if net == "conv":
        config = config.updated({"model.net.kind": "conv"})
    return sum(p.numel() for p in config.build_model().parameters())


def reference(data_dir: Path, out: Path) -> list[dict]:
    start = time.perf_counter()
    launch(2, ["train", "--config", str(REFERENCE), "--data-dir", str(data_dir), "--out", str(out), "--no-progress"])
    train_s = time.perf_counter() - start
    rows = []
    for procs in (1, 2):
        start = time.perf_counter()
        threads = torch.get_num_threads() if procs == 1 else 1
        done = launch(
            procs, ["elbo", "--checkpoint", str(out / "ckpt.pt"), "--data-dir", str(data_dir), "--json"], threads
        )
        s = json.loads(done.stdout)
        rows.append(
            {
                "what": "reference elbo",
                "trained_by": "torchrun --nproc-per-node 2",
                "train_s": round(train_s, 1),
                "evaluated_by": procs,
                "elbo": s["elbo"],
                "elbo_stderr": s["elbo_stderr"],
                "iwae": s["iwae"],
                "iwae_stderr": s["iwae_stderr"],
                "agreement_z": s["agreement_z"],
                "active_units": s["active_units"],
                "eval_s": round(s["seconds"], 1),
                "process_wall_s": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch")
    parser.add_argument("--max-procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference", action="store_true", help="also the 10-epoch reference run under torchrun")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        settings = [
            (1, 1, True),
            *([(1, cores, True)] if cores > 1 else []),
            *((n, 1, True) for n in range(2, args.max_procs + 1)),
            *([(args.max_procs, 1, False)] if args.max_procs > 1 else []),
        ]
        for procs, threads, compile in settings:
            results.append(
                throughput(
                    args.data_dir,
                    args.train_images,
                    args.batch_size,
                    procs,
                    threads,
                    tmp / f"p{procs}t{threads}c{int(compile)}",
                    compile,
                )
            )
            print(json.dumps(results[-1]), flush=True)
        single = results[0]["images_per_s"]
        for row in results:
            cores_used = row["processes"] * row["threads_each"]
            row["scaling_efficiency"] = round(row["images_per_s"] / (cores_used * single), 3)
            row["speedup"] = round(row["images_per_s"] / single, 3)
        step_s = {net: None for net in ("mlp", "conv")}
        step_s["mlp"] = args.batch_size / single
        for world in range(2, args.max_procs + 1):
            for net in ("mlp", "conv"):
                n = parameter_count(net) + 2
                seconds = all_reduce_seconds(world, [n])[n]
                row = {
                    "what": "all-reduce per step",
                    "net": net,
                    "processes": world,
                    "floats": n,
                    "megabytes": round(4 * n / 2**20, 2),
                    "all_reduce_ms": round(1000 * seconds, 3),
                }
                if step_s[net] is not None:
                    row["step_ms_one_process"] = round(1000 * step_s[net], 3)
                    row["share_of_step"] = round(seconds / step_s[net], 3)
                results.append(row)
                print(json.dumps(row), flush=True)
        if args.reference:
            for row in reference(args.data_dir, tmp / "reference"):
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "cores": cores, "results": results}, indent=1))


if __name__ == "__main__":
    main()
