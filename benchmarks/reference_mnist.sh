#!/usr/bin/env bash
# Reference quality run: configs/mnist-reference.toml (MLP 784-400-20 VAE, dynamically binarized MNIST,
# 10 epochs), then the test-set bounds. Run from the repository root with the package installed (make train
# does the same).
#   DATA_DIR=../shared/data OUT=runs/reference-mnist-mlp bash benchmarks/reference_mnist.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/reference-mnist-mlp}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
time "$PYRO_VAE" train --config configs/mnist-reference.toml --data-dir "$DATA_DIR" --out "$OUT" --overwrite \
    --no-progress
time "$PYRO_VAE" elbo --checkpoint "$OUT/ckpt.pt" --json | tee "$OUT/elbo.json"
