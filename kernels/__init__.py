"""Fused kernels for the DDIF hot paths, each with a plain-PyTorch ``<op>_ref`` beside it.

- :mod:`ddif.kernels.haar_dwt`: Haar DWT / wavelet condition (Triton);
- :mod:`ddif.kernels.fwm`: FWM linear attention, context and apply (Triton);
- :mod:`ddif.kernels.style_conv`: CSM style-modulated 1x1 convolution (C++ / CUDA extension).

Importing this package does no work and never fails for lack of Triton, CUDA or a compiler.
"""

from __future__ import annotations

import importlib

# Each module reports its own backends through a ``_status()`` function returning
# ``{backend name: True | reason}``; ``available()`` merges them.
_STATUS_MODULES = ("ddif.kernels.haar_dwt", "ddif.kernels.fwm", "ddif.kernels.style_conv")


def available() -> dict[str, str | bool]:
    """Which fused backends are live here: name -> True, or the reason it is not.

    Triton backends report ``True`` when they compile for a visible GPU, ``"interpreter: ..."``
    under ``TRITON_INTERPRET=1`` (correct but slow: for tests), ``"missing: <why>"`` otherwise.
    """
    status: dict[str, str | bool] = {}
    for name in _STATUS_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a broken optional module must not hide the others
            status[name.rpartition(".")[2]] = f"missing: cannot import {name}: {exc}"
            continue
        report = getattr(module, "_status", None)
        if report is not None:
            status.update(report())
    return status
