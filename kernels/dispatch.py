"""The one place that decides how a fused op runs: while a graph is traced or exported (the
reference ops, so an exported graph holds standard operators only), and under autocast (floating
inputs cast to the autocast dtype, the way the eager ops would be; the kernels accumulate in fp32).
Every fused op (Haar DWT, FWM, CSM) and the model's own input checks follow these rules.
"""

from __future__ import annotations

import torch


def exporting() -> bool:
    """True while a graph is traced for export (ONNX, ``torch.jit.trace`` or ``torch.export``)."""
    if torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type`` ("cpu" / "cuda"), or None."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The autocast policy of the fused ops: under ``torch.autocast`` floating inputs are cast to
    the autocast dtype; otherwise they are returned as they are."""
    dtype = autocast_dtype(tensors[0].device.type)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def tracing_or_capturing() -> bool:
    """True where a host synchronisation or a data-dependent check must not run: an export or
    trace, a ``torch.compile`` region, or a CUDA graph capture."""
    if exporting() or torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
