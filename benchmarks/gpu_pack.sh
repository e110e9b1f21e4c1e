#!/usr/bin/env bash
# Pack what benchmarks/gpu.sh needs on a GPU machine that has PyTorch but no network and no pyro-ppl:
#
#   benchmarks/gpu_pack.sh PACK --data-dir DIR     # here: wheels (pyro-ppl, pyro-api, tomli-w, pyro-vae) + MNIST gzipped
#   bash PACK/run.sh OUT                           # there, from a copy of this checkout: install, unpack, gpu.sh, OUT/gpu.tgz
#
# PACK is a new folder inside the checkout, ignored by git (.gitignore has /.gpu-pack/): name it among the ignored
# paths that go with the copy of the tree you hand the GPU machine. The wheels are pure Python; pyro-ppl's version
# is the one installed here. run.sh installs them into the machine's python3 (or /tmp/site where that python is
# read-only), unpacks MNIST into /tmp/data, runs gpu.sh with THROUGHPUT_ARGS / STEP_TIMEOUT / GPU_SH_TIMEOUT
# (defaults sized for a 15-minute lease) and packs the results, checkpoints left out, into OUT/gpu.tgz and
# OUT/summary.md; it exits with gpu.sh's status.
set -euo pipefail
PACK=${1:?usage: benchmarks/gpu_pack.sh PACK --data-dir DIR}
[ "${2:-}" = "--data-dir" ] || { echo "usage: benchmarks/gpu_pack.sh PACK --data-dir DIR" >&2; exit 2; }
DATA=${3:?--data-dir needs a folder}
PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$DATA/MNIST/raw/train-images-idx3-ubyte" ] || { echo "gpu_pack.sh: no MNIST under $DATA/MNIST/raw" >&2; exit 2; }
mkdir -p "$PACK"
PACK=$(cd "$PACK" && pwd)
case "$PACK" in "$ROOT"/?*) ;; *) echo "gpu_pack.sh: PACK must be a folder inside $ROOT" >&2; exit 2 ;; esac
if [ -n "$(ls -A "$PACK")" ] && [ ! -f "$PACK/run.sh" ]; then
  echo "gpu_pack.sh: $PACK holds files that are not a pack; choose a new folder" >&2; exit 2
fi
git -C "$ROOT" check-ignore -q "$PACK" || { echo "gpu_pack.sh: git does not ignore $PACK (use .gpu-pack)" >&2; exit 2; }
rm -rf "$PACK/whl" "$PACK/MNIST" "$PACK/run.sh"
mkdir -p "$PACK/whl" "$PACK/MNIST/raw"
PYRO=$("$PY" -c 'import pyro; print(pyro.__version__)')
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$PACK/whl" "pyro-ppl==$PYRO" pyro-api tomli-w
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$PACK/whl" "$ROOT"
for f in "$DATA"/MNIST/raw/*-ubyte; do gzip -c "$f" > "$PACK/MNIST/raw/$(basename "$f").gz"; done
REL=$(realpath --relative-to="$ROOT" "$PACK")
cat > "$PACK/run.sh" <<EOF
#!/usr/bin/env bash
# Written by benchmarks/gpu_pack.sh: run from the checkout's root on the GPU machine, as bash $REL/run.sh OUT.
set -u
OUT=\${1:?usage: bash $REL/run.sh OUT}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$REL"/whl/*.whl; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$REL"/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site  # (the console script pyro-vae is then missing: one CUDA test needs it)
fi
mkdir -p /tmp/data/MNIST/raw
for f in "$REL"/MNIST/raw/*.gz; do gunzip -c "\$f" > /tmp/data/MNIST/raw/\$(basename "\$f" .gz); done
# python -m puts the checkout first on sys.path; give its package the installed layout (cli/ is pyro_vae.cli)
# for the run, and take it away after.
if [ ! -e pyro_vae/cli ]; then cp -r cli pyro_vae/cli; trap 'rm -rf pyro_vae/cli' EXIT; fi
export PYRO_VAE_TEST_DATA=/tmp/data PYTHON=python3
export THROUGHPUT_ARGS="\${THROUGHPUT_ARGS:---rounds 10 --pause 0.1}" STEP_TIMEOUT=\${STEP_TIMEOUT:-200}
timeout -k 10 \${GPU_SH_TIMEOUT:-420} bash benchmarks/gpu.sh /tmp/gpu-results --data-dir /tmp/data
status=\$?
echo "gpu.sh exit \$status (124: stopped at GPU_SH_TIMEOUT; the steps done are in the archive)"
mkdir -p "\$OUT"
tar czf "\$OUT/gpu.tgz" --exclude='*.pt' --exclude='*.safetensors' -C /tmp gpu-results
if [ -f /tmp/gpu-results/summary.md ]; then cp /tmp/gpu-results/summary.md "\$OUT/"; cat "\$OUT/summary.md"; fi
exit \$status
EOF
echo "packed $(du -sh "$PACK" | cut -f1) into $PACK; on the GPU machine: bash $REL/run.sh OUT"
