#!/usr/bin/env bash
# One-command install of ddif and everything it needs, into the active Python environment.
#
#   bash install.sh             # torch (if missing) + ddif with all extras, native ops built
#
# Environment knobs:
#   DDIF_TORCH_SPEC=...         torch requirement to install when torch is missing
#                               (default: torch==2.13.0; on this project's machines that resolves to
#                               the CPU wheel on disk; on a GPU machine use e.g. DDIF_TORCH_SPEC=torch)
#   DDIF_EXTRAS=all             extras to install (geo, onnx, triton, tensorrt, dev, all)
#   DDIF_SKIP_CUDA_BUILD=1      never build the CUDA part of the native extension
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install "${DDIF_TORCH_SPEC:-torch==2.13.0}"
fi
# setuptools/wheel/ninja must be present because the native extension is built against the
# installed torch (--no-build-isolation: an isolated build would download another torch).
"$PY" -m pip install "setuptools>=69" wheel ninja
"$PY" -m pip install --no-build-isolation -e ".[${DDIF_EXTRAS:-all}]"
"$PY" -c "import ddif, torch; print('ddif', ddif.__version__, 'with torch', torch.__version__)"
