#!/usr/bin/env bash
# One command that measures pyro-vae on a GPU and writes each result as JSON into OUT, with OUT/summary.md:
#
#   benchmarks/gpu.sh OUT [--data-dir DIR]          # DIR: a torchvision root with MNIST [default: $PYRO_VAE_DATA]
#   DEVICE=cpu QUICK=1 benchmarks/gpu.sh OUT ...    # the same steps on a CPU with tiny settings (a dry run, minutes)
#   THROUGHPUT_ARGS="--rounds 10 --pause 0.1" STEP_TIMEOUT=300 benchmarks/gpu.sh OUT ...   # a shorter lease
#
#   machine.json          date, device, versions (nvidia-smi's line when there is one)
#   cuda_tests.json       pytest -m cuda: passed / failed / skipped
#   throughput-mlp.json   benchmarks/throughput.py's loops (plain PyTorch, stock Pyro, pyro-vae compiled and
#                         --no-compile), MLP 784-400-20
#   throughput-conv.json  the same, conv net
#   epoch.json            a full 60,000-image epoch of the reference MLP (batch 128): seconds and images/s of the
#                         second epoch of a two-epoch run (the first also compiles the step: its seconds are kept)
#   reference.json        the 10-epoch reference run (configs/mnist-reference.toml) on DEVICE: test ELBO against
#                         the CPU figure (-102.714 +- 0.266), training seconds
#   iwae5000.json         pyro-vae elbo --iw-samples 5000 over the 10,000 test images: seconds and peak memory
#   profile.json          benchmarks/gpu_profile.py: IWAE-5000 on 1,000 images by chunk size, epochs 1-5 timed, and
#                         profile_ops.txt / profile_python.txt (the torch profiler's and cProfile's view of an epoch)
#
# Needs only the project's install (python -m pyro_vae, pytest) and the MNIST files. A step that fails is recorded
# as failed in its JSON file and the script carries on; it exits non-zero if any step failed.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu.sh OUT [--data-dir DIR]}
shift
DATA=${PYRO_VAE_DATA:-}
if [ "${1:-}" = "--data-dir" ]; then DATA=${2:?--data-dir needs a folder}; fi
if [ -z "$DATA" ]; then echo "benchmarks/gpu.sh: set PYRO_VAE_DATA or pass --data-dir DIR (a torchvision root with MNIST)" >&2; exit 2; fi
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-3600}  # seconds any one step may take before it is stopped and recorded as failed
read -r -a EXTRA_THROUGHPUT <<< "${THROUGHPUT_ARGS:-}"
PY=${PYTHON:-python}  # the interpreter pyro-vae is installed in
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)
FAILED=0
export PYRO_VAE_DATA="$DATA"

if [ "$QUICK" = 1 ]; then  # tiny settings: every step runs, in minutes, on a CPU
  THROUGHPUT=(--train-images 512 --rounds 2 --warmup-rounds 0 --pause 0 --no-memory --no-flops)
  EPOCH=(--train-limit 2000)
  REFERENCE=(--epochs 1 --train-limit 2000)
  IWAE=(--iw-samples 50 --limit 200)
  REFERENCE_ELBO=(--limit 500)
  PROFILE=(--images 200 --iw-samples 50 --train-limit 2000 --budgets 4194304 16777216)
else
  THROUGHPUT=()
  EPOCH=()
  REFERENCE=()
  IWAE=(--iw-samples 5000)
  REFERENCE_ELBO=()
  PROFILE=()
fi

step() {  # step NAME COMMAND...: run it, log to OUT/NAME.log, remember a failure
  local name=$1; shift
  echo "== $name: $*" >&2
  local start=$SECONDS
  if timeout -k 10 "$STEP_TIMEOUT" "$@" > "$OUT/$name.log" 2>&1; then
    echo "   done in $((SECONDS - start)) s" >&2
  else
    echo "   FAILED (see $OUT/$name.log)" >&2
    FAILED=1
    "$PY" -c 'import json, sys; json.dump({"failed": True, "log": sys.argv[2]}, open(sys.argv[1], "w"))' \
      "$OUT/$name.json" "$OUT/$name.log"
  fi
}

cd "$ROOT"
step machine "$PY" - "$OUT/machine.json" "$DEVICE" "$QUICK" <<'EOF'
import json, platform, subprocess, sys
from datetime import datetime, timezone
import pyro, torch
out, device, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True) if device != "cpu" else None
info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device, "quick": quick,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() and device != "cpu" else platform.processor() or "cpu",
        "nvidia_smi": smi.stdout.strip() if smi and smi.returncode == 0 else None, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "pyro": pyro.__version__,
        "torch_threads": torch.get_num_threads()}
json.dump(info, open(out, "w"), indent=1)
EOF

step cuda_tests "$PY" -m pytest -m cuda -q -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml" tests
"$PY" - "$OUT" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out = Path(sys.argv[1])
if (out / "cuda_tests.xml").is_file():
    suite = ET.parse(out / "cuda_tests.xml").getroot().find("testsuite") or ET.parse(out / "cuda_tests.xml").getroot()
    n, failed = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
    skipped = int(suite.get("skipped"))
    json.dump({"tests": n, "passed": n - failed - skipped, "failed": failed, "skipped": skipped}, open(out / "cuda_tests.json", "w"))
EOF

for net in mlp conv; do
  step "throughput-$net" "$PY" benchmarks/throughput.py --data-dir "$DATA" --device "$DEVICE" --net "$net" \
    ${THROUGHPUT[@]+"${THROUGHPUT[@]}"} ${EXTRA_THROUGHPUT[@]+"${EXTRA_THROUGHPUT[@]}"} --out "$OUT/throughput-$net.json"
done

step epoch "$PY" -m pyro_vae train --config configs/mnist-reference.toml --epochs 2 --val-size 0 --device "$DEVICE" \
  ${EPOCH[@]+"${EPOCH[@]}"} --out "$OUT/runs/epoch" --overwrite --no-progress
# The same epochs as a torchrun job of one process (NCCL on a GPU, Gloo on the CPU), and the all-reduce a step of a
# job makes (the reference MLP's gradients and loss, 652,826 floats) timed in a one-process group on the device.
step torchrun_epoch "$PY" -m torch.distributed.run --nproc-per-node 1 --master-port 29533 -m pyro_vae train \
  --config configs/mnist-reference.toml --epochs 2 --val-size 0 --device "$DEVICE" ${EPOCH[@]+"${EPOCH[@]}"} \
  --out "$OUT/runs/torchrun_epoch" --overwrite --no-progress
step all_reduce "$PY" - "$OUT/all_reduce.json" "$DEVICE" <<'EOF'
import json, os, statistics, sys, time
import torch, torch.distributed as dist
device = torch.device("cuda" if sys.argv[2] in ("auto", "cuda") and torch.cuda.is_available() else sys.argv[2])
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29534")
dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
flat, times = torch.zeros(652_826, device=device), []
for i in range(220):
    if device.type == "cuda": torch.cuda.synchronize()
    start = time.perf_counter(); dist.all_reduce(flat)
    if device.type == "cuda": torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
json.dump({"backend": dist.get_backend(), "processes": 1, "floats": flat.numel(),
           "all_reduce_ms": 1000 * statistics.median(times[20:])}, open(sys.argv[1], "w"))
dist.destroy_process_group()
EOF
step reference "$PY" -m pyro_vae train --config configs/mnist-reference.toml --device "$DEVICE" ${REFERENCE[@]+"${REFERENCE[@]}"} \
  --out "$OUT/runs/reference" --overwrite --no-progress
step reference_elbo "$PY" -m pyro_vae elbo --checkpoint "$OUT/runs/reference/ckpt.pt" --device "$DEVICE" \
  ${REFERENCE_ELBO[@]+"${REFERENCE_ELBO[@]}"} --json
step iwae5000 "$PY" -m pyro_vae elbo --checkpoint "$OUT/runs/reference/ckpt.pt" --device "$DEVICE" ${IWAE[@]+"${IWAE[@]}"} --json
step profile "$PY" benchmarks/gpu_profile.py --checkpoint "$OUT/runs/reference/ckpt.pt" --data-dir "$DATA" \
  --device "$DEVICE" --out "$OUT" ${PROFILE[@]+"${PROFILE[@]}"}

"$PY" - "$OUT" <<'EOF' || FAILED=1
import json, math, sys
from pathlib import Path
out = Path(sys.argv[1])
CPU_REFERENCE = (-102.714, 0.266)  # README: test ELBO of configs/mnist-reference.toml on the CPU
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else {"failed": True}
def last_json(name):
    try:
        return json.loads((out / f"{name}.log").read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {"failed": True}
def metrics(run):
    lines = (out / "runs" / run / "metrics.jsonl").read_text().splitlines() if (out / "runs" / run / "metrics.jsonl").is_file() else []
    return [json.loads(line) for line in lines]
machine = load("machine.json")
quick = machine.get("quick")
epoch = metrics("epoch")
if epoch:
    json.dump({"images_per_s": epoch[-1]["images_per_s"], "seconds": epoch[-1]["seconds"],
               "images": round(epoch[-1]["images_per_s"] * epoch[-1]["seconds"]),
               "first_epoch_seconds": epoch[0]["seconds"]}, open(out / "epoch.json", "w"))
ref, ref_runs = last_json("reference_elbo"), metrics("reference")
if "elbo" in ref:
    diff = ref["elbo"] - CPU_REFERENCE[0]
    noise = 3 * math.hypot(ref["elbo_stderr"], CPU_REFERENCE[1])
    json.dump({"test_elbo": ref["elbo"], "elbo_stderr": ref["elbo_stderr"], "iwae": ref.get("iwae"),
               "cpu_test_elbo": CPU_REFERENCE[0], "difference": diff, "within_noise": abs(diff) < noise if not quick else None,
               "training_seconds": sum(m["seconds"] for m in ref_runs)}, open(out / "reference.json", "w"))
iw = last_json("iwae5000")
if "iwae" in iw:
    json.dump({"k": iw["iwae_k"], "images": iw["n"], "seconds": iw["seconds"], "iwae": iw["iwae"],
               "peak_memory_mib": iw["peak_memory_mib"], "peak_memory_of": iw["peak_memory_of"]}, open(out / "iwae5000.json", "w"))
rows = [f"# pyro-vae on {machine.get('device_name')} ({machine.get('device')}){' — QUICK dry run, not figures' if quick else ''}", "",
        f"{machine.get('date')}; torch {machine.get('torch')} (CUDA {machine.get('cuda')}), pyro {machine.get('pyro')}, "
        f"Python {machine.get('python')}", ""]
t = load("cuda_tests.json")
rows.append(f"- CUDA tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped" if "tests" in t
            else "- CUDA tests: did not run")
for net in ("mlp", "conv"):
    r = load(f"throughput-{net}.json")
    if "loops" in r:
        loops = r["loops"]
        rows.append(f"- throughput, {net}: " + ", ".join(
            f"{k} {v['images_per_s_median']:.0f} img/s" + (f" ({v['ratio_to_plain_median']:.2f}x plain)"
                                                            if "ratio_to_plain_median" in v else "")
            for k, v in loops.items()))
    else:
        rows.append(f"- throughput, {net}: failed")
e = load("epoch.json")
rows.append(f"- one epoch of the reference MLP: {e['images']} images in {e['seconds']:.2f} s ({e['images_per_s']:.0f} img/s;"
            f" the first epoch, which compiles the step: {e['first_epoch_seconds']:.2f} s)"
            if "seconds" in e else "- one epoch: failed")
t = metrics("torchrun_epoch")
rows.append(f"- the same second epoch under torchrun (1 process): {t[-1]['images_per_s']:.0f} img/s" if t else "- torchrun epoch: failed")
a = load("all_reduce.json")
rows.append(f"- all-reduce of the MLP's gradients ({a['floats']} floats, {a['backend']}, 1 process): {a['all_reduce_ms']:.3f} ms"
            if "all_reduce_ms" in a else "- all-reduce: failed")
r = load("reference.json")
rows.append(f"- reference run: test ELBO {r['test_elbo']:.3f} ± {r['elbo_stderr']:.3f} (CPU {CPU_REFERENCE[0]} ± "
            f"{CPU_REFERENCE[1]}; within noise: {r['within_noise']}), trained in {r['training_seconds']:.1f} s"
            if "test_elbo" in r else "- reference run: failed")
i = load("iwae5000.json")
rows.append(f"- IWAE K={i['k']} over {i['images']} test images: {i['seconds']:.1f} s, peak {i['peak_memory_mib']:.0f} MiB "
            f"({i['peak_memory_of']})" if "seconds" in i else "- IWAE: failed")
pr = load("profile.json")
if "epochs" in pr:
    chunks = pr["iwae_by_chunk"]
    rows.append(f"- IWAE K={chunks['k']} over {chunks['images']} images by decoder outputs a pass: " + ", ".join(
        f"2^{int(b).bit_length() - 1}: {r['seconds']:.2f} s" for b, r in chunks["by_budget"].items()))
    rows.append("- epochs 1-5 of the reference MLP (s; 3 profiled, 4 under cProfile): " + ", ".join(
        f"{v:.2f}" for v in pr["epochs"]["epoch_seconds"].values()) + (
        f"; epoch 3's kernels: {pr['epochs']['epoch_3_kernel_seconds']:.3f} s" if pr["epochs"]["epoch_3_kernel_seconds"] else ""))
else:
    rows.append("- profile: failed")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF

exit $FAILED
