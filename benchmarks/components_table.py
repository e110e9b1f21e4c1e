"""Train every component for 10 epochs on MNIST and Fashion-MNIST and tabulate the test bounds.

    python benchmarks/components_table.py --data-dir ../shared/data [--epochs 10] [--only mnist]

Each row is one `pyro-vae train` run (seed 0, MLP 400, z = 20, batch 128, Adam 1e-3) that differs
from the baseline (standard-normal prior, Bernoulli likelihood on dynamically binarized pixels,
diagonal guide, Trace_ELBO) in one component, then `pyro-vae elbo --json` on the test set. Results
go to runs/components/<dataset>/<row>/ and benchmarks/COMPONENTS.json (exact commands, times, and
the full `pyro-vae elbo --json` output); `--markdown` prints the README's table from that file.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import time
from pathlib import Path

GREY = ["--binarize", "none"]
ROWS: dict[str, tuple[str, list[str], int]] = {
    # name: (component kind, options that differ from the baseline, IWAE K for the evaluation)
    "standard-normal": ("baseline", [], 100),
    "learned-gaussian": ("prior", ["--prior", "learned-gaussian"], 100),
    "mog": ("prior", ["--prior", "mog"], 100),
    "vamp": ("prior", ["--prior", "vamp"], 100),
    "flow": ("prior", ["--prior", "flow"], 100),
    "full-cov": ("guide", ["--guide", "full-cov"], 0),
    "iaf": ("guide", ["--guide", "iaf"], 0),
    "meanfield": ("objective", ["--objective", "meanfield"], 0),
    "warmup": ("objective", ["--warmup-epochs", "5"], 0),
    "iwae-5": ("objective", ["--objective", "iwae", "--particles", "5"], 100),
    "continuous-bernoulli": ("likelihood", ["--likelihood", "continuous-bernoulli", *GREY], 0),
    "beta": ("likelihood", ["--likelihood", "beta", *GREY], 0),
    "gaussian": ("likelihood", ["--likelihood", "gaussian", "--likelihood-learn-sigma", *GREY], 0),
    "laplace": ("likelihood", ["--likelihood", "laplace", "--likelihood-learn-sigma", *GREY], 0),
    "discretized-logistic": ("likelihood", ["--likelihood", "discretized-logistic", *GREY], 0),
}


def run(cmd: list[str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def _fmt(entry: dict | None, key: str) -> str:
    if not entry or "result" not in entry or entry["result"].get(key) is None:
        return "—"
    return f"{entry['result'][key]:.2f}" if "bits" not in key else f"{entry['result'][key]:.3f}"


def markdown(results: dict) -> str:
    """The README table: one row per component, MNIST and Fashion-MNIST side by side."""
    lines = [
        "| component | differs from the baseline by | MNIST ELBO | MNIST IWAE-100 | Fashion ELBO | Fashion IWAE-100 "
        "| agreement z (M / F) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (kind, options, _) in ROWS.items():
        m, f = results.get("mnist", {}).get(name), results.get("fashion-mnist", {}).get(name)
        elbo_m, elbo_f = _fmt(m, "elbo"), _fmt(f, "elbo")
        if name == "discretized-logistic":  # a discrete likelihood: bits/dim too
            elbo_m += f" ({_fmt(m, 'elbo_bits_per_dim')} bits/dim)"
            elbo_f += f" ({_fmt(f, 'elbo_bits_per_dim')} bits/dim)"
        z = " / ".join(_fmt(e, "agreement_z") for e in (m, f))
        label = f"{kind}: {name}" if kind != "baseline" else "baseline (all defaults)"
        lines.append(
            f"| {label} | `{' '.join(options) or '—'}` | {elbo_m} | {_fmt(m, 'iwae')} | {elbo_f} | "
            f"{_fmt(f, 'iwae')} | {z} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", choices=["mnist", "fashion-mnist"], default=None)
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--iw-samples", type=int, default=None, help="override every row's IWAE K (0: ELBO only)")
    parser.add_argument("--out", default="benchmarks/COMPONENTS.json")
    parser.add_argument("--markdown", action="store_true", help="only print the table from --out")
    args = parser.parse_args()
    results_path = Path(args.out)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.markdown:
        print(markdown(results))
        return
    for dataset in [args.only] if args.only else ["mnist", "fashion-mnist"]:
        for name in args.rows:
            kind, options, iwae_k = ROWS[name]
            iwae_k = iwae_k if args.iw_samples is None else args.iw_samples
            out = f"runs/components/{dataset}/{name}"
            train = [
                "pyro-vae",
                "train",
                "--dataset",
                dataset,
                "--data-dir",
                args.data_dir,
                "--epochs",
                str(args.epochs),
                "--seed",
                "0",
                "--out",
                out,
                "--overwrite",
                "--no-progress",
                *options,
            ]
            code, log, train_s = run(train)
            entry = {"kind": kind, "train_cmd": shlex.join(train), "train_s": round(train_s, 1), "train_rc": code}
            if code == 0:
                evaluate = [
                    "pyro-vae",
                    "elbo",
                    "--checkpoint",
                    f"{out}/ckpt.pt",
                    "--data-dir",
                    args.data_dir,
                    "--iw-samples",
                    str(iwae_k),
                    "--json",
                ]
                code, text, eval_s = run(evaluate)
                entry.update(eval_cmd=shlex.join(evaluate), eval_s=round(eval_s, 1), eval_rc=code)
                try:
                    entry["result"] = json.loads(text.splitlines()[0])
                except (json.JSONDecodeError, IndexError):
                    entry["error"] = text[-500:]
            else:
                entry["error"] = log[-500:]
            results.setdefault(dataset, {})[name] = entry
            results_path.write_text(json.dumps(results, indent=1))
            r = entry.get("result", {})
            print(
                f"{dataset:14s} {name:22s} rc={entry.get('eval_rc', code)} elbo={r.get('elbo')} "
                f"iwae={r.get('iwae')} z={r.get('agreement_z')} train {train_s:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
