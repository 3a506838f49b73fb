"""End-to-end fusion throughput, every sampling path side by side in one run.

    python benchmarks/throughput.py                     # defaults chosen for the machine
    python benchmarks/throughput.py --size 256 --steps 25 --device cuda --dtype fp16 --csv out.csv

Providers (same WV3-preset model, same inputs, same run):
  reference  the published-style loop: every step recomputes the wavelet condition, the CSM
             style maps and the FWM contexts (``model(x_t, t, lms, pan)``)
  cached     ours: the condition branch is encoded once per image (``Fuser``, default path)
  onnxruntime  the whole sampler exported to one ONNX graph (``export.onnx``, exported once per
             run, not timed), run by ``ddif.runtime.OnnxRuntimeFuser`` (CPU, or CUDA provider)
  tensorrt   that graph as a TensorRT fp16 engine (``ddif.runtime.TensorRTFuser``); skipped,
             with its reason, where TensorRT or a GPU is missing

Prints a Markdown table (seconds/image, images/s, megapixels/s, speedup vs reference) and
appends CSV rows with device, dtype, shape, steps, torch version and git commit.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_csv, base_fields, bench, markdown_table, parse_dtype  # noqa: E402


@dataclass
class Provider:
    name: str
    description: str
    build: Callable[["argparse.Namespace", torch.nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    available: Callable[["argparse.Namespace"], str | None] = lambda args: None  # reason when unavailable


def _fuser_provider(use_cache: bool):
    def build(args, model):
        from ddif.fuser import Fuser

        fuser = Fuser(model, sampler="ddim", steps=args.steps, use_cache=use_cache)
        return lambda lms, pan: fuser.fuse(lms, pan, seed=0)
    return build


def _exported_onnx(args, model):
    """Export once per run (shared by the onnxruntime and tensorrt providers), same timesteps as Fuser."""
    if getattr(args, "_onnx_path", None) is None:
        import tempfile
        import time

        from ddif.fuser import Fuser
        from ddif.runtime.plan import resolve_sampling_plan
        from export.onnx import export_model

        timesteps = Fuser(model, sampler="ddim", steps=args.steps).scheduler.timesteps.tolist()
        plan = resolve_sampling_plan(model.preset, timesteps=timesteps)
        args._tmpdir = tempfile.mkdtemp(prefix="ddif-bench-")
        t0 = time.perf_counter()
        args._onnx_path = export_model(model, Path(args._tmpdir) / "fuser.onnx", plan, exporter=args.onnx_exporter).path
        print(f"# exported {plan.steps}-step ONNX graph ({args.onnx_exporter}) in {time.perf_counter() - t0:.1f} s")
    return args._onnx_path


def _onnxruntime_available(args) -> str | None:
    from ddif.runtime.backends import onnxruntime_unavailable_reason

    if parse_dtype(args.dtype) != torch.float32:
        return "the exported graph is float32"
    return onnxruntime_unavailable_reason(torch.device(args.device))


def _onnxruntime_build(args, model):
    from ddif.runtime import OnnxRuntimeFuser

    backend = OnnxRuntimeFuser(_exported_onnx(args, model), device=args.device, intra_op_threads=args.ort_threads)
    print(f"# onnxruntime: {backend.describe()}")
    return lambda lms, pan: backend.fuse(lms, pan, seed=0)


def _tensorrt_available(args) -> str | None:
    from ddif.runtime.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason(args.device)


def _tensorrt_build(args, model):
    from ddif.runtime import ShapeProfile, TensorRTFuser

    m = model.config.size_multiple
    size = -(-args.size // m) * m
    profile = ShapeProfile((1, m, m), (args.batch, size, size), (args.batch, size, size))
    backend = TensorRTFuser(_exported_onnx(args, model), device=args.device, fp16=True, profile=profile,
                            cache_dir=args._tmpdir)
    return lambda lms, pan: backend.fuse(lms, pan, seed=0)


PROVIDERS: dict[str, Provider] = {
    "reference": Provider("reference", "recompute condition every step", _fuser_provider(False)),
    "cached": Provider("cached", "condition encoded once per image", _fuser_provider(True)),
    "onnxruntime": Provider("onnxruntime", "one ONNX graph on ONNX Runtime", _onnxruntime_build,
                            _onnxruntime_available),
    "tensorrt": Provider("tensorrt", "TensorRT fp16 engine", _tensorrt_build, _tensorrt_available),
}


def default_steps(device: torch.device) -> int:
    # 25 steps is the published setting; a 2-core CPU needs ~1 s per network pass at 256x256,
    # so CPU defaults to fewer steps to finish in about two minutes.
    return 25 if device.type == "cuda" else 10


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wv3")
    p.add_argument("--size", type=int, default=256, help="image height = width (PAN grid)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 25 on GPU, 10 on CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 3 on CPU, 10 on GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {list(PROVIDERS)}")
    p.add_argument("--csv", default="benchmarks/results/throughput.csv", help="append rows here ('' to skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ort-threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--onnx-exporter", default="dynamo", choices=("dynamo", "torchscript"),
                   help="exporter for the onnxruntime / tensorrt providers")
    args = p.parse_args(argv)

    from ddif.models import DDIF

    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    if args.steps is None:
        args.steps = default_steps(device)
        print(f"# steps not given: using {args.steps} on {device.type} (published setting: 25)")
    reps = args.reps or (10 if device.type == "cuda" else 3)
    torch.manual_seed(args.seed)
    model = DDIF.from_preset(args.preset).to(device=device, dtype=dtype).eval()
    cfg = model.config
    g = torch.Generator().manual_seed(args.seed)
    shape = (args.batch, cfg.bands, args.size, args.size)
    lms = torch.rand(shape, generator=g).to(device, dtype)
    pan = torch.rand((args.batch, cfg.guide_bands, args.size, args.size), generator=g).to(device, dtype)

    names = [n.strip() for n in args.providers.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise SystemExit(f"unknown providers {unknown}; choose from {list(PROVIDERS)}")

    print(f"# {args.preset} preset, {model.num_parameters():,} parameters, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.steps} DDIM steps, {device} {args.dtype}, {reps} reps")
    results = []
    for name in names:
        prov = PROVIDERS[name]
        why = prov.available(args)
        if why:
            print(f"# {name}: skipped ({why})")
            continue
        run = prov.build(args, model)
        timing = bench(lambda: run(lms, pan), device, warmup=args.warmup, reps=reps)
        results.append((prov, timing))
        print(f"# {name}: median {timing.median:.3f} s per batch")

    ref = next((t.median for pv, t in results if pv.name == "reference"), None)
    megapixels = args.size * args.size / 1e6
    rows, csv_rows = [], []
    for prov, timing in results:
        per_image = timing.median / args.batch
        speedup = (ref / timing.median) if ref else float("nan")
        rows.append([prov.name, prov.description, per_image, timing.p20 / args.batch, timing.p80 / args.batch,
                     1.0 / per_image, megapixels / per_image, f"{speedup:.2f}x"])
        csv_rows.append({**base_fields(device, dtype), "benchmark": "throughput", "provider": prov.name,
                         "preset": args.preset, "shape": "x".join(map(str, shape)), "steps": args.steps,
                         "median_s": timing.median, "p20_s": timing.p20, "p80_s": timing.p80,
                         "s_per_image": per_image, "images_per_s": 1.0 / per_image,
                         "megapixels_per_s": megapixels / per_image, "speedup_vs_reference": speedup})
    print()
    print(markdown_table(["provider", "path", "s/image", "p20", "p80", "images/s", "MP/s", "speedup vs reference"],
                         rows))
    if args.csv:
        append_csv(args.csv, csv_rows)
        print(f"\n# appended {len(csv_rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
