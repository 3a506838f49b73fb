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

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from ddif.config import Preset
from ddif.diffusion.sampling_plan import resolve_sampling_plan
from ddif.export.onnx import DEFAULT_EXPORTER, DEFAULT_OPSET, export_model
from ddif.inference.tiling import Tiling, check_tiling
from ddif.models.checkpoint import read_contents
from ddif.models.ddif import DDIF
from ddif.runtime.backends import (
    FuserBackend,
    OnnxRuntimeFuser,
    TensorRTFuser,
    TorchFuser,
    load_onnx_spec,
    onnxruntime_unavailable_reason,
)
from ddif.runtime.spec import SPEC_VERSION, ExportSpec, sha256_file, spec_path_for
from ddif.runtime.tensorrt import TensorRTUnavailable, default_cache_dir, tensorrt_unavailable_reason

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
    model = DDIF.from_pretrained(checkpoint)
    plan = resolve_sampling_plan(model.preset, getattr(model, "metadata", None), steps=steps, timesteps=timesteps)
    tiling = Tiling.for_preset(model.preset, tile_size)
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
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    tiles = f"tile{tiling.tile_size}" if tiling.tiled else "whole"
    out = root / "onnx" / f"{checkpoint.stem}-{plan.steps}steps-{tiles}-{digest}.onnx"
    if out.is_file() and spec_path_for(out).is_file():
        try:
            ExportSpec.for_model(out, verify=True)
            return out
        except ValueError as exc:
            log.info("re-exporting %s: %s", out, exc)
    log.info("exporting %s (%d steps, %s) to ONNX once; cached as %s", checkpoint, plan.steps, tiling.describe(), out)
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
    return out


# -------------------------------------------------------------------------------- best_available
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
) -> FuserBackend:
    """The fastest backend that works here for ``model_path`` (an engine checkpoint ``.pt``, an
    exported ``.onnx`` or a TensorRT ``.plan``), with one log line saying what was chosen and why.

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
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but no CUDA GPU is available here (use device='cpu')")
    kind = _model_kind(path)
    skipped: list[tuple[str, str]] = []

    def onnx_source() -> Path | None:
        if kind == "onnx":
            return path
        if kind == "plan":
            spec = ExportSpec.load(spec_path_for(path))
            src = spec.tensorrt.get("onnx_file")
            return Path(src) if src and Path(src).is_file() else None
        if allow_export:
            return ensure_onnx(
                path, steps=steps, timesteps=timesteps, tile_size=tile_size, cache_dir=cache_dir, exporter=exporter
            )
        return None

    def check_graph_tiles(backend: FuserBackend) -> FuserBackend:
        check_tiling(backend.tiling, tile_size, what=f"{path}: the graph", fix="export it again with --tile-size")
        return backend

    def attempt(label: str, make):
        try:
            return make()
        except (TensorRTUnavailable, ValueError, RuntimeError, FileNotFoundError, ImportError, OSError) as exc:
            skipped.append((label, f"{type(exc).__name__}: {exc}"))
            return None

    backend: FuserBackend | None = None
    reason = tensorrt_unavailable_reason(device)
    if reason is not None:
        skipped.append(("TensorRT", reason))
    else:

        def make_trt():
            if kind == "plan":
                return check_graph_tiles(
                    TensorRTFuser(
                        path,
                        device=device,
                        steps=steps,
                        timesteps=timesteps,
                        batch_size=batch_size,
                        tile_overlap=tile_overlap,
                    )
                )
            src = onnx_source()
            if src is None:
                raise FileNotFoundError(f"{path}: no ONNX graph to build a TensorRT engine from")
            return check_graph_tiles(
                TensorRTFuser(
                    src,
                    device=device,
                    fp16=fp16,
                    cache_dir=cache_dir,
                    steps=steps,
                    timesteps=timesteps,
                    batch_size=batch_size,
                    tile_overlap=tile_overlap,
                )
            )

        backend = attempt("TensorRT", make_trt)

    if backend is None:
        reason = onnxruntime_unavailable_reason(device)
        if reason is not None:
            skipped.append(("ONNX Runtime", reason))
        else:

            def make_ort():
                src = onnx_source()
                if src is None:
                    raise FileNotFoundError("no ONNX model (export disabled, or the engine's ONNX source is gone)")
                return check_graph_tiles(
                    OnnxRuntimeFuser(
                        src,
                        device=device,
                        intra_op_threads=ort_threads,
                        steps=steps,
                        timesteps=timesteps,
                        batch_size=batch_size,
                        tile_overlap=tile_overlap,
                    )
                )

            backend = attempt("ONNX Runtime", make_ort)

    if backend is None:
        ckpt = Path(torch_checkpoint) if torch_checkpoint else (path if kind == "checkpoint" else None)
        if ckpt is None:
            raise RuntimeError(
                f"no backend can run {path}: "
                + "; ".join(f"{k}: {v}" for k, v in skipped)
                + " (PyTorch needs the engine checkpoint: pass torch_checkpoint=...)"
            )
        backend = TorchFuser(
            ckpt,
            steps=steps,
            timesteps=timesteps,
            device=device,
            batch_size=batch_size,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
        )

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


__all__ = ["best_available", "ensure_onnx", "model_preset"]
