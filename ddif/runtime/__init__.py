"""Runtime backends for the fixed-step sampler: PyTorch, ONNX Runtime, TensorRT.

    import ddif.runtime
    backend = ddif.runtime.OnnxRuntimeBackend("fuser.onnx")    # or TorchBackend("model.pt"), TensorRTBackend(...)
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
    "RuntimeBackend": "ddif.runtime.backends",
    "TorchBackend": "ddif.runtime.backends",
    "OnnxRuntimeBackend": "ddif.runtime.backends",
    "TensorRTBackend": "ddif.runtime.backends",
    "spec_tiling": "ddif.runtime.backends",
    "SamplingPlan": "ddif.diffusion.sampling_plan",  # re-exported: the plan lives with the schedulers
    "resolve_sampling_plan": "ddif.diffusion.sampling_plan",
    "ExportSpec": "ddif.runtime.spec",
    "ShapeProfile": "ddif.runtime.spec",
    "ArtifactCache": "ddif.runtime.artifacts",
    "EngineCache": "ddif.runtime.tensorrt",
    "EngineKey": "ddif.runtime.tensorrt",
    "TensorRTUnavailable": "ddif.runtime.tensorrt",
    "tensorrt_unavailable_reason": "ddif.runtime.tensorrt",
}

__all__ = list(_LAZY)

_lazy_getattr, __dir__ = lazy_exports(__name__, _LAZY, globals())

# the backends' names before they were named for what they are (kept working, with a warning)
_RENAMED = {
    "FuserBackend": "RuntimeBackend",
    "TorchFuser": "TorchBackend",
    "OnnxRuntimeFuser": "OnnxRuntimeBackend",
    "TensorRTFuser": "TensorRTBackend",
}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        warnings.warn(f"ddif.runtime.{name} is now ddif.runtime.{_RENAMED[name]}", DeprecationWarning, stacklevel=2)
        return _lazy_getattr(_RENAMED[name])
    return _lazy_getattr(name)
