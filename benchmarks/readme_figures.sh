#!/usr/bin/env bash
# Reruns the README's quick figures in one go, so they can be refreshed together (a few minutes on a
# 2-core CPU): the reference run and its bounds ("Reference result"), the same run repeated from its
# config.toml ("A run described once"), and the custom-component example ("Your own prior or
# likelihood"). Each result is written as JSON into OUT and summarised on stdout.
#   DATA_DIR=../shared/data OUT=runs/readme bash benchmarks/readme_figures.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/readme}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
time "$PYRO_VAE" train --config configs/mnist-reference.toml --data-dir "$DATA_DIR" --out "$OUT/reference" \
    --overwrite --no-progress 2> "$OUT/reference.log"
"$PYRO_VAE" elbo --checkpoint "$OUT/reference/ckpt.pt" --json > "$OUT/reference.json"
time "$PYRO_VAE" train --config "$OUT/reference/config.toml" --out "$OUT/repeat" --overwrite --no-progress \
    2> "$OUT/repeat.log"
"$PYRO_VAE" elbo --checkpoint "$OUT/repeat/ckpt.pt" --json > "$OUT/repeat.json"
time PYTHONPATH=examples "$PYTHON" examples/train_custom.py --data-dir "$DATA_DIR" --out "$OUT/custom" \
    | tail -1 > "$OUT/custom.json"
"$PYTHON" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
ref, rep, custom = (json.load(open(f"{out}/{name}.json")) for name in ("reference", "repeat", "custom"))
keys = ("elbo", "elbo_stderr", "elbo_analytic", "agreement_z", "recon", "kl", "iwae", "iwae_stderr", "active_units")
for key in keys:
    print(f"reference {key:14s} {ref[key]!r:>24}   repeated from config.toml {rep[key]!r:>24}")
print("repeat identical:", all(ref[k] == rep[k] for k in keys))
val = [json.loads(line)["val_elbo"] for line in open(f"{out}/reference/metrics.jsonl")]
print("validation ELBO per epoch:", " ".join(f"{v:.2f}" for v in val))
print("custom example:", {k: custom[k] for k in ("elbo", "elbo_stderr", "iwae", "agreement_z", "kl_method")})
PY
