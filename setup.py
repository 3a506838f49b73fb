"""Build script. Metadata lives in pyproject.toml; this file only adds the optional native extension
``ddif._C`` (the CSM style-modulated convolution of ``csrc/``, ops ``torch.ops.ddif.csm_forward`` /
``csm_backward``, see kernels/style_conv.py, installed as ``ddif.kernels.style_conv``).

- CPU kernels (C++, ATen + OpenMP): built whenever a C++ compiler is found.
- CUDA kernels: added when the installed torch is a CUDA build and nvcc is found (CUDA_HOME).
- ``DDIF_SKIP_CUDA_BUILD=1`` builds the CPU part only; ``DDIF_SKIP_NATIVE_BUILD=1`` builds nothing.
- No C++ compiler (or no torch): a warning and a pure-Python install; the fused op then falls back
  to the PyTorch reference at run time.

Build against the torch that will run the extension: ``pip install --no-build-isolation -e .``
(an isolated build would download another torch). Ninja is used when installed.
"""
from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"
EXTENSION_NAME = "ddif._C"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _skip(reason: str) -> dict:
    warnings.warn(f"ddif: building without the native CSM extension ({reason}); the fused CSM op will use "
                  "the PyTorch reference. Set DDIF_SKIP_NATIVE_BUILD=1 to silence this.", stacklevel=2)
    return {}


def _find_cxx() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx.split()[0]) if cxx else None


def _cuda_reason(torch, cpp_extension) -> str | None:
    """None when the CUDA kernels can be built, else why not."""
    if _flag("DDIF_SKIP_CUDA_BUILD"):
        return "DDIF_SKIP_CUDA_BUILD is set"
    if not torch.version.cuda:
        return f"torch {torch.__version__} is not a CUDA build"
    if not cpp_extension.CUDA_HOME:
        return "nvcc not found (set CUDA_HOME)"
    nvcc = Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc"
    if not nvcc.exists():
        return f"no nvcc under CUDA_HOME={cpp_extension.CUDA_HOME}"
    return None


def native_extensions() -> dict:
    if _flag("DDIF_SKIP_NATIVE_BUILD"):
        return {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return _skip("torch is not installed in the build environment; use pip install --no-build-isolation")
    if _find_cxx() is None:
        return _skip("no C++ compiler found (CXX / c++)")

    cxx_flags = ["-O3", "-ffp-contract=fast"]
    link_flags: list[str] = []
    if sys.platform.startswith("linux"):
        # at::parallel_for expands to `#pragma omp parallel` in this translation unit.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    sources = [f"{CSRC}/style_conv.cpp"]
    cuda_reason = _cuda_reason(torch, cpp_extension)
    if cuda_reason is None:
        sources.append(f"{CSRC}/style_conv_cuda.cu")
        nvcc_flags = ["-O3", "--use_fast_math", "-lineinfo", "-DDDIF_WITH_CUDA=1"]
        ext = cpp_extension.CUDAExtension(
            EXTENSION_NAME, sources, extra_compile_args={"cxx": cxx_flags + ["-DDDIF_WITH_CUDA=1"], "nvcc": nvcc_flags},
            extra_link_args=link_flags)
    else:
        if not _flag("DDIF_SKIP_CUDA_BUILD") and torch.version.cuda:
            warnings.warn(f"ddif: building the CSM extension without CUDA kernels: {cuda_reason}", stacklevel=2)
        ext = cpp_extension.CppExtension(EXTENSION_NAME, sources, extra_compile_args={"cxx": cxx_flags},
                                         extra_link_args=link_flags)

    class BuildNative(cpp_extension.BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as exc:  # say how to get a working pure-Python install
                raise RuntimeError(
                    f"building the native CSM extension failed ({exc}). To install without it set "
                    "DDIF_SKIP_NATIVE_BUILD=1 (or DDIF_SKIP_CUDA_BUILD=1 to skip only the CUDA kernels).") from exc

    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildNative}}


setup(**native_extensions())
