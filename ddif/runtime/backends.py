"""Runtime backends with one interface: ``backend.fuse(lms, pan, seed) -> fused``.

- :class:`TorchBackend`: the engine itself (:class:`ddif.Fuser`), any device;
- :class:`OnnxRuntimeBackend`: an exported graph (``python -m ddif.export.onnx``) on ONNX Runtime;
- :class:`TensorRTBackend`: a TensorRT engine (``python -m ddif.export.tensorrt``) on an NVIDIA GPU.

A backend only runs the fixed-step sampler (DDIM, eta 0, the plan's timesteps) on a batch of
tiles. Everything else (input checks, padding, tiling with the model's tile size and overlap,
each tile's x_T drawn from ``(seed, image, tile)``, batching, blending, clamping) is
:class:`ddif.inference.InferencePath`, the same code ``ddif.Fuser`` and the ground station run,
so given a seed every backend gives ``ddif.Fuser``'s image up to floating-point rounding.
Inputs are (B, C, H, W) or (C, H, W) floats in [0, 1] of any H x W.

Choosing a backend and exporting on demand (``best_available``, ``ensure_onnx``) live one layer
up, in :mod:`ddif.export.auto`: the runtime never imports the exporters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ddif.config import Preset
from ddif.diffusion.sampling_plan import SamplingPlan, resolve_sampling_plan
from ddif.inference.engine import InferencePath
from ddif.inference.tiling import Tiling
from ddif.runtime.spec import INPUT_NAMES, OUTPUT_NAMES, ExportSpec, ShapeProfile, read_embedded_spec, spec_path_for
from ddif.runtime.tensorrt import (
    EngineCache,
    EngineRunner,
    TensorRTUnavailable,
    build_engine,
    engine_key,
    gpu_identity,
    import_tensorrt,
)

if TYPE_CHECKING:
    from types import ModuleType

    from ddif.models.ddif import DDIF

log = logging.getLogger("ddif.runtime")


class RuntimeBackend:
    """Common front of every backend: the model's facts and the one inference path over the
    backend's tile sampler (``sample_batch``, implemented by each subclass or handed in)."""

    name = "backend"
    stochastic = False  # DDIM with eta 0: no per-step noise

    def __init__(
        self,
        preset: Preset,
        plan: SamplingPlan,
        tiling: Tiling,
        batch_size: int | None = None,
        inference: InferencePath | None = None,
    ):
        self.preset = preset
        self.plan = plan
        cfg = preset.model
        self.bands: int = int(cfg.bands)
        self.guide_bands: int = int(cfg.guide_bands)
        self.max_dn: float = float(cfg.max_dn)
        self.rgb_bands: tuple[int, ...] = tuple(int(b) for b in preset.data.rgb_bands)
        self.ratio: int = int(preset.data.ratio)
        self.size_multiple: int = int(cfg.size_multiple)
        self.tiling = tiling
        self.inference = inference or InferencePath(
            self,
            bands=self.bands,
            guide_bands=self.guide_bands,
            max_dn=self.max_dn,
            preset_name=preset.name,
            tiling=tiling,
            batch_size=batch_size,
            residual_mean=getattr(preset.diffusion, "residual_mean", "free"),
        )

    @property
    def steps(self) -> int:
        return self.plan.steps

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.plan.timesteps

    @property
    def batch_size(self) -> int | None:
        return self.inference.batch_size

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.describe()}, preset={self.preset.name!r}, bands={self.bands}, "
            f"steps={self.steps}, timesteps={list(self.timesteps)}, {self.tiling.describe()})"
        )

    def check_inputs(self, lms: object, pan: object) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The checks and messages of :meth:`ddif.Fuser.check_inputs`."""
        return self.inference.check_inputs(lms, pan)

    @torch.no_grad()
    def fuse(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        seed: int | None = 0,
        *,
        noise: torch.Tensor | None = None,
        first_image: int = 0,
    ) -> torch.Tensor:
        """Fused image clamp(lms + residual, 0, 1), shaped like ``lms`` ((C,H,W) or (B,C,H,W)), on
        ``lms``'s device and dtype (:meth:`ddif.inference.InferencePath.fuse`)."""
        return self.inference.fuse(lms, pan, seed, noise=noise, first_image=first_image)

    def sample_tiles(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        """Residuals of already cut tiles, ``batch_size`` per call (the ground station's entry)."""
        return self.inference.sample_tiles(lms, pan, noise, generators)

    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        """The backend's tile sampler (:class:`ddif.inference.TileSampler`): the fixed-step sampler
        on a batch of equally sized tiles; each backend that runs its own graph implements it."""
        raise NotImplementedError(f"{type(self).__name__} has no tile sampler of its own")

    def _check_tiles(self, lms: torch.Tensor) -> None:
        t = self.tiling.tile_size
        if t and tuple(lms.shape[-2:]) != (t, t):
            raise ValueError(
                f"lms: tiles of {lms.shape[-2]}x{lms.shape[-1]}, but {self.describe()} samples {t}x{t} "
                "tiles (the graph's fixed size)"
            )


# ------------------------------------------------------------------------------------- PyTorch
class TorchBackend(RuntimeBackend):
    """The engine itself: :class:`ddif.Fuser` (condition cache, self-conditioning), DDIM eta 0
    over the plan's timesteps. ``model`` is a :class:`ddif.DDIF` or a checkpoint path."""

    name = "pytorch"

    def __init__(
        self,
        model: DDIF | str | os.PathLike,
        *,
        steps: int | None = None,
        timesteps: Iterable[int] | str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        fused_kernels: bool | None = None,
        batch_size: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        amp: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graphs: bool = False,
    ):
        from ddif.fuser import Fuser

        if isinstance(model, (str, os.PathLike)):
            from ddif.models import DDIF

            model = DDIF.from_pretrained(model)
        plan = resolve_sampling_plan(model.preset, getattr(model, "metadata", None), steps=steps, timesteps=timesteps)
        if fused_kernels is not None:
            model.set_fused_kernels(fused_kernels)
        self.fuser = Fuser(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            tiling=Tiling.for_preset(model.preset, tile_size, tile_overlap),
            plan=plan,
            amp=amp,
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
        )
        super().__init__(model.preset, plan, self.fuser.tiling, batch_size, inference=self.fuser.inference)
        self.model = self.fuser.model
        self.device = self.fuser.device

    def describe(self) -> str:
        s = self.fuser.sampler
        mode = ", ".join(
            m
            for m, on in (
                ("compiled", s.network is not s.model),
                ("CUDA graphs", s.cuda_graphs),
                ("channels_last", s.channels_last),
                (f"autocast {s.amp}", bool(s.amp)),
            )
            if on
        )
        return f"pytorch ({mode or 'eager'}, {self.device} {str(self.fuser.dtype).replace('torch.', '')})"


# -------------------------------------------------------------------------------- ONNX Runtime
class OnnxRuntimeBackend(RuntimeBackend):
    """An exported tile sampler (``fuser.onnx`` + ``fuser.onnx.json``) on ONNX Runtime.

    ``providers`` default: CUDA then CPU where ``device`` is CUDA and onnxruntime has the CUDA
    provider, else CPU. ``intra_op_threads`` / ``graph_optimization`` set the session options.
    ``parallel_runs``: a batch is cut into this many parts run concurrently, each with
    ``intra_op_threads / parallel_runs`` threads (default on a CPU: one run per thread). The tile
    size is the graph's; ``tile_overlap`` may differ from the one recorded at export.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        graph_optimization: str = "all",
        steps: int | None = None,
        timesteps: Iterable[int] | str | None = None,
        batch_size: int | None = None,
        tile_overlap: int | None = None,
        parallel_runs: int | None = None,
    ):
        ort = import_onnxruntime()
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        spec = load_onnx_spec(self.path)
        preset, plan = spec.preset_obj(), spec.plan()
        check_plan_matches(self.path, plan, preset, steps, timesteps)
        super().__init__(preset, plan, spec_tiling(spec, tile_overlap), batch_size)
        self.spec = spec
        device = torch.device(device) if device is not None else torch.device("cpu")
        if providers is None:
            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"]
                if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
                else ["CPUExecutionProvider"]
            )
        options = ort.SessionOptions()
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if graph_optimization not in levels:
            raise ValueError(f"graph_optimization must be one of {list(levels)}, got {graph_optimization!r}")
        options.graph_optimization_level = levels[graph_optimization]
        on_cpu = list(providers)[0] == "CPUExecutionProvider"
        if on_cpu and intra_op_threads is None and parallel_runs is None:
            # ORT's default (one run over every core) is the slower layout on a CPU (below):
            # the cores this process may use, one run each (2.19 -> 1.89 ms per tile, 2 cores)
            intra_op_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if parallel_runs is None:
            # on a CPU, n concurrent runs of one thread each beat one run of n threads: measured on
            # a 2-core x86-64 CPU, shipped 32 px models, 2 steps: 3.1 ms per tile against 4.1
            parallel_runs = int(intra_op_threads) if on_cpu and intra_op_threads and intra_op_threads > 1 else 1
        if parallel_runs < 1:
            raise ValueError(f"parallel_runs must be >= 1, got {parallel_runs}")
        self.parallel_runs = int(parallel_runs)
        if intra_op_threads:
            options.intra_op_num_threads = max(1, int(intra_op_threads) // self.parallel_runs)
        options.log_severity_level = 3  # errors only: ORT's warnings are about its own fusions
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise ValueError(
                f"{self.path}: onnxruntime cannot load the model ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
        names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
            raise ValueError(
                f"{self.path}: expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)}, "
                f"the model has {names} and {outputs}: export it again"
            )
        self.providers = self.session.get_providers()
        self.intra_op_threads = intra_op_threads
        self._pool = None
        if self.parallel_runs > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.parallel_runs, thread_name_prefix="ddif-ort")

    def describe(self) -> str:
        if self.parallel_runs > 1:
            each = max(1, int(self.intra_op_threads or 1) // self.parallel_runs)
            return f"onnxruntime ({self.providers[0]}, {self.parallel_runs} concurrent runs x {each} thread)"
        threads = f", {self.intra_op_threads} threads" if self.intra_op_threads else ""
        return f"onnxruntime ({self.providers[0]}{threads})"

    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        self._check_tiles(lms)
        feed = {
            name: t.detach().to("cpu", torch.float32).contiguous().numpy()
            for name, t in (("lms", lms), ("pan", pan), ("noise", noise))
        }
        n = lms.shape[0]
        if self._pool is None or n < 2:
            return torch.from_numpy(self.session.run(list(OUTPUT_NAMES), feed)[0])
        # the batch in parallel_runs equal parts (a fixed split: the same tiles always go together),
        # run concurrently (ONNX Runtime releases the GIL; one session serves concurrent runs)
        k = -(-n // self.parallel_runs)
        parts = [(a, min(n, a + k)) for a in range(0, n, k)]
        results = self._pool.map(
            lambda ab: self.session.run(list(OUTPUT_NAMES), {m: v[ab[0] : ab[1]] for m, v in feed.items()})[0], parts
        )
        return torch.from_numpy(np.concatenate(list(results)))


# ------------------------------------------------------------------------------------ TensorRT
class TensorRTBackend(RuntimeBackend):
    """A TensorRT engine on an NVIDIA GPU.

    ``model_path`` is a ``.plan`` (with its ``.plan.json`` spec, from ``python -m ddif.export.tensorrt``)
    or an ``.onnx`` whose engine is built on first use and cached (:class:`EngineCache`, key:
    ONNX hash + GPU + TensorRT version + precision + profile). Batches of tiles above the
    profile's max batch are split; tiles of another size than the engine's raise ValueError.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        fp16: bool = True,
        profile: ShapeProfile | str | None = None,
        cache_dir: str | os.PathLike | None = None,
        steps: int | None = None,
        timesteps: Iterable[int] | str | None = None,
        batch_size: int | None = None,
        tile_overlap: int | None = None,
        trt: ModuleType | None = None,
    ):
        trt = trt or import_tensorrt()
        self.device = torch.device(device if device is not None else "cuda")
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise TensorRTUnavailable(
                f"TensorRT needs a CUDA GPU (device {self.device}, CUDA available: {torch.cuda.is_available()})"
            )
        path = Path(model_path)
        if path.suffix == ".onnx":
            onnx_spec = load_onnx_spec(path)
            mult = onnx_spec.size_multiple
            if isinstance(profile, str):
                profile = ShapeProfile.parse(profile, mult)
            profile = profile or onnx_spec.shape_profile()
            key = engine_key(
                path, profile, fp16=fp16, gpu=gpu_identity(self.device), tensorrt_version=str(trt.__version__)
            )
            cache = EngineCache(cache_dir)
            model = onnx_spec.preset["model"]

            def build(onnx_path: Path, out: Path) -> None:
                log.info(
                    "building a TensorRT engine for %s (%s, profile %s); cached as %s",
                    onnx_path,
                    "fp16" if fp16 else "fp32",
                    profile,
                    out,
                )
                with torch.cuda.device(self.device):
                    build_engine(
                        onnx_path,
                        out,
                        profile,
                        fp16=fp16,
                        bands=model["bands"],
                        guide_bands=model["guide_bands"],
                        trt=trt,
                    )

            path, _ = cache.get_or_build(path, key, profile, build)
        spec = ExportSpec.for_model(path, verify=True)
        if spec.kind != "tensorrt":
            raise ValueError(f"{path}: spec kind is {spec.kind!r}, expected 'tensorrt'")
        built_for = (spec.tensorrt.get("gpu"), spec.tensorrt.get("tensorrt_version"))
        here = (gpu_identity(self.device), str(trt.__version__))
        if built_for != here:
            raise ValueError(
                f"{path}: engine built for {built_for[0]} with TensorRT {built_for[1]}, this is "
                f"{here[0]} with TensorRT {here[1]}: rebuild it (python -m ddif.export.tensorrt)"
            )
        preset, plan = spec.preset_obj(), spec.plan()
        check_plan_matches(path, plan, preset, steps, timesteps)
        self.profile = spec.shape_profile()
        if batch_size is None or batch_size > self.profile.max[0]:
            batch_size = self.profile.max[0]
        super().__init__(preset, plan, spec_tiling(spec, tile_overlap), batch_size)
        self.spec = spec
        self.path = path
        self.runner = EngineRunner(path, self.device, trt=trt)
        self.precision = spec.tensorrt.get("precision", "?")

    def describe(self) -> str:
        return f"tensorrt ({self.precision}, {self.device})"

    def sample_batch(
        self,
        lms: torch.Tensor,
        pan: torch.Tensor,
        noise: torch.Tensor,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> torch.Tensor:
        self._check_tiles(lms)
        b, _, h, w = lms.shape
        if not self.profile.contains(b, h, w):
            raise ValueError(
                f"lms: tiles {h}x{w} (batch {b}) are outside the engine's profile "
                f"{self.profile} (BxHxW min/opt/max); rebuild with larger --shapes"
            )
        dev = self.device
        out = self.runner.run(lms.to(dev).contiguous(), pan.to(dev).contiguous(), noise.to(dev).contiguous())
        return out.to("cpu", torch.float32)


# ------------------------------------------------------------------------------------- helpers
def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeError(f"onnxruntime is not installed ({exc}): pip install 'ddif[onnx]'") from None
    return onnxruntime


def onnxruntime_unavailable_reason(device: torch.device) -> str | None:
    try:
        ort = import_onnxruntime()
    except RuntimeError as exc:
        return str(exc)
    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return (
            "onnxruntime has no CUDA provider here (providers: "
            f"{', '.join(ort.get_available_providers())}) and PyTorch on the GPU beats ONNX Runtime on the CPU"
        )
    return None


def spec_tiling(spec: ExportSpec, tile_overlap: int | None = None) -> Tiling:
    """The tiles an exported graph samples (its tile size is fixed; the overlap may be overridden)."""
    tiling = spec.tiling_obj()
    if tile_overlap is None or not tiling.tiled:
        return tiling
    return Tiling(tiling.tile_size, int(tile_overlap), tiling.size_multiple)


def load_onnx_spec(path: Path) -> ExportSpec:
    """The spec beside the model (hash-checked), else the copy embedded in its metadata."""
    spec: ExportSpec | None
    if spec_path_for(path).is_file():
        spec = ExportSpec.for_model(path, verify=True)
    else:
        try:
            spec = read_embedded_spec(path)
        except Exception as exc:  # onnx raises DecodeError & co. for corrupt files
            raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
        if spec is None:
            raise ValueError(
                f"{path}: no export spec beside it ({spec_path_for(path).name}) nor in its metadata: "
                "export it with python -m ddif.export.onnx"
            )
        log.info("%s: spec file missing, using the copy embedded in the model", path)
    if spec.kind != "onnx":
        raise ValueError(f"{path}: spec kind is {spec.kind!r}, expected 'onnx'")
    return spec


def check_plan_matches(
    path: Path, plan: SamplingPlan, preset: Preset, steps: int | None, timesteps: Iterable[int] | str | None
) -> None:
    """An exported graph has its timesteps baked in: a different request is an error, not a silent swap."""
    if steps is None and timesteps is None:
        return
    want = resolve_sampling_plan(preset, {}, steps=steps, timesteps=timesteps)
    if steps is not None and timesteps is None and steps == plan.steps:
        return
    if want.timesteps != plan.timesteps:
        raise ValueError(
            f"{path} was exported for {plan.steps} steps at timesteps {list(plan.timesteps)}, "
            f"not {list(want.timesteps)}: export again with --steps / --timesteps"
        )


__all__ = [
    "RuntimeBackend",
    "TorchBackend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "load_onnx_spec",
    "spec_tiling",
    "import_onnxruntime",
    "onnxruntime_unavailable_reason",
    "check_plan_matches",
]
