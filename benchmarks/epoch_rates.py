"""Epoch-to-epoch training rate of the reference run, and the page faults behind it, under each runtime policy.

    OMP_NUM_THREADS=2 python benchmarks/epoch_rates.py --data-dir ../shared/data --epochs 8 \\
        --policies cli cli-no-heap cli-no-gc none --repeats 3 [--json OUT]

Each (policy, repeat) is its own process (``--one POLICY``), the policies alternating, so a slow phase of the
machine falls on each alike. A process trains ``configs/mnist-reference.toml`` (``start_run(...).fit()``, the
validation ELBO after each epoch as ``pyro-vae train`` does) under the policy and reports per epoch the training
images/s (the Trainer's own figure) and the minor page faults taken while training (first to last step): a
fault count does not depend on how busy the machine is, a rate does.

Policies: ``cli`` is what ``pyro-vae train`` uses (heap reuse while evaluating, ``gc.freeze`` while training;
the thread count fixed by ``OMP_NUM_THREADS``); ``cli-no-heap`` and ``cli-no-gc`` drop one of the two; ``none`` is
a library call's default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

POLICIES = {
    "cli": {"reuse_heap": True, "freeze_gc": True},
    "cli-no-heap": {"reuse_heap": False, "freeze_gc": True},
    "cli-no-gc": {"reuse_heap": True, "freeze_gc": False},
    "none": {},
}
REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "mnist-reference.toml"


def one(policy: str, data_dir: str, epochs: int) -> list[dict]:
    from pyro_vae import Callback, RunConfig, RuntimePolicy, runtime_policy, start_run

    class Faults(Callback):
        def __init__(self) -> None:
            self.first, self.last, self.rows = None, None, []

        def on_step_end(self, trainer, epoch, step, loss) -> None:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            self.first = faults if step == 0 else self.first
            self.last = faults

        def on_epoch_end(self, trainer, record) -> None:
            row = {"epoch": record["epoch"], "images_per_s": round(record["images_per_s"])}
            self.rows.append({**row, "minor_faults": self.last - self.first})

    faults = Faults()
    config = RunConfig.read_toml(REFERENCE, {"data.root": data_dir, "schedule.epochs": epochs})
    with tempfile.TemporaryDirectory() as out, runtime_policy(RuntimePolicy(**POLICIES[policy])):
        start_run(config, out, device="cpu", progress=False, callbacks=[faults]).fit()
    return faults.rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", choices=list(POLICIES), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.data_dir, args.epochs)))
        return
    runs = []
    for repeat in range(args.repeats):
        for policy in args.policies:
            cmd = [sys.executable, __file__, "--one", policy, "--data-dir", args.data_dir, "--epochs", str(args.epochs)]
            rows = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            runs.append({"policy": policy, "repeat": repeat, "epochs": rows})
            steady = [r["images_per_s"] for r in rows[1:]]  # (epoch 1 compiles the step)
            print(
                policy,
                repeat,
                "images/s",
                min(steady),
                "-",
                max(steady),
                "faults",
                [r["minor_faults"] for r in rows],
                flush=True,
            )
    summary = {}
    for policy in args.policies:
        steady = [r for run in runs if run["policy"] == policy for r in run["epochs"][1:]]
        rates = [r["images_per_s"] for r in steady]
        summary[policy] = {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "spread": round((max(rates) - min(rates)) / statistics.median(rates), 3),
            "median_faults": statistics.median(r["minor_faults"] for r in steady),
        }
        print(policy, json.dumps(summary[policy]))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "epochs": args.epochs,
                    "runs": runs,
                    "summary": summary,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
