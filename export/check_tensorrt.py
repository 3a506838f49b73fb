"""Verify the TensorRT path on a machine that has TensorRT >= 10 and an NVIDIA GPU.

    python -m ddif.export.check_tensorrt --ckpt student.pt --steps 2 --size 256
    python -m ddif.export.check_tensorrt --preset wv3 --steps 2                      # random weights
    python export/check_tensorrt.py ...                                          # the same

1. exports the fixed-step sampler to ONNX (``export.onnx``) unless ``--onnx`` is given;
2. builds an FP16 engine with an optimization profile covering ``--size`` (``export.tensorrt``);
3. fuses the same images with the same seed in PyTorch (CUDA, true FP32: TF32 off) and TensorRT
   and reports PSNR (data range 1) and max abs difference; passes when PSNR >= ``--min-psnr``
   (50 dB by default);
4. times PyTorch eager FP32, TensorRT and, when onnxruntime has a CUDA provider, ONNX Runtime:
   warm-up, CUDA synchronisation around every timed run, median with p20 / p80.

Exit status: 0 pass, 1 PSNR below the bar, 2 TensorRT or CUDA missing.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):
    # Run as a script, its own folder (export/) would come first on sys.path, and export/onnx.py and
    # export/tensorrt.py would shadow the real onnx and tensorrt packages: put the repo root there.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def test_images(bands: int, guide: int, batch: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth images with edges (not white noise), so the comparison resembles real scenes."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(6.28 * (3 * xx + 2 * yy)) * torch.cos(6.28 * 2 * yy)
    base = base + 0.15 * ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05).float()
    gains = 0.6 + 0.4 * torch.rand(batch, bands, 1, 1, generator=g)
    lms = (base * gains + 0.02 * torch.randn(batch, bands, size, size, generator=g)).clamp(0, 1)
    pan = lms.mean(1, keepdim=True).repeat(1, guide, 1, 1)
    return lms, pan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="engine checkpoint (DDIF.save)")
    p.add_argument("--preset", default=None, help="preset for random or --published weights")
    p.add_argument("--published", default=None)
    p.add_argument("--onnx", default=None, help="use this export instead of exporting")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--timesteps", default=None)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-psnr", type=float, default=50.0)
    p.add_argument("--fp32", action="store_true", help="build an FP32 engine instead of FP16")
    p.add_argument("--workdir", default=None, help="where the ONNX model and engine go (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from benchmarks.common import bench, markdown_table
    from ddif.diffusion.sampling_plan import resolve_sampling_plan
    from ddif.export.onnx import export_model, load_model_for_export
    from ddif.export.tensorrt import build_plan
    from ddif.runtime import OnnxRuntimeBackend, TensorRTBackend, TorchBackend
    from ddif.runtime.spec import ExportSpec
    from ddif.runtime.tensorrt import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason("cuda")
    if reason is not None:
        print(f"cannot check TensorRT here: {reason}", file=sys.stderr)
        return 2
    if not (args.ckpt or args.preset or args.onnx):
        args.preset = "wv3"
    device = torch.device("cuda")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ddif-trt-"))
    workdir.mkdir(parents=True, exist_ok=True)

    model = None
    if args.ckpt or args.preset:
        model, metadata, source = load_model_for_export(args.ckpt, args.preset, args.published, args.seed)
        plan = resolve_sampling_plan(model.preset, metadata, steps=args.steps, timesteps=args.timesteps)
    if args.onnx:
        onnx_path = Path(args.onnx)
    else:
        onnx_path = workdir / "fuser.onnx"
        print(f"exporting {plan.steps} steps {list(plan.timesteps)} to {onnx_path} ...")
        export_model(model, onnx_path, plan, source=source)
    if model is None:
        raise SystemExit("--onnx needs --ckpt (or --preset/--published) for the PyTorch reference")

    m = model.config.size_multiple
    size = -(-args.size // m) * m
    tile = ExportSpec.for_model(onnx_path).tiling_obj().tile_size
    # a tiled model's graph samples fixed tiles: its spec's default profile (batch 1 .. ~4 Mpx of tiles)
    shapes = (
        None
        if tile
        else f"1x{m}x{m}/{args.batch}x{size}x{size}/{max(args.batch, 1)}x{max(size, 1024)}x{max(size, 1024)}"
    )
    precision = "fp32" if args.fp32 else "fp16"
    engine = workdir / f"fuser-{precision}.plan"
    profile_text = shapes or f"of the spec: {tile} px tiles"
    print(f"building the TensorRT {precision} engine (profile {profile_text}) ...")
    build_plan(onnx_path, engine, shapes=shapes, fp16=not args.fp32)

    lms, pan = test_images(model.config.bands, model.config.guide_bands, args.batch, args.size, args.seed)
    trt_fuser = TensorRTBackend(engine, device=device)
    torch_fuser = TorchBackend(model, timesteps=list(trt_fuser.timesteps), device=device, dtype=torch.float32)

    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    reference = torch_fuser.fuse(lms.to(device), pan.to(device), seed=args.seed).float().cpu()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    got = trt_fuser.fuse(lms.to(device), pan.to(device), seed=args.seed).float().cpu()
    quality = psnr(got, reference)
    max_abs = float((got - reference).abs().max())
    ok = quality >= args.min_psnr
    print(
        f"TensorRT {precision} vs PyTorch fp32: PSNR {quality:.2f} dB (bar {args.min_psnr:g} dB), "
        f"max abs {max_abs:.3g}: {'PASS' if ok else 'FAIL'}"
    )

    runs = [("pytorch eager fp32", torch_fuser), (f"tensorrt {precision}", trt_fuser)]
    try:
        ort_fuser = OnnxRuntimeBackend(onnx_path, device=device)
        if ort_fuser.providers[0] == "CUDAExecutionProvider":
            runs.append(("onnxruntime cuda", ort_fuser))
    except (RuntimeError, ValueError) as exc:
        print(f"onnxruntime skipped: {exc}")
    lms_d, pan_d = lms.to(device), pan.to(device)
    rows, eager = [], None
    for label, fuser in runs:
        timing = bench(
            functools.partial(fuser.fuse, lms_d, pan_d, seed=args.seed), device, warmup=args.warmup, reps=args.reps
        )
        eager = eager or timing.median
        rows.append(
            [
                label,
                timing.median / args.batch,
                timing.p20 / args.batch,
                timing.p80 / args.batch,
                f"{eager / timing.median:.2f}x",
            ]
        )
    print(
        f"\n{torch.cuda.get_device_name(device)}, batch {args.batch}, {args.size}x{args.size}, "
        f"{trt_fuser.steps} steps, {args.reps} reps after {args.warmup} warm-up\n"
    )
    print(markdown_table(["path", "s/image", "p20", "p80", "speedup vs eager fp32"], rows))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
