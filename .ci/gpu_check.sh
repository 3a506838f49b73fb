#!/usr/bin/env bash
# The project's one GPU check (DEVELOPERS.md, "the GPU rule"): run from the repository root on a
# lent H100 / H200 with no network, torch and Triton preinstalled. Installs ddif against the
# machine's torch, builds the CUDA CSM extension for the card, runs the CUDA tests, compute-
# sanitizer (memcheck, racecheck) on the CSM op, the op benchmarks, end-to-end throughput and a
# station scene, and prints one compact summary (every number with the card named). Meant to
# finish in under 8 minutes; each step has its own time limit and a failed step does not stop
# the others.
#
#   bash .ci/gpu_check.sh            # on the device machine (the run tool: command "bash .ci/gpu_check.sh")
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-$(mktemp -d)}
SUMMARY="$OUT/gpu_summary.txt"
: > "$SUMMARY"
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu-check $(elapsed)s] $*"; }
record() { echo "$*" | tee -a "$SUMMARY"; }
run_step() {   # run_step NAME TIMEOUT_S CMD...: log to $OUT/NAME.log, record status
  local name=$1 limit=$2; shift 2
  say "$name ..."
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then record "$name: ok"; elif [ $rc -eq 124 ]; then record "$name: TIMEOUT after ${limit}s";
  else record "$name: FAILED (rc $rc; last lines below)"; tail -5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"; fi
  return $rc
}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
if [ -z "$CARD" ]; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi found none): nothing to measure here" >&2
  exit 2
fi
record "card: $CARD"
record "software: $(python -c 'import torch, triton, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}")' 2>&1)"

# --- install against the machine's torch, CUDA extension for this card
CAP=$(python -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$CAP}
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then export CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")"); fi
run_step install 300 pip install --no-build-isolation --no-deps -e .
python - <<'PY' | tee -a "$SUMMARY"
from ddif.kernels import available
print("kernels:", ", ".join(f"{k}={'live' if v is True else v}" for k, v in available().items()))
PY

# --- CUDA tests (the kernel test files run their CUDA cases here; the rest of the suite is CPU-tested in CI)
run_step cuda_tests 240 python -m pytest -q -p no:cacheprovider -x tests/test_kernels_csm.py tests/test_kernels_dwt.py \
  tests/test_kernels_fwm.py tests/test_inference_path.py tests/test_runtime.py
grep -E "passed|failed" "$OUT/cuda_tests.log" | tail -1 | sed 's/^/    /' | tee -a "$SUMMARY"

# --- compute-sanitizer on the CSM op
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    run_step "sanitizer_$tool" 180 compute-sanitizer --tool "$tool" --error-exitcode 9 python .ci/csm_sanitize.py
    grep -E "ERROR SUMMARY|csm_sanitize" "$OUT/sanitizer_$tool.log" | tail -2 | sed 's/^/    /' | tee -a "$SUMMARY"
  done
else
  record "sanitizer: compute-sanitizer not found on this machine"
fi

# --- op benchmarks (fused vs eager; CUDA events, L2 flushed), end-to-end throughput, a station scene
run_step ops 180 python benchmarks/ops.py --device cuda --sizes 256,1024 --csv ''
sed -n '/^|/p' "$OUT/ops.log" | tee -a "$SUMMARY"
run_step throughput 240 python benchmarks/throughput.py --device cuda --size 256 --steps 10 --csv ''
sed -n '/^|/p' "$OUT/throughput.log" | tee -a "$SUMMARY"
if python -c "import rasterio" 2> /dev/null; then
  run_step station 180 python benchmarks/station.py --device cuda --backends pytorch --threads 8 --csv ''
  sed -n '/^|/p' "$OUT/station.log" | tee -a "$SUMMARY"
else
  record "station: skipped (rasterio is not installed on this machine)"
fi

record "total: $(elapsed) s"
echo
echo "===== GPU check summary ($CARD) ====="
cat "$SUMMARY"
