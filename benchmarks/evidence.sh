#!/usr/bin/env bash
# How far the bounds are from log p(x), on the reference model (configs/mnist-reference.toml, 10 epochs: the run
# benchmarks/latent_layers.sh writes to runs/latent-layers/one-layer-reference):
#   - BDMC: the sandwich width of AIS with 100, 1,000 and 4,000 steps on 100 images simulated from the model;
#   - the inference gaps (Cremer et al. 2018) on the first LIMIT (1,000) test images and the first LIMIT training
#     images, the diagonal q* and the full-covariance one, AIS with 1,000 steps.
# One thread, one job at a time. JSON per job in OUT.
#   DATA_DIR=../shared/data bash benchmarks/evidence.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
CKPT=${CKPT:-runs/latent-layers/one-layer-reference/ckpt.pt}
OUT=${OUT:-runs/evidence}
LIMIT=${LIMIT:-1000}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
for steps in 100 1000 4000; do
    /usr/bin/time -f "%e s" "$PYRO_VAE" elbo --checkpoint "$CKPT" --bdmc --ais "$steps" --limit 100 --iw-samples 5000 \
        --batch-size 100 --no-progress --json > "$OUT/bdmc-$steps.json" 2> "$OUT/bdmc-$steps.time"
done
for split in test train; do
    /usr/bin/time -f "%e s" "$PYRO_VAE" gaps --checkpoint "$CKPT" --data-dir "$DATA_DIR" --split "$split" \
        --limit "$LIMIT" --full-cov --no-progress --json > "$OUT/gaps-$split.json" 2> "$OUT/gaps-$split.time"
done
