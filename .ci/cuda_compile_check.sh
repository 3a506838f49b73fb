#!/usr/bin/env bash
# CI step, in the GPU machine's software on this CPU machine: a throwaway venv with its Python (3.12)
# and its CUDA build of torch (2.11, with Triton 3.6) and none of rasterio / pystac / onnx.
#  1. compile AND link the CUDA kernels of the native CSM extension (csrc/style_conv_cuda.cu)
#     against that torch, then import the result, so CUDA code cannot rot unseen without a GPU;
#  2. install ddif there as the GPU rule says (pip install --no-build-isolation --no-deps -e .)
#     and run `.ci/gpu_check.sh --dry-run`: every step of the GPU check on the CPU with tiny
#     shapes, so the check installs, collects and runs where it will run.
# The project's own (CPU) environment is untouched, and the venv is deleted at the end.
#
#   bash .ci/cuda_compile_check.sh          # prints "CUDA compile check: PASS" or "... FAIL (why)"
#
# Environment knobs:
#   PYTHON                 the interpreter of the venv (default: python3.12, the GPU machine's;
#                          found on PATH or under pyenv, else python3 with a warning)
#   DDIF_CUDA_TORCH_SPEC   torch requirement with CUDA (default torch==2.11.0: the GPU machine's)
#   DDIF_SKIP_GPU_DRY_RUN=1  compile check only
#   TORCH_CUDA_ARCH_LIST   GPU architectures to build (default "7.5;8.0;9.0": the SIMT fallback,
#                          fp16 / bf16 tensor cores, Hopper)
#   MAX_JOBS               parallel compile jobs (default 2)
#   KEEP_VENV=1            keep the venv and build tree (their path is printed)
#
# Why each step (see ../shared/design/toolchain.md): the CPU torch cannot link a CUDAExtension; the
# system nvcc's toolkit is partial and torch guesses CUDA_HOME wrongly, so a pip nvcc matching
# torch.version.cuda is installed (with the CCCL headers that cuda_fp16.h needs) and CUDA_HOME set
# by hand; the pip CUDA runtime ships only
# libcudart.so.<major>, so a libcudart.so link is made for the linker.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$(date +%s)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  # the first Python 3.12 that runs (a pyenv shim on PATH may exist without its version selected)
  for candidate in python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' > /dev/null 2>&1; then
      PY=$candidate
      break
    fi
  done
  if [ -z "$PY" ]; then
    echo "warning: no Python 3.12 here (the GPU machine's); using python3" >&2
    PY=python3
  fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ddif-cuda-check.XXXXXX")

cleanup() {
  if [ -n "${KEEP_VENV:-}" ]; then
    echo "kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

elapsed() { echo $(( $(date +%s) - START )); }
fail() {
  echo "CUDA compile check: FAIL ($1) after $(elapsed) s"
  exit 1
}
step() { echo "[cuda-check $(elapsed)s] $*"; }
# pip output goes to a log that is shown when a step fails.
pip_install() {
  "$VPY" -m pip install "$@" >> "$WORK/pip.log" 2>&1 || {
    grep -v "is ignored: it is neither" "$WORK/pip.log" | tail -30
    fail "pip install $*"
  }
}

step "venv in $WORK"
"$PY" -m venv "$WORK/venv" || fail "cannot create a venv"
VPY="$WORK/venv/bin/python"
pip_install "setuptools>=69,<82" wheel ninja numpy

TORCH_SPEC=${DDIF_CUDA_TORCH_SPEC:-torch==2.11.0}
step "installing $TORCH_SPEC"
pip_install "$TORCH_SPEC"
CUDA_VERSION=$("$VPY" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null) || fail "import torch"
[ -n "$CUDA_VERSION" ] || fail "$TORCH_SPEC is not a CUDA build of torch"
CUDA_MAJOR=${CUDA_VERSION%%.*}
step "torch $("$VPY" -c 'import torch; print(torch.__version__)' 2>/dev/null) built with CUDA $CUDA_VERSION"

step "installing nvcc and the CUDA C++ headers (CCCL) matching CUDA $CUDA_VERSION"
# nvcc's front end (nvvm) and its headers (crt) are separate packages that pip would otherwise
# take at their newest release (13.5 beside a 13.0 nvcc: ptxas then rejects the newer PTX)
pip_install "cuda-toolkit[nvcc,cccl]==${CUDA_VERSION}.*" "nvidia-nvvm==${CUDA_VERSION}.*" "nvidia-cuda-crt==${CUDA_VERSION}.*"
SITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
export CUDA_HOME="$SITE/nvidia/cu$CUDA_MAJOR"
[ -x "$CUDA_HOME/bin/nvcc" ] || fail "no nvcc under CUDA_HOME=$CUDA_HOME"
step "$("$CUDA_HOME/bin/nvcc" --version | tail -1)"

mkdir -p "$WORK/linklib"
CUDART=$(find "$SITE/nvidia" -name "libcudart.so.$CUDA_MAJOR*" | head -1)
[ -n "$CUDART" ] || fail "no libcudart.so.$CUDA_MAJOR in the venv"
ln -s "$CUDART" "$WORK/linklib/libcudart.so"
export LDFLAGS="-L$WORK/linklib ${LDFLAGS:-}"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-7.5;8.0;9.0}
export MAX_JOBS=${MAX_JOBS:-2}
unset DDIF_SKIP_CUDA_BUILD DDIF_SKIP_NATIVE_BUILD

step "building the extension with setup.py (archs $TORCH_CUDA_ARCH_LIST)"
BUILD_START=$(date +%s)
"$VPY" setup.py -q build_ext --build-lib "$WORK/ext" --build-temp "$WORK/build" > "$WORK/build.log" 2>&1 || {
  tail -40 "$WORK/build.log"
  fail "build_ext"
}
BUILD_S=$(( $(date +%s) - BUILD_START ))
step "built in ${BUILD_S} s"

step "importing the extension (no GPU needed)"
"$VPY" - "$WORK/ext" <<'EOF' || fail "import / op registration"
import glob
import importlib.util
import sys

import torch

paths = glob.glob(f"{sys.argv[1]}/ddif/_C*.so")
assert len(paths) == 1, paths
spec = importlib.util.spec_from_file_location("ddif._C", paths[0])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert module.with_cuda, "the extension was built without its CUDA kernels"
for op in ("csm_forward", "csm_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"ddif::{op}", key), (op, key)
print(f"  {paths[0].split('/')[-1]}: with_cuda={module.with_cuda}, CPU kernels {module.cpu_kernel_isa()}, "
      f"ddif ops with CPU and CUDA kernels registered")
EOF
if [ -x "$CUDA_HOME/bin/cuobjdump" ]; then
  SO=$(ls "$WORK"/ext/ddif/_C*.so)
  echo "  embedded GPU code: $("$CUDA_HOME/bin/cuobjdump" --list-elf "$SO" 2>/dev/null | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"
fi
step "disk used: $(du -sh "$WORK" | cut -f1)"
echo "CUDA compile check: PASS in $(elapsed) s (build ${BUILD_S} s)"

if [ -n "${DDIF_SKIP_GPU_DRY_RUN:-}" ]; then exit 0; fi
# --- the GPU check's dry run in the GPU machine's software: what that machine has of ddif's needs
# (h5py, tqdm, pillow, safetensors, pytest, pytest-timeout), not rasterio / pystac / onnx
step "GPU check dry run (Python $("$VPY" -c 'import sys; print(sys.version.split()[0])'), torch $("$VPY" -c 'import torch; print(torch.__version__)'))"
pip_install h5py tqdm pillow safetensors pytest pytest-timeout
unset CUDA_HOME LDFLAGS
DRY_OUT="$WORK/dry"
if ! OUT="$DRY_OUT" PYTHON="$VPY" bash .ci/gpu_check.sh --dry-run > "$WORK/dry.log" 2>&1; then
  cat "$WORK/dry.log"
  # the editable install points at the repository: leave no build products of this venv behind
  echo "GPU check dry run: FAIL after $(elapsed) s"
  exit 1
fi
sed -n '/===== GPU check summary/,$p' "$WORK/dry.log"
echo "GPU check dry run: PASS in $(elapsed) s"
