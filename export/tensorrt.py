"""Build a TensorRT engine for an exported fixed-step sampler.

    python -m ddif.export.tensorrt --onnx fuser.onnx --fp16 --shapes 1x64x64/1x256x256/4x1024x1024 --out fuser.plan

``--shapes`` is one optimization profile, min/opt/max as ``BxHxW`` (batch x height x width; ``HxW``
means batch 1), H and W multiples of the model's size multiple (see ``fuser.onnx.json``); the
default is the profile recorded in the ONNX spec. Writes ``fuser.plan`` atomically and
``fuser.plan.json`` (the ONNX spec plus the TensorRT version, GPU, precision and profile). Without
``--out`` the engine goes to the engine cache (``$DDIF_CACHE_DIR/tensorrt``, keyed by ONNX hash +
GPU + TensorRT version + precision + profile) and an existing one is reused.

Needs TensorRT >= 10 and an NVIDIA GPU. Where they are missing the command says so and exits
with status 2: the ONNX model then runs on ONNX Runtime (``ddif.runtime.OnnxRuntimeBackend``).
This builder is written against the documented TensorRT Python API and has NOT been run with a
real TensorRT on the development machines (none available); ``export/check_tensorrt.py``
verifies a build where TensorRT exists.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ddif.runtime.spec import ExportSpec, ShapeProfile, spec_path_for
from ddif.runtime.tensorrt import (
    EngineCache,
    TensorRTUnavailable,
    build_engine,
    engine_key,
    gpu_identity,
    import_tensorrt,
    tensorrt_unavailable_reason,
    write_engine_spec,
)

log = logging.getLogger("ddif.export")


def resolve_profile(onnx_path: Path, shapes: str | None) -> tuple[ExportSpec, ShapeProfile]:
    """The ONNX spec and the profile to build (``shapes`` or the spec's), validated against it."""
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if onnx_path.suffix != ".onnx":
        raise ValueError(f"{onnx_path}: expected an .onnx file")
    if not spec_path_for(onnx_path).is_file():
        raise FileNotFoundError(
            f"{spec_path_for(onnx_path)} not found: export the model with python -m ddif.export.onnx, "
            "which writes the spec beside it"
        )
    spec = ExportSpec.for_model(onnx_path, verify=True)
    if spec.kind != "onnx":
        raise ValueError(f"{onnx_path}: spec kind is {spec.kind!r}, expected 'onnx'")
    profile = ShapeProfile.parse(shapes, spec.size_multiple) if shapes else spec.shape_profile()
    return spec, profile


def build_plan(
    onnx_path: str | Path,
    out: str | Path | None,
    *,
    shapes: str | None = None,
    fp16: bool = True,
    workspace_gib: float | None = None,
    cache_dir: str | Path | None = None,
    gpu: str | None = None,
    trt=None,
) -> tuple[Path, bool]:
    """Build (or, without ``out``, fetch from the cache) the engine; returns (path, cache hit)."""
    onnx_path = Path(onnx_path)
    spec, profile = resolve_profile(onnx_path, shapes)
    trt = trt or import_tensorrt()
    key = engine_key(
        onnx_path,
        profile,
        fp16=fp16,
        gpu=gpu if gpu is not None else gpu_identity(),
        tensorrt_version=str(trt.__version__),
    )
    model = spec.preset["model"]

    def build(src: Path, dst: Path) -> None:
        build_engine(
            src,
            dst,
            profile,
            fp16=fp16,
            bands=int(model["bands"]),
            guide_bands=int(model["guide_bands"]),
            workspace_gib=workspace_gib,
            trt=trt,
        )

    if out is None:
        return EngineCache(cache_dir).get_or_build(onnx_path, key, profile, build)
    out = Path(out)
    build(onnx_path, out)
    write_engine_spec(out, onnx_path, key, profile)
    return out, False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ddif.export.tensorrt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--onnx", required=True, help="model from python -m ddif.export.onnx (its .onnx.json beside it)")
    p.add_argument("--out", default=None, help="engine path (.plan); default: the engine cache")
    p.add_argument("--shapes", default=None, help="optimization profile 'BxHxW/BxHxW/BxHxW' (min/opt/max)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 10 BuilderFlag.FP16)")
    p.add_argument("--workspace-gib", type=float, default=None, help="builder workspace limit")
    p.add_argument("--cache-dir", default=None, help="cache root (default $DDIF_CACHE_DIR or ~/.cache/ddif)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        _, profile = resolve_profile(Path(args.onnx), args.shapes)
        if args.out is not None and Path(args.out).suffix not in (".plan", ".engine"):
            raise ValueError(f"--out {args.out}: expected a .plan path")
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    reason = tensorrt_unavailable_reason("cuda")
    if reason is not None:
        print(
            f"TensorRT is not available here: {reason}. The ONNX model runs on ONNX Runtime instead: "
            f"ddif.runtime.OnnxRuntimeBackend('{args.onnx}') or ddif.runtime.best_available('{args.onnx}').",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    try:
        path, hit = build_plan(
            args.onnx,
            args.out,
            shapes=args.shapes,
            fp16=args.fp16,
            workspace_gib=args.workspace_gib,
            cache_dir=args.cache_dir,
        )
    except TensorRTUnavailable as exc:
        print(f"TensorRT is not available here: {exc}", file=sys.stderr)
        return 2
    what = "found in the cache" if hit else f"built in {time.perf_counter() - t0:.1f} s"
    print(f"{path} ({'fp16' if args.fp16 else 'fp32'}, profile {profile}): {what}; spec {spec_path_for(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
