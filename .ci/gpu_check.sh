#!/usr/bin/env bash
# The project's one GPU check (DEVELOPERS.md, "the GPU rule"), run from the repository root on a
# lent H100 / H200 (no network; Python 3.12, torch and Triton preinstalled; no rasterio, pystac or
# TensorRT). What matters first comes first, sanitizers last; every step has its own time limit
# and a failed or timed-out step does not stop the others. The limits add up to at most 420 s
# (400 s without the station step), so the whole check ends within 7 minutes:
#
#   step          limit  what
#   install         80   pip install --no-build-isolation --no-deps -e . (CUDA CSM extension for this card)
#   kernel_tests    70   the fused kernels against their <op>_ref references on the GPU, the GPU sampler
#   ops             40   op benchmarks, fused vs eager (CUDA events, L2 flushed)
#   throughput      80   end-to-end throughput, every fast-path row (published loop, eager, fused,
#                        compile, CUDA graphs, bf16, channels-last, tiles, students, ONNX Runtime)
#   scene           50   a 4096 x 4096 PAN scene through the inference path, the fast-path rows (no
#                        rasterio needed)
#   station         20   the station pipeline on a 1024^2 scene, only where rasterio, pystac and
#                        rio-cogeo are importable
#   sanitizers      80   compute-sanitizer memcheck and racecheck on the CSM op (40 s each)
#
#   bash .ci/gpu_check.sh             # on the device machine: prints a summary naming the card
#   bash .ci/gpu_check.sh --dry-run   # anywhere (CI: CPU, Python 3.12, torch 2.11): the same steps
#                                     # on the CPU with tiny shapes, tests collected, not run
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
START=$(date +%s)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
SUMMARY="$OUT/gpu_summary.txt"
: > "$SUMMARY"
PY=${PYTHON:-python3}
LIMIT_TOTAL=0
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu-check $(elapsed)s] $*"; }
record() { echo "$*" | tee -a "$SUMMARY"; }
run_step() {   # run_step NAME LIMIT_S CMD...: log to $OUT/NAME.log, record status
  local name=$1 limit=$2; shift 2
  LIMIT_TOTAL=$(( LIMIT_TOTAL + limit ))
  say "$name (limit ${limit}s) ..."
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then record "$name: ok"; elif [ $rc -eq 124 ]; then record "$name: TIMEOUT after ${limit}s";
  else record "$name: FAILED (rc $rc; last lines below)"; tail -5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"; fi
  return $rc
}
table() { sed -n '/^|/p' "$OUT/$1.log" | tee -a "$SUMMARY"; }

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export PYTHONUNBUFFERED=1
if [ $DRY -eq 1 ]; then
  DEVICE=cpu
  export DDIF_SKIP_CUDA_BUILD=1 OMP_NUM_THREADS=1
  CARD="none: dry run on the CPU ($(uname -m))"
else
  DEVICE=cuda
  CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
  if [ -z "$CARD" ]; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi found none); use --dry-run to check the script" >&2
    exit 2
  fi
fi
record "card: $CARD"
record "software: $("$PY" -c 'import torch, sys
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = "absent"
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {tv}")' 2>&1)"
record "absent here: $("$PY" -c 'import importlib.util as u
print(", ".join(m for m in ("rasterio", "pystac", "rio_cogeo", "onnx", "onnxruntime", "tensorrt") if u.find_spec(m) is None) or "none")')"

# --- 1. install against the machine's torch, the CUDA extension for this card
if [ $DRY -eq 0 ]; then
  CAP=$("$PY" -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")')
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$CAP}
  if [ -z "${CUDA_HOME:-}" ] && command -v nvcc > /dev/null; then export CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")"); fi
  export MAX_JOBS=${MAX_JOBS:-16}
fi
run_step install 80 "$PY" -m pip install --no-build-isolation --no-deps -e .
"$PY" - <<'PY' 2>&1 | tee -a "$SUMMARY"
from ddif.kernels import available
print("kernels:", ", ".join(f"{k}={'live' if v is True else v}" for k, v in available().items()))
PY

# --- 2. the kernels against their references (CUDA cases), the GPU-ready sampler
TESTS="tests/test_kernels_csm.py tests/test_kernels_dwt.py tests/test_kernels_fwm.py tests/test_diffusion.py tests/test_fast_path.py"
if [ $DRY -eq 1 ]; then
  run_step kernel_tests 70 "$PY" -m pytest -q -p no:cacheprovider --collect-only $TESTS
  grep -E "tests? collected|error" "$OUT/kernel_tests.log" | tail -1 | sed 's/^/    /' | tee -a "$SUMMARY"
else
  run_step kernel_tests 70 "$PY" -m pytest -q -p no:cacheprovider -x --timeout 60 $TESTS
  grep -E "passed|failed" "$OUT/kernel_tests.log" | tail -1 | sed 's/^/    /' | tee -a "$SUMMARY"
fi

# --- 3. op benchmarks
if [ $DRY -eq 1 ]; then
  run_step ops 40 "$PY" benchmarks/ops.py --device cpu --sizes 32 --reps 1 --warmup 0 --presets wv3 --csv ''
else
  run_step ops 40 "$PY" benchmarks/ops.py --device cuda --sizes 256,1024 --csv ''
fi
table ops

# --- 4. end-to-end throughput, every fast-path row
if [ $DRY -eq 1 ]; then
  run_step throughput 80 "$PY" benchmarks/throughput.py --device cpu --size 32 --steps 1 --reps 1 \
    --providers cached,fused,bf16,channels-last,student-1,onnxruntime --csv ''
else
  run_step throughput 80 "$PY" benchmarks/throughput.py --device cuda --size 256 --steps 10 --min-time 1 \
    --providers reference,cached,fused,compiled,cuda-graph,bf16,channels-last,tiles-64,student-2,onnxruntime,tensorrt \
    --csv ''
fi
table throughput

# --- 5. a whole scene through the inference path (4096^2 on the GPU), the station where it can run
if [ $DRY -eq 1 ]; then
  run_step scene 50 "$PY" benchmarks/scene.py --device cpu --size 128 --reps 1 \
    --rows null,pytorch,bf16,channels-last,cuda-graphs,onnxruntime --csv ''
else
  run_step scene 50 "$PY" benchmarks/scene.py --device cuda --size 4096 --reps 3 \
    --rows null,pytorch,bf16,cuda-graphs,channels-last,onnxruntime --csv ''
fi
table scene
if "$PY" -c "import rasterio, pystac, rio_cogeo" 2> /dev/null; then
  run_step station 20 "$PY" benchmarks/station.py --device "$DEVICE" --backends null,pytorch --threads 8 \
    --ms-size $([ $DRY -eq 1 ] && echo 32 || echo 512) --csv ''
  table station
else
  record "station: skipped (rasterio / pystac / rio-cogeo are not installed here: the scene row above is its GPU part)"
fi

# --- 6. sanitizers last
if [ $DRY -eq 1 ]; then
  record "sanitizers: skipped (dry run)"
elif command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    run_step "sanitizer_$tool" 40 compute-sanitizer --tool "$tool" --error-exitcode 9 "$PY" .ci/csm_sanitize.py
    grep -E "ERROR SUMMARY|csm_sanitize" "$OUT/sanitizer_$tool.log" | tail -2 | sed 's/^/    /' | tee -a "$SUMMARY"
  done
else
  record "sanitizers: compute-sanitizer not found on this machine"
fi

record "step limits: ${LIMIT_TOTAL} s in all; total: $(elapsed) s"
echo
echo "===== GPU check summary ($CARD) ====="
cat "$SUMMARY"
FAILED=$(grep -cE ": (FAILED|TIMEOUT)" "$SUMMARY")
[ "$FAILED" -eq 0 ] || { echo "gpu_check: $FAILED step(s) failed or timed out" >&2; exit 1; }
