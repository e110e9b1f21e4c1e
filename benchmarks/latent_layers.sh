#!/usr/bin/env bash
# One latent layer against two, at the reference protocol (configs/mnist-reference.toml: MLP 784-400 relu, Adam 1e-3,
# batch 128, 10 epochs, dynamically binarized MNIST): the one-layer reference (z = 20); the same networks with a
# second layer of 10 on top (networks of 100,100 units between the layers), inferred bottom-up and top-down (the
# ladder, without and with its 3-epoch KL warm-up: configs/ladder-mnist.toml); and the one- and two-layer (bottom-up)
# models trained on the IWAE bound with k = 5. Each is scored on the test split: the ELBO and IWAE-100 on all 10,000
# images, and IWAE-5000 on the first LIMIT (1,000 by default). Two runs at a time, one thread each.
# NAMES="a b" runs only those.
#   DATA_DIR=../shared/data bash benchmarks/latent_layers.sh
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/latent-layers}
LIMIT=${LIMIT:-1000}
EPOCHS=${EPOCHS:-10}
NAMES=${NAMES:-}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
common=(--config configs/mnist-reference.toml --data-dir "$DATA_DIR" --epochs "$EPOCHS" --threads 1 --overwrite
    --no-progress)
two=(--structure hierarchical --latent-dims 20,10 --layer-hidden 100,100)

run() {  # NAME ARGS...: train, then score
    local name=$1; shift
    if [[ -n "$NAMES" && " $NAMES " != *" $name "* ]]; then return; fi
    "$PYRO_VAE" train "${common[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.train.log" 2>&1
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$OUT/$name/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 100 \
        --json > "$OUT/$name.elbo.json"
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$OUT/$name/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 5000 \
        --limit "$LIMIT" --batch-size 100 --json > "$OUT/$name.iwae5000.json"
}
mkdir -p "$OUT"
(
    run one-layer-reference
    run two-layer-bottom-up "${two[@]}"
    run two-layer-ladder "${two[@]}" --guide ladder
    run two-layer-ladder-warmup "${two[@]}" --guide ladder --warmup-epochs 3
) &
(
    run one-layer-iwae5 --objective iwae --particles 5
    run two-layer-bottom-up-iwae5 "${two[@]}" --objective iwae --particles 5
) &
wait
