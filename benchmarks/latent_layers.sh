#!/usr/bin/env bash
# One latent layer against two, at the reference protocol's 10 epochs (Adam 1e-3, batch 128, dynamically
# binarized MNIST): the one-layer reference (configs/mnist-reference.toml), the IWAE paper's one-layer network
# (784-200-200-50 tanh), its two-layer network (784-[200,200]-100-[100,100]-50 tanh) bottom-up and as a ladder
# (configs/ladder-mnist.toml, with its 3-epoch KL warm-up), and the bottom-up one trained on the IWAE bound with
# k = 5. Each model is then scored on the test split: the ELBO and IWAE-100 on all 10,000 images, and IWAE-5000 on
# the first LIMIT (1,000 by default: K = 5000 over all 10,000 images is about an hour per model on two cores).
# Two runs at a time, one thread each.
#   DATA_DIR=../shared/data bash benchmarks/latent_layers.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/latent-layers}
LIMIT=${LIMIT:-1000}
EPOCHS=${EPOCHS:-10}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
IWAE_NETS=(--net mlp --hidden 200,200 --activation tanh)
common=(--data-dir "$DATA_DIR" --epochs "$EPOCHS" --threads 1 --overwrite --no-progress)

run() {  # NAME ARGS...: train, then score
    local name=$1; shift
    "$PYRO_VAE" train "$@" "${common[@]}" --out "$OUT/$name" > "$OUT/$name.train.log" 2>&1
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$OUT/$name/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 100 \
        --json > "$OUT/$name.elbo.json"
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$OUT/$name/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 5000 \
        --limit "$LIMIT" --batch-size 100 --json > "$OUT/$name.iwae5000.json"
}
mkdir -p "$OUT"
(
    run one-layer-reference --config configs/mnist-reference.toml
    run two-layer-ladder --config configs/ladder-mnist.toml
    run one-layer-iwae-nets --config configs/mnist-reference.toml "${IWAE_NETS[@]}" --latent-dim 50
) &
(
    run two-layer-bottom-up --config configs/ladder-mnist.toml --guide diagonal --warmup-epochs 0
    run two-layer-bottom-up-iwae5 --config configs/ladder-mnist.toml --guide diagonal --warmup-epochs 0 \
        --objective iwae --particles 5
) &
wait
for f in "$OUT"/*.elbo.json; do echo "$f"; done
