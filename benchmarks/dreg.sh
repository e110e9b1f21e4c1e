#!/usr/bin/env bash
# The doubly reparameterised IWAE gradient (--objective iwae-dreg, Tucker et al. 2019) against the plain IWAE
# gradient (--objective iwae) at the reference protocol (configs/mnist-reference.toml: MLP 784-400-20 relu, Adam
# 1e-3, batch 128, 10 epochs, dynamically binarized MNIST): DReG with k = 5 and k = 50, IWAE with k = 50. IWAE with
# k = 5 is runs/latent-layers/one-layer-iwae5 (benchmarks/latent_layers.sh, the same protocol), scored here again
# unless its scores are there. Each is scored on the test split: the ELBO and IWAE-100 on all 10,000 images, and
# IWAE-5000 on the first LIMIT (1,000 by default). One run at a time, one thread. Then ("speed") the training step's
# speed, iwae-dreg against iwae at k = 5 and 50, interleaved in one process (benchmarks/dreg_speed.py). NAMES="a b"
# runs only those (iwae50 dreg5 dreg50 iwae5 speed).
#   DATA_DIR=../shared/data bash benchmarks/dreg.sh > runs/dreg/table.txt
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/dreg}
LIMIT=${LIMIT:-1000}
EPOCHS=${EPOCHS:-10}
NAMES=${NAMES:-}
PYRO_VAE=${PYRO_VAE:-.venv/bin/pyro-vae}
IWAE5=${IWAE5:-runs/latent-layers/one-layer-iwae5}
common=(--config configs/mnist-reference.toml --data-dir "$DATA_DIR" --epochs "$EPOCHS" --threads 1 --overwrite
    --no-progress)

wanted() { [[ -z "$NAMES" || " $NAMES " == *" $1 "* ]]; }

score() {  # RUN_FOLDER NAME: the ELBO and IWAE-100 on the whole test split, IWAE-5000 on its first LIMIT images
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$1/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 100 \
        --json > "$OUT/$2.elbo.json"
    OMP_NUM_THREADS=1 "$PYRO_VAE" elbo --checkpoint "$1/ckpt.pt" --data-dir "$DATA_DIR" --iw-samples 5000 \
        --limit "$LIMIT" --batch-size 100 --json > "$OUT/$2.iwae5000.json"
}

run() {  # NAME ARGS...: train, then score
    local name=$1; shift
    wanted "$name" || return 0
    "$PYRO_VAE" train "${common[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.train.log" 2>&1
    score "$OUT/$name" "$name"
}

mkdir -p "$OUT"
run iwae50 --objective iwae --particles 50
run dreg5 --objective iwae-dreg --particles 5
run dreg50 --objective iwae-dreg --particles 50
if wanted iwae5; then  # (the existing run, not retrained: its scores copied, or computed if absent)
    if [[ -f "${IWAE5%/}.elbo.json" && -f "${IWAE5%/}.iwae5000.json" ]]; then
        cp "${IWAE5%/}.elbo.json" "$OUT/iwae5.elbo.json"
        cp "${IWAE5%/}.iwae5000.json" "$OUT/iwae5.iwae5000.json"
    else
        score "$IWAE5" iwae5
    fi
fi
if wanted speed; then
    .venv/bin/python benchmarks/dreg_speed.py --data-dir "$DATA_DIR" --particles 5 50 --steps 20 --rounds 10 \
        --threads 1 --out "$OUT/speed.json" > "$OUT/speed.log" 2>&1
fi
# A table of the four: IWAE-5000 (+- stderr) on LIMIT images, IWAE-100 and the ELBO on the whole test split.
.venv/bin/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'run':8} {'IWAE-5000':>18} {'IWAE-100':>18} {'ELBO':>18}")
for name in ("iwae5", "iwae50", "dreg5", "dreg50"):
    try:
        big = json.loads((out / f"{name}.iwae5000.json").read_text())
        small = json.loads((out / f"{name}.elbo.json").read_text())
    except (OSError, ValueError):
        continue
    cell = lambda d, k: f"{d[k]:8.2f} +- {d[k + '_stderr']:.2f}"
    print(f"{name:8} {cell(big, 'iwae'):>18} {cell(small, 'iwae'):>18} {cell(small, 'elbo'):>18}")
EOF
