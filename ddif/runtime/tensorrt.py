"""TensorRT: engine building (ONNX parser, builder config, FP16, optimization profile), an engine
cache keyed by ONNX hash + GPU + TensorRT version, and engine execution on PyTorch CUDA tensors.

``tensorrt`` is an optional dependency (``pip install 'ddif[tensorrt]'``, TensorRT >= 10, NVIDIA
GPU); it is imported only when used, and every entry point says clearly why it cannot run.
Written against the documented TensorRT 10 Python API: ``Builder.create_network``,
``OnnxParser.parse_from_file``, ``IBuilderConfig.set_flag(BuilderFlag.FP16)``,
``Builder.create_optimization_profile`` / ``IOptimizationProfile.set_shape``,
``Builder.build_serialized_network``, ``Runtime.deserialize_cuda_engine``,
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``.
TensorRT 11 removed the FP16 builder flag (strong typing only): there ``--fp16`` needs an ONNX
graph already in mixed precision (see :func:`build_engine`).

NOT verified on these machines: TensorRT cannot be installed here, so the calls into it are
exercised only against a stand-in module in the tests; ``export/check_tensorrt.py`` verifies a
real build (accuracy and speed) where TensorRT and a GPU exist.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ddif.runtime.artifacts import ArtifactCache, key_digest
from ddif.runtime.spec import INPUT_NAMES, OUTPUT_NAMES, ExportSpec, ShapeProfile, sha256_file, spec_path_for

log = logging.getLogger("ddif.runtime")

MIN_TENSORRT_MAJOR = 10
INSTALL_HINT = "install TensorRT >= 10 (pip install 'ddif[tensorrt]') on a machine with an NVIDIA GPU"


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be used here; the message says why."""


class TensorRTBuildError(RuntimeError):
    """The engine build failed; the message carries the parser / builder errors."""


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` saying why not."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailable(f"the tensorrt package is not installed ({exc}); {INSTALL_HINT}") from None
    except Exception as exc:  # the bindings exist but their CUDA / TensorRT libraries do not load
        raise TensorRTUnavailable(f"tensorrt failed to import ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        raise TensorRTUnavailable(
            f"'import tensorrt' found {getattr(trt, '__file__', trt)!r}, which is not NVIDIA "
            f"TensorRT (a local file named tensorrt.py shadows it?); {INSTALL_HINT}"
        )
    version = str(getattr(trt, "__version__", "0"))
    if _major(version) < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} is too old: ddif needs TensorRT >= {MIN_TENSORRT_MAJOR}")
    return trt


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def tensorrt_unavailable_reason(device: str | torch.device | None = None) -> str | None:
    """None when TensorRT can run on ``device`` (default: the current CUDA device), else why not."""
    reasons = []
    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        reasons.append(str(exc).split("; ")[0])
    device = torch.device(device) if device is not None else None
    if device is not None and device.type != "cuda":
        reasons.append(f"it runs on CUDA devices only (device is {device})")
    elif not torch.cuda.is_available():
        reasons.append("no CUDA GPU is available")
    return "; ".join(reasons) or None


def gpu_identity(device: str | torch.device | None = None) -> str:
    """GPU name and compute capability: engines are specific to both."""
    device = torch.device(device if device is not None else "cuda")
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"


# ------------------------------------------------------------------------------------ the build
def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    profile: ShapeProfile,
    *,
    fp16: bool = True,
    bands: int | None = None,
    guide_bands: int | None = None,
    workspace_gib: float | None = None,
    trt: ModuleType | None = None,
) -> Path:
    """Build a serialized TensorRT engine for ``onnx_path`` with one optimization profile and
    write it atomically to ``out``.

    ``bands`` / ``guide_bands`` (channel counts of lms and pan) default to the ONNX spec beside
    the model. FP16 on TensorRT 10 sets ``BuilderFlag.FP16`` (TensorRT picks FP16 kernels where it
    judges them accurate); on TensorRT 11+ the flag is gone and the precision comes from the graph,
    so the FP32 graph is refused with instructions instead of silently building an FP32 engine.
    """
    trt = trt or import_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if bands is None or guide_bands is None:
        spec = ExportSpec.for_model(onnx_path, verify=False)
        bands, guide_bands = int(spec.preset["model"]["bands"]), int(spec.preset["model"]["guide_bands"])
    shapes = profile.input_shapes(bands, guide_bands)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTBuildError(
            f"{onnx_path}: the TensorRT ONNX parser failed: " + " | ".join(errors or ["no detail"])
        )
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(INPUT_NAMES):
        raise TensorRTBuildError(f"{onnx_path}: expected inputs {list(INPUT_NAMES)}, the network has {names}")

    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise TensorRTBuildError(
                f"TensorRT {getattr(trt, '__version__', '?')} has no FP16 builder flag (networks are strongly "
                "typed since TensorRT 11): convert the ONNX graph to mixed precision first, e.g. "
                f"'python -m modelopt.onnx.autocast --onnx_path {onnx_path}', and build that without --fp16"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    for name in INPUT_NAMES:
        s = shapes[name]
        opt_profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(opt_profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"{onnx_path}: TensorRT failed to build the engine (see the TensorRT log above)")
    from ddif.utils.io import atomic_path

    with atomic_path(out, suffix=".plan") as tmp:
        with open(tmp, "wb") as f:
            f.write(serialized)
    return out


# ---------------------------------------------------------------------------------- engine cache
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on: the graph, the GPU, TensorRT, precision and profile."""

    onnx_sha256: str
    gpu: str
    tensorrt_version: str
    precision: str
    profile: str

    def digest(self) -> str:
        return key_digest(asdict(self))


class EngineCache:
    """TensorRT engines in the artifact cache (:class:`ddif.runtime.artifacts.ArtifactCache`,
    kind ``tensorrt``), one per :class:`EngineKey`, each with its spec."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.artifacts = ArtifactCache(root)

    def path_for(self, key: EngineKey, stem: str = "fuser") -> Path:
        return self.artifacts.path_for("tensorrt", stem, asdict(key), ".plan")

    def lookup(self, key: EngineKey, stem: str = "fuser") -> Path | None:
        """The cached engine for ``key``, or None (missing, spec missing or for another key, corrupt)."""
        return self.artifacts.lookup(self.path_for(key, stem), asdict(key))

    def get_or_build(
        self,
        onnx_path: str | os.PathLike,
        key: EngineKey,
        profile: ShapeProfile,
        build: Callable[[Path, Path], Any],
        stem: str | None = None,
    ) -> tuple[Path, bool]:
        """(engine path, cache hit). On a miss ``build(onnx_path, engine_path)`` writes the engine."""
        onnx_path = Path(onnx_path)
        stem = stem or onnx_path.stem
        hit = self.lookup(key, stem)
        if hit is not None:
            return hit, True
        path = self.path_for(key, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        build(onnx_path, path)
        write_engine_spec(path, onnx_path, key, profile)
        return path, False


def write_engine_spec(engine_path: Path, onnx_path: Path, key: EngineKey, profile: ShapeProfile) -> ExportSpec:
    """The ONNX model's spec, re-targeted at the engine (``ENGINE.plan.json``)."""
    spec = ExportSpec.for_model(onnx_path, verify=False)
    spec.kind, spec.model_file, spec.sha256 = "tensorrt", engine_path.name, sha256_file(engine_path)
    spec.profile = profile.to_dict()
    spec.cache_key = asdict(key)
    spec.tensorrt = {
        "onnx_file": str(onnx_path.resolve()),
        "onnx_sha256": key.onnx_sha256,
        "gpu": key.gpu,
        "tensorrt_version": key.tensorrt_version,
        "precision": key.precision,
        "profile": key.profile,
    }
    spec.save(spec_path_for(engine_path))
    return spec


def engine_key(
    onnx_path: str | os.PathLike,
    profile: ShapeProfile,
    *,
    fp16: bool,
    gpu: str | None = None,
    tensorrt_version: str | None = None,
) -> EngineKey:
    if tensorrt_version is None:
        tensorrt_version = str(import_tensorrt().__version__)
    return EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        gpu=gpu if gpu is not None else gpu_identity(),
        tensorrt_version=str(tensorrt_version),
        precision="fp16" if fp16 else "fp32",
        profile=str(profile),
    )


# ------------------------------------------------------------------------------------- execution
class EngineRunner:
    """Runs a deserialized engine on PyTorch CUDA tensors (no pycuda needed)."""

    def __init__(
        self, engine_path: str | os.PathLike, device: str | torch.device | None = None, trt: ModuleType | None = None
    ):
        trt = trt or import_tensorrt()
        self.trt = trt
        self.path = Path(engine_path)
        self.device = torch.device(device if device is not None else "cuda")
        if self.device.type != "cuda":
            raise TensorRTUnavailable(f"TensorRT runs on CUDA devices only, got {self.device}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ValueError(
                    f"{self.path}: TensorRT could not deserialize the engine (corrupt, or built with "
                    "another TensorRT version or for another GPU): rebuild it"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted(INPUT_NAMES + OUTPUT_NAMES):
            raise ValueError(
                f"{self.path}: expected tensors {list(INPUT_NAMES + OUTPUT_NAMES)}, the engine has {names}"
            )
        for name in names:
            if self.engine.get_tensor_dtype(name) != trt.float32:
                raise ValueError(
                    f"{self.path}: tensor {name} is {self.engine.get_tensor_dtype(name)}, expected float32"
                )

    def profile_range(self, name: str = "lms") -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        lo, opt, hi = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(lo), tuple(opt), tuple(hi)

    def run(self, lms: torch.Tensor, pan: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Enqueue on PyTorch's current stream: later PyTorch work on it is ordered after the engine."""
        inputs = {"lms": lms, "pan": pan, "noise": noise}
        for name, t in inputs.items():
            if not self.context.set_input_shape(name, tuple(t.shape)):
                raise ValueError(
                    f"{name}: shape {tuple(t.shape)} is outside the engine's profile {self.profile_range(name)}"
                )
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(tuple(self.context.get_tensor_shape("fused")), dtype=torch.float32, device=self.device)
        self.context.set_tensor_address("fused", out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed (see the TensorRT log)")
        return out
