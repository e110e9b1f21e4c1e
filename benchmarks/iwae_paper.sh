#!/usr/bin/env bash
# The IWAE paper's 1-layer MNIST VAE (Burda, Grosse & Salakhutdinov 2016, table 1, k=1: test NLL
# 86.76): dynamically binarized MNIST, all 60,000 training images, MLP 784-200-200-50 with tanh,
# batch 20, Adam (eps 1e-4) with the paper's schedule (stage i = 0..7 lasts 3^i epochs at
# 1e-3 * 10^(-i/7): 3280 epochs), test log-likelihood bound with k = 5000.
# The full run is about 9.8 million steps; EPOCHS stops it earlier (the schedule still applies).
#   DATA_DIR=../shared/data EPOCHS=13 LIMIT=1000 bash benchmarks/iwae_paper.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
EPOCHS=${EPOCHS:-3280}
OUT=${OUT:-runs/iwae-paper}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
LIMIT_ARGS=()
if [[ -n "${LIMIT:-}" ]]; then LIMIT_ARGS=(--limit "$LIMIT"); fi
time "$PYRO_VAE" train --dataset mnist --data-dir "$DATA_DIR" --binarize dynamic --likelihood bernoulli \
    --net mlp --hidden 200,200 --activation tanh --latent-dim 50 --batch-size 20 --lr 1e-3 --adam-eps 1e-4 \
    --lr-schedule iwae --val-size 0 --epochs "$EPOCHS" --seed 0 --checkpoint-every 10 \
    --out "$OUT" --overwrite --no-progress
time "$PYRO_VAE" elbo --checkpoint "$OUT/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 5000 --batch-size 100 \
    "${LIMIT_ARGS[@]}" --json | tee "$OUT/elbo.json"
