"""Runtime backends for the fixed-step sampler: PyTorch, ONNX Runtime, TensorRT.

    import ddif.runtime
    backend = ddif.runtime.OnnxRuntimeFuser("fuser.onnx")    # or TorchFuser("model.pt"), TensorRTFuser(...)
    fused = backend.fuse(lms, pan, seed=0)

Picking the fastest one and exporting a checkpoint on demand: ``ddif.export.best_available``
(one layer up; the runtime never imports the exporters).

Every backend has ``fuse(lms, pan, seed)`` and the attributes ``name``, ``bands``,
``guide_bands``, ``max_dn``, ``rgb_bands``, ``ratio``, ``steps``, ``timesteps``. Nothing is
imported until used (onnxruntime and tensorrt are optional).
"""

from __future__ import annotations

from ddif.utils.lazy import lazy_exports

_LAZY = {
    "FuserBackend": "ddif.runtime.backends",
    "TorchFuser": "ddif.runtime.backends",
    "OnnxRuntimeFuser": "ddif.runtime.backends",
    "TensorRTFuser": "ddif.runtime.backends",
    "spec_tiling": "ddif.runtime.backends",
    "SamplingPlan": "ddif.diffusion.sampling_plan",  # re-exported: the plan lives with the schedulers
    "resolve_sampling_plan": "ddif.diffusion.sampling_plan",
    "ExportSpec": "ddif.runtime.spec",
    "ShapeProfile": "ddif.runtime.spec",
    "EngineCache": "ddif.runtime.tensorrt",
    "EngineKey": "ddif.runtime.tensorrt",
    "TensorRTUnavailable": "ddif.runtime.tensorrt",
    "tensorrt_unavailable_reason": "ddif.runtime.tensorrt",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
