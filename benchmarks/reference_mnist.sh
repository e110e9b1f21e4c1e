#!/usr/bin/env bash
# Reference quality run: MLP 784-400-20 VAE, dynamically binarized MNIST, 10 epochs, then the
# test-set bounds. Run from the repository root with the package installed (make train does the same).
#   DATA_DIR=../shared/data OUT=runs/reference-mnist-mlp bash benchmarks/reference_mnist.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/reference-mnist-mlp}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
time "$PYRO_VAE" train --dataset mnist --data-dir "$DATA_DIR" --binarize dynamic --likelihood bernoulli \
    --net mlp --hidden 400 --latent-dim 20 --batch-size 128 --lr 1e-3 --epochs 10 --seed 0 \
    --out "$OUT" --overwrite --no-progress
time "$PYRO_VAE" elbo --checkpoint "$OUT/ckpt.pt" --data-dir "$DATA_DIR" --json | tee "$OUT/elbo.json"
