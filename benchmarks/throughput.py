"""End-to-end fusion throughput, every sampling path side by side in one run.

    python benchmarks/throughput.py                     # defaults chosen for the machine
    python benchmarks/throughput.py --size 256 --steps 25 --device cuda --dtype fp16 --csv out.csv

Providers (same WV3-preset model, same inputs, same run):
  reference  the published-style loop at --steps: every step recomputes the wavelet condition,
             the CSM style maps and the FWM contexts (``model(x_t, t, lms, pan)``)
  cached     ours at --steps: the condition branch is encoded once per image (``Fuser``)
  fused      cached + the fused kernels that are live here (``--fused-kernels``)
  student-4, student-2, student-1
             a distilled student's sampler (cached PyTorch) at 4 / 2 / 1 steps; a student has
             the teacher's architecture, so its cost does not depend on its weights
  onnxruntime  the --onnx-steps sampler (default 2: the 2-step student) exported to one ONNX
             graph (exported once per run, not timed), run by ``ddif.runtime.OnnxRuntimeBackend``
  tensorrt   that graph as a TensorRT fp16 engine (``ddif.runtime.TensorRTBackend``); skipped,
             with its reason, where TensorRT or a GPU is missing

Each provider is warmed up with a 1-step run of the same path (same shapes, same kernels), then
timed at least --reps times and until --min-time seconds have passed.

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


Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Provider:
    name: str
    description: str
    # build(args, model, steps) -> a runner fusing (lms, pan) with that many sampling steps
    build: Callable[["argparse.Namespace", torch.nn.Module, int], Runner]
    available: Callable[["argparse.Namespace"], str | None] = lambda args: None  # reason when unavailable
    steps: Callable[["argparse.Namespace"], int] = lambda args: args.steps
    warm_with_one_step: bool = True


def _fuser_provider(use_cache: bool = True, fused: bool = False, **fast):
    """A ddif.Fuser runner; ``fast``: the sampler's fast-path options (amp, channels_last, compile,
    cuda_graphs) and ``tile_size`` (batched tiles instead of the whole image)."""
    def build(args, model, steps):
        import copy

        from ddif.fuser import Fuser

        if fused or fast.get("channels_last"):
            model = copy.deepcopy(model)
        if fused:
            model.set_fused_kernels(True)
        fuser = Fuser(model, sampler="ddim", steps=steps, use_cache=use_cache, **fast)
        return lambda lms, pan: fuser.fuse(lms, pan, seed=0)
    return build


def _cuda_only(args) -> str | None:
    return None if torch.device(args.device).type == "cuda" else "CUDA graphs need a CUDA device"


def _fp32_only(args) -> str | None:
    return None if parse_dtype(args.dtype) == torch.float32 else "autocast runs an fp32 model"


def _fused_available(args) -> str | None:
    from ddif.kernels import available

    status = available()
    live = [k for k, v in status.items() if v is True and (args.device != "cpu" or "cuda" not in k)]
    return None if live else "no fused backend is live here: " + "; ".join(f"{k}: {v}" for k, v in status.items())


def _exported_onnx(args, model, steps):
    """Export once per run (shared by the onnxruntime and tensorrt providers), same timesteps as Fuser."""
    if getattr(args, "_onnx_path", None) is None:
        import tempfile
        import time

        from ddif.fuser import Fuser
        from ddif.diffusion.sampling_plan import resolve_sampling_plan
        from ddif.export.onnx import export_model

        timesteps = Fuser(model, sampler="ddim", steps=steps).scheduler.timesteps.tolist()
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


def _onnxruntime_build(args, model, steps):
    from ddif.runtime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(_exported_onnx(args, model, steps), device=args.device,
                               intra_op_threads=args.ort_threads)
    print(f"# onnxruntime: {backend.describe()}")
    return lambda lms, pan: backend.fuse(lms, pan, seed=0)


def _tensorrt_available(args) -> str | None:
    from ddif.runtime.tensorrt import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason(args.device)


def _tensorrt_build(args, model, steps):
    from ddif.runtime import ShapeProfile, TensorRTBackend

    m = model.config.size_multiple
    size = -(-args.size // m) * m
    profile = ShapeProfile((1, m, m), (args.batch, size, size), (args.batch, size, size))
    backend = TensorRTBackend(_exported_onnx(args, model, steps), device=args.device, fp16=True, profile=profile,
                            cache_dir=args._tmpdir)
    return lambda lms, pan: backend.fuse(lms, pan, seed=0)


def _student(n: int) -> Provider:
    return Provider(f"student-{n}", f"distilled student, {n} step{'s' if n > 1 else ''} (PyTorch)",
                    _fuser_provider(), steps=lambda args: n)


PROVIDERS: dict[str, Provider] = {
    "reference": Provider("reference", "recompute condition every step", _fuser_provider(use_cache=False)),
    "cached": Provider("cached", "condition encoded once per image", _fuser_provider()),
    "fused": Provider("fused", "cached + live fused kernels", _fuser_provider(fused=True), _fused_available),
    "compiled": Provider("compiled", "cached + torch.compile (inductor)", _fuser_provider(compile=True)),
    "cuda-graph": Provider("cuda-graph", "cached, whole sampler replayed from a CUDA graph",
                           _fuser_provider(cuda_graphs=True), _cuda_only),
    "bf16": Provider("bf16", "cached, bf16 autocast (fp32 accumulation)", _fuser_provider(amp="bf16"), _fp32_only),
    "channels-last": Provider("channels-last", "cached, NHWC memory layout", _fuser_provider(channels_last=True)),
    "tiles-64": Provider("tiles-64", "cached, 64 px tiles (16 px overlap) batched", _fuser_provider(tile_size=64)),
    "student-4": _student(4),
    "student-2": _student(2),
    "student-1": _student(1),
    "onnxruntime": Provider("onnxruntime", "ONNX Runtime, whole sampler in one graph", _onnxruntime_build,
                            _onnxruntime_available, steps=lambda args: args.onnx_steps, warm_with_one_step=False),
    "tensorrt": Provider("tensorrt", "TensorRT fp16 engine", _tensorrt_build, _tensorrt_available,
                         steps=lambda args: args.onnx_steps, warm_with_one_step=False),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="wv3")
    p.add_argument("--size", type=int, default=256, help="image height = width (PAN grid)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps of reference / cached / fused (published: 25)")
    p.add_argument("--onnx-steps", type=int, default=2, help="steps of the exported sampler (a 2-step student)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    p.add_argument("--reps", type=int, default=None, help="minimum timed runs (default: 1 on CPU, 10 on GPU)")
    p.add_argument("--min-time", type=float, default=None, help="keep timing until this many seconds "
                   "(default: 5 on CPU, 2 on GPU)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs (1-step runs of the same path)")
    p.add_argument("--providers", default=",".join(PROVIDERS), help=f"comma list of {list(PROVIDERS)}")
    p.add_argument("--csv", default="benchmarks/results/throughput.csv", help="append rows here ('' to skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ort-threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    # the export is not timed; the TorchScript exporter takes ~13 s for WV3, the dynamo one minutes
    p.add_argument("--onnx-exporter", default="torchscript", choices=("dynamo", "torchscript"),
                   help="exporter for the onnxruntime / tensorrt providers")
    args = p.parse_args(argv)

    from ddif.models import DDIF

    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype)
    reps = args.reps or (10 if device.type == "cuda" else 1)
    min_time = args.min_time if args.min_time is not None else (2.0 if device.type == "cuda" else 5.0)
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
          f"{args.size}x{args.size}, {device} {args.dtype}, >= {reps} timed runs and >= {min_time:g} s per provider")
    results = []
    for name in names:
        prov = PROVIDERS[name]
        why = prov.available(args)
        if why:
            print(f"# {name}: skipped ({why})")
            continue
        steps = prov.steps(args)
        run = prov.build(args, model, steps)
        if prov.warm_with_one_step and steps > 1:
            warm = prov.build(args, model, 1)
            for _ in range(args.warmup):
                warm(lms, pan)
            timing = bench(lambda: run(lms, pan), device, warmup=0, reps=reps, min_time_s=min_time)
        else:
            timing = bench(lambda: run(lms, pan), device, warmup=args.warmup, reps=reps, min_time_s=min_time)
        results.append((prov, steps, timing))
        print(f"# {name} ({steps} steps): median {timing.median:.3f} s per batch over {len(timing.times_s)} runs")

    ref = next((t.median for pv, _, t in results if pv.name == "reference"), None)
    megapixels = args.size * args.size / 1e6
    rows, csv_rows = [], []
    for prov, steps, timing in results:
        per_image = timing.median / args.batch
        speedup = (ref / timing.median) if ref else float("nan")
        rows.append([prov.name, prov.description, steps, len(timing.times_s), per_image, timing.p20 / args.batch,
                     timing.p80 / args.batch, 1.0 / per_image, megapixels / per_image,
                     f"{speedup:.2f}x" if ref else "– (no reference run)"])
        csv_rows.append({**base_fields(device, dtype), "benchmark": "throughput", "provider": prov.name,
                         "preset": args.preset, "shape": "x".join(map(str, shape)), "steps": steps,
                         "median_s": timing.median, "p20_s": timing.p20, "p80_s": timing.p80,
                         "s_per_image": per_image, "images_per_s": 1.0 / per_image,
                         "megapixels_per_s": megapixels / per_image, "speedup_vs_reference": speedup})
    print()
    print(markdown_table(["provider", "path", "steps", "runs", "s/image", "p20", "p80", "images/s", "MP/s",
                          "speedup vs reference"], rows))
    if args.csv:
        append_csv(args.csv, csv_rows)
        print(f"\n# appended {len(csv_rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
