#!/usr/bin/env bash
# The IWAE bound against K on the whole test set (criterion 1 of the evaluation issue): one
# `pyro-vae elbo --json` per K, each line appended to $OUT/k_sweep.jsonl with its wall time and peak
# memory. Run it alone on the machine for timings you quote. From the repository root:
#   CKPT=runs/reference-after/ckpt.pt DATA_DIR=../shared/data bash benchmarks/iwae_k_sweep.sh 1 10 100 1000 5000
set -euo pipefail
CKPT=${CKPT:-runs/mnist-mlp/ckpt.pt}
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-$(dirname "$CKPT")}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
for K in "${@:-1 10 100 1000 5000}"; do
    "$PYRO_VAE" elbo --checkpoint "$CKPT" --data-dir "$DATA_DIR" --iw-samples "$K" --json --no-progress \
        >> "$OUT/k_sweep.jsonl"
    tail -n 1 "$OUT/k_sweep.jsonl" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print("K=%5d  IWAE %.3f ± %.3f  ELBO %.3f ± %.3f  n=%d  %.1f s  peak %.0f MiB (%s)" % (d["iwae_k"], d["iwae"],
      d["iwae_stderr"], d["elbo"], d["elbo_stderr"], d["n"], d["seconds"], d["peak_memory_mib"], d["peak_memory_of"]))'
done
