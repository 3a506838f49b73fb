"""Exporters of the fixed-step tile sampler, the export cache and the backend choice (installed
as ``ddif.export``; the repository keeps it in the top-level ``export/`` folder).

- ``python -m ddif.export.onnx``: the sampler for a batch of tiles as one ONNX graph, with its
  ``OUT.onnx.json`` spec beside it (:mod:`ddif.export.onnx`);
- ``python -m ddif.export.tensorrt``: a TensorRT engine with an optimization profile from that
  graph (:mod:`ddif.export.tensorrt`);
- ``python -m ddif.export.check_tensorrt``: build + accuracy (PSNR vs PyTorch) + timing on a GPU;
- :func:`best_available` / :func:`ensure_onnx` / :func:`model_preset` (:mod:`ddif.export.auto`).

The runtimes that run these files live in :mod:`ddif.runtime` (one layer down).
"""

from __future__ import annotations

from ddif.utils.lazy import lazy_exports

_LAZY = {
    "best_available": "ddif.export.auto",
    "ensure_onnx": "ddif.export.auto",
    "model_preset": "ddif.export.auto",
    "export_model": "ddif.export.onnx",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
