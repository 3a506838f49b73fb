"""The export cache and the choice of the fastest backend (layer 6: above the runtime backends,
which never import this package).

- :func:`ensure_onnx`: a checkpoint's tile sampler exported to ONNX once, then reused from the
  cache (``~/.cache/ddif/onnx`` or ``DDIF_CACHE_DIR``), keyed by checkpoint hash, timesteps, tile
  size, exporter, opset, spec version and torch version;
- :func:`best_available`: TensorRT, then ONNX Runtime, then PyTorch, whichever works here for a
  checkpoint / ``.onnx`` / ``.plan``, with one log line saying what was chosen and why;
- :func:`model_preset`: what a model file is for (bands, ratio, max DN, tiling, preprocessing)
  without building a backend or exporting anything (the station checks a scene with it first).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddif.config import Preset
from ddif.diffusion.sampling_plan import resolve_sampling_plan
from ddif.export.onnx import DEFAULT_EXPORTER, DEFAULT_OPSET, export_model
from ddif.inference.tiling import Tiling, check_tiling
from ddif.models.checkpoint import read_contents
from ddif.models.ddif import DDIF
from ddif.runtime.artifacts import ArtifactCache
from ddif.runtime.backends import (
    OnnxRuntimeBackend,
    RuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    load_onnx_spec,
    onnxruntime_unavailable_reason,
)
from ddif.runtime.spec import SPEC_VERSION, ExportSpec, sha256_file, spec_path_for
from ddif.runtime.tensorrt import TensorRTUnavailable, tensorrt_unavailable_reason

log = logging.getLogger("ddif.runtime")

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


def model_preset(path: str | os.PathLike) -> tuple[Preset, dict]:
    """(preset, metadata) of a model file (checkpoint, .onnx or .plan) without building a
    backend or exporting anything: what the model fuses (bands, ratio, max DN, tiling)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    kind = _model_kind(path)
    if kind == "onnx":
        return load_onnx_spec(path).preset_obj(), {}
    if kind == "plan":
        return ExportSpec.load(spec_path_for(path)).preset_obj(), {}
    contents = read_contents(path)
    if contents.preset is None:
        raise ValueError(
            f"{path}: a checkpoint in the published layout carries no configuration; convert it to an "
            "engine checkpoint first (DDIF.from_pretrained(path, preset).save('model.pt'))"
        )
    return contents.preset, contents.metadata


def ensure_onnx(
    checkpoint: str | os.PathLike,
    *,
    steps: int | None = None,
    timesteps: Iterable[int] | str | None = None,
    tile_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    exporter: str | None = None,
    opset: int | None = None,
) -> Path:
    """An ONNX export of a checkpoint's tile sampler, from the cache or exported now (once).

    ``tile_size``: the tiles the graph samples (default: the model's own). Keyed by the
    checkpoint's SHA-256, the timesteps, the tile size, the exporter, opset, spec version and
    torch version.
    """

    checkpoint = Path(checkpoint)
    # the key needs the checkpoint's header only: the network is built on a cache miss alone
    preset, metadata = model_preset(checkpoint)
    plan = resolve_sampling_plan(preset, metadata, steps=steps, timesteps=timesteps)
    tiling = Tiling.for_preset(preset, tile_size)
    opset = opset or DEFAULT_OPSET
    exporter = exporter or DEFAULT_EXPORTER
    ident = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "timesteps": list(plan.timesteps),
        "exporter": exporter,
        "opset": opset,
        "torch": torch.__version__,
        "tile_size": tiling.tile_size,
        "spec": SPEC_VERSION,
    }
    cache = ArtifactCache(cache_dir)
    tiles = f"tile{tiling.tile_size}" if tiling.tiled else "whole"
    out = cache.path_for("onnx", f"{checkpoint.stem}-{plan.steps}steps-{tiles}", ident, ".onnx")
    if cache.lookup(out, ident) is not None:
        return out
    log.info("exporting %s (%d steps, %s) to ONNX once; cached as %s", checkpoint, plan.steps, tiling.describe(), out)
    model = DDIF.from_pretrained(checkpoint)
    export_model(
        model,
        out,
        plan,
        tiling=tiling,
        opset=opset,
        exporter=exporter,
        check=True,
        source={
            "weights": "engine checkpoint",
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": ident["checkpoint_sha256"],
        },
    )
    cache.record(out, ident)
    return out


# -------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class BackendOptions:
    """What a backend is built with (every registry entry takes the same options)."""

    device: torch.device
    steps: int | None = None
    timesteps: Iterable[int] | str | None = None
    tile_size: int | None = None  # None: the model's own
    tile_overlap: int | None = None
    batch_size: int | None = None  # None: the backend's device default
    cache_dir: str | os.PathLike | None = None
    fp16: bool = True  # TensorRT engines
    allow_export: bool = True  # a checkpoint may be exported to ONNX (once, into the cache)
    exporter: str | None = None
    threads: int | None = None  # ONNX Runtime intra-op threads
    torch_checkpoint: str | os.PathLike | None = None  # the checkpoint when the model is an .onnx / .plan
    fast: Mapping[str, Any] = field(default_factory=dict)  # PyTorch fast-path switches


@dataclass(frozen=True)
class BackendKind:
    """One registry entry: why it cannot run on a device (None: it can), and how it is built for a
    model file (checkpoint, .onnx or .plan, of the kind given)."""

    name: str  # "tensorrt", "onnxruntime", "pytorch": the CLIs' --backend values
    title: str
    unavailable: Callable[[Path, str, BackendOptions], str | None]
    build: Callable[[Path, str, BackendOptions], RuntimeBackend]


def _onnx_source(path: Path, kind: str, opts: BackendOptions) -> Path | None:
    """The ONNX graph a model file gives: itself, a TensorRT engine's source, or a checkpoint
    exported once into the cache (when allowed)."""
    if kind == "onnx":
        return path
    if kind == "plan":
        src = ExportSpec.load(spec_path_for(path)).tensorrt.get("onnx_file")
        return Path(src) if src and Path(src).is_file() else None
    if opts.allow_export:
        return ensure_onnx(
            path,
            steps=opts.steps,
            timesteps=opts.timesteps,
            tile_size=opts.tile_size,
            cache_dir=opts.cache_dir,
            exporter=opts.exporter,
        )
    return None


def _sampling(opts: BackendOptions) -> dict[str, Any]:
    """The options every backend samples with."""
    return {
        "steps": opts.steps,
        "timesteps": opts.timesteps,
        "batch_size": opts.batch_size,
        "tile_overlap": opts.tile_overlap,
    }


def _graph_tiles(backend: RuntimeBackend, path: Path, opts: BackendOptions) -> RuntimeBackend:
    check_tiling(backend.tiling, opts.tile_size, what=f"{path}: the graph", fix="export it again with --tile-size")
    return backend


def _build_tensorrt(path: Path, kind: str, opts: BackendOptions) -> RuntimeBackend:
    if kind == "plan":
        engine = path
    else:
        src = _onnx_source(path, kind, opts)
        if src is None:
            raise FileNotFoundError(f"{path}: no ONNX graph to build a TensorRT engine from")
        engine = src
    built = TensorRTBackend(engine, device=opts.device, fp16=opts.fp16, cache_dir=opts.cache_dir, **_sampling(opts))
    return _graph_tiles(built, path, opts)


def _build_onnxruntime(path: Path, kind: str, opts: BackendOptions) -> RuntimeBackend:
    src = _onnx_source(path, kind, opts)
    if src is None:
        raise FileNotFoundError("no ONNX model (export disabled, or the engine's ONNX source is gone)")
    built = OnnxRuntimeBackend(src, device=opts.device, intra_op_threads=opts.threads, **_sampling(opts))
    return _graph_tiles(built, path, opts)


def _torch_checkpoint(path: Path, kind: str, opts: BackendOptions) -> Path | None:
    return Path(opts.torch_checkpoint) if opts.torch_checkpoint else (path if kind == "checkpoint" else None)


def _pytorch_unavailable(path: Path, kind: str, opts: BackendOptions) -> str | None:
    if _torch_checkpoint(path, kind, opts) is None:
        return "PyTorch needs the engine checkpoint: pass torch_checkpoint=..."
    return None


def _build_pytorch(path: Path, kind: str, opts: BackendOptions) -> RuntimeBackend:
    ckpt = _torch_checkpoint(path, kind, opts)
    assert ckpt is not None  # checked by _pytorch_unavailable
    return TorchBackend(ckpt, device=opts.device, tile_size=opts.tile_size, **_sampling(opts), **dict(opts.fast))


# fastest first: the order best_available tries them in
BACKENDS: dict[str, BackendKind] = {
    "tensorrt": BackendKind(
        "tensorrt", "TensorRT", lambda path, kind, opts: tensorrt_unavailable_reason(opts.device), _build_tensorrt
    ),
    "onnxruntime": BackendKind(
        "onnxruntime",
        "ONNX Runtime",
        lambda path, kind, opts: onnxruntime_unavailable_reason(opts.device),
        _build_onnxruntime,
    ),
    "pytorch": BackendKind("pytorch", "PyTorch", _pytorch_unavailable, _build_pytorch),
}


def backend_options(device: str | torch.device | None = None, **options: Any) -> BackendOptions:
    """:class:`BackendOptions` with ``device`` resolved (default: CUDA when available, else CPU)."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {dev} asked for, but no CUDA GPU is available here (use device='cpu')")
    return BackendOptions(device=dev, **options)


def build_backend(name: str, model_path: str | os.PathLike, opts: BackendOptions) -> RuntimeBackend:
    """The registry's backend ``name`` for ``model_path``; ValueError (one line) naming why when it
    cannot run here."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    entry, kind = BACKENDS[name], _model_kind(path)
    reason = entry.unavailable(path, kind, opts)
    if reason is not None:
        raise ValueError(f"{entry.title} cannot run {path.name} here: {reason}")
    return entry.build(path, kind, opts)


def best_available(
    model_path: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    steps: int | None = None,
    timesteps: Iterable[int] | str | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    batch_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    fp16: bool = True,
    allow_export: bool = True,
    exporter: str | None = None,
    ort_threads: int | None = None,
    torch_checkpoint: str | os.PathLike | None = None,
) -> RuntimeBackend:
    """The fastest backend of :data:`BACKENDS` that works here for ``model_path`` (an engine
    checkpoint ``.pt``, an exported ``.onnx`` or a TensorRT ``.plan``), with one log line saying
    what was chosen and why.

    Order: TensorRT (CUDA device, ``tensorrt`` importable; a ``.plan`` as is, an ``.onnx`` or
    ``.pt`` through the engine cache), then ONNX Runtime (CPU, or CUDA where onnxruntime has
    that provider; an ``.onnx`` as is, a ``.pt`` exported once into the cache unless
    ``allow_export`` is False), then PyTorch (needs the checkpoint: ``model_path`` or
    ``torch_checkpoint``). ``device`` defaults to CUDA when available, else CPU. ``tile_size`` /
    ``tile_overlap`` override the model's tiling (an exported graph's tile size is fixed).
    """
    path = Path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    opts = backend_options(
        device,
        steps=steps,
        timesteps=timesteps,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        batch_size=batch_size,
        cache_dir=cache_dir,
        fp16=fp16,
        allow_export=allow_export,
        exporter=exporter,
        threads=ort_threads,
        torch_checkpoint=torch_checkpoint,
    )
    kind = _model_kind(path)
    skipped: list[tuple[str, str]] = []
    backend: RuntimeBackend | None = None
    entries = list(BACKENDS.values())
    for entry in entries:
        reason = entry.unavailable(path, kind, opts)
        if reason is not None:
            skipped.append((entry.title, reason))
            continue
        if entry is entries[-1]:  # the last resort: its errors are the caller's
            backend = entry.build(path, kind, opts)
            break
        try:
            backend = entry.build(path, kind, opts)
            break
        except (TensorRTUnavailable, ValueError, RuntimeError, FileNotFoundError, ImportError, OSError) as exc:
            skipped.append((entry.title, f"{type(exc).__name__}: {exc}"))
    if backend is None:
        raise RuntimeError(f"no backend can run {path}: " + "; ".join(f"{k}: {v}" for k, v in skipped))
    why = "; ".join(f"{k} not used: {v}" for k, v in skipped)
    level = logging.WARNING if (kind == "plan" and backend.name != "tensorrt") else logging.INFO
    log.log(
        level,
        "ddif.runtime: using %s for %s, %d steps%s",
        backend.describe(),
        path.name,
        backend.steps,
        f". {why}" if why else "",
    )
    return backend


def _model_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".plan" or suffix == ".engine":
        return "plan"
    if suffix == ".onnx":
        return "onnx"
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    raise ValueError(
        f"{path}: expected a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), an .onnx or a "
        f".plan, got '{suffix or 'no suffix'}'"
    )


__all__ = [
    "BACKENDS",
    "BackendOptions",
    "backend_options",
    "best_available",
    "build_backend",
    "ensure_onnx",
    "model_preset",
]
