"""The engine's hot-path ops, fused kernel vs eager PyTorch, side by side.

    python benchmarks/ops.py                                   # every op, 64/256/512, this device
    python benchmarks/ops.py --device cuda --dtype fp16 --sizes 256 --peak-gbps 3350
    python benchmarks/ops.py --ops fwm_apply,csm --csv ''      # a subset, no CSV

Ops (batch ``--batch``, square images of each ``--sizes``):
  wavelet     the wavelet condition of WV3 (C=8, P=1) and CAVE (C=31, P=3) inputs: eager
              (``wavelet_condition_ref``) vs the Triton one-pass kernel (DWT + bilinear resize)
              and the Triton half-size kernel followed by ``F.interpolate`` (whether fusing the
              resize pays)
  fwm_context FWM context softmax_W(k) v^T at the WV3 decoder widths (dim 64 / 128 / 256, 8 heads)
  fwm_apply   FWM apply context^T softmax_H(q) / sqrt(d) (the per-step op when sampling)
  fwm_train   context + apply, forward and backward (the training step's share)
  csm         CSM style-modulated 1x1 conv (C_in = C_out = 32 / 64 / 128): eager
              ``style_modulated_conv_ref`` vs ``StyleModulatedConv(fused=True)`` (C++ / CUDA)

Columns: median / p20 / p80 milliseconds, GB/s achieved = the op's minimum memory traffic (each
input read once, each output written once) / median time, % of ``--peak-gbps`` (the memory
roofline; defaults to the datasheet bandwidth of known GPUs), speedup over eager. Triton runs on
a CPU only in its interpreter, whose timings mean nothing: on CPU the Triton rows are listed as
skipped, with that reason.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_csv, base_fields, bench, markdown_table, parse_dtype  # noqa: E402

#: Datasheet memory bandwidth (GB/s) of GPUs this may run on, matched against the device name.
PEAK_GBPS = {
    "H100 80GB HBM3": 3350.0,  # H100 SXM5
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H200": 4800.0,
    "A100-SXM4-80GB": 2039.0,
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-40GB": 1555.0,
    "A100-PCIE-40GB": 1555.0,
}

PRESET_CHANNELS = {"wv3": (8, 1, "HDV"), "cave": (31, 3, "HVD")}
FWM_DIMS = (64, 128, 256)  # decoder widths of the WV3 network (base width 32)
FWM_HEADS = 8
CSM_DIMS = (32, 64, 128)
ALL_OPS = ("wavelet", "fwm_context", "fwm_apply", "fwm_train", "csm")

TRITON_CPU_REASON = ("Triton runs on CPU only in its interpreter (TRITON_INTERPRET=1), which executes "
                     "each program in numpy: timings are meaningless")
TRITON_CPU_SHORT = "CPU: Triton runs only in its interpreter (see note above)"


@dataclass
class Case:
    op: str
    shape: str
    bytes_moved: int
    providers: dict[str, Callable[[], object] | str] = field(default_factory=dict)  # fn, or why skipped


def _triton_reason(device: torch.device, module: str) -> str | None:
    from ddif.kernels._triton_utils import can_launch, triton_status

    if device.type == "cpu":
        return TRITON_CPU_SHORT
    if not can_launch(device, module):
        return "Triton cannot launch here: " + ": ".join(triton_status())
    return None


def wavelet_cases(device, dtype, batch, sizes, presets) -> list[Case]:
    from ddif.kernels.haar_dwt import wavelet_condition_fused, wavelet_condition_ref

    why = _triton_reason(device, "ddif.kernels._haar_triton")
    cases = []
    for preset in presets:
        bands, guide, order = PRESET_CHANNELS[preset]
        for size in sizes:
            lms = torch.rand(batch, bands, size, size, device=device, dtype=dtype)
            pan = torch.rand(batch, guide, size, size, device=device, dtype=dtype)
            nbytes = batch * size * size * dtype.itemsize * ((bands + guide) + (bands + 3 * guide))
            case = Case("wavelet", f"{preset} C={bands} P={guide} {batch}x{size}x{size}", nbytes)
            case.providers["eager"] = lambda lms=lms, pan=pan, o=order: wavelet_condition_ref(lms, pan, o)
            case.providers["triton one-pass"] = why or (
                lambda lms=lms, pan=pan, o=order: wavelet_condition_fused(lms, pan, o, True))
            case.providers["triton half+interpolate"] = why or (
                lambda lms=lms, pan=pan, o=order: wavelet_condition_fused(lms, pan, o, False))
            cases.append(case)
    return cases


def fwm_cases(device, dtype, batch, sizes, ops) -> list[Case]:
    from ddif.kernels.fwm import fwm_apply_fused, fwm_apply_ref, fwm_context_fused, fwm_context_ref

    why = _triton_reason(device, "ddif.kernels._fwm_triton")
    cases = []
    for size in sizes:
        for dim in FWM_DIMS:
            d = dim // FWM_HEADS
            q, k, v = (torch.randn(batch, dim, size, size, device=device, dtype=dtype) for _ in range(3))
            ctx = fwm_context_ref(k, v, FWM_HEADS)
            plane = batch * dim * size * size * dtype.itemsize
            ctx_bytes = ctx.numel() * ctx.element_size()
            shape = f"dim={dim} d={d} {batch}x{size}x{size}"
            if "fwm_context" in ops:
                case = Case("fwm_context", shape, 2 * plane + ctx_bytes)
                case.providers["eager"] = lambda k=k, v=v: fwm_context_ref(k, v, FWM_HEADS)
                case.providers["triton"] = why or (lambda k=k, v=v: fwm_context_fused(k, v, FWM_HEADS))
                cases.append(case)
            if "fwm_apply" in ops:
                case = Case("fwm_apply", shape, 2 * plane + ctx_bytes)
                case.providers["eager"] = lambda q=q, c=ctx: fwm_apply_ref(q, c, FWM_HEADS)
                case.providers["triton"] = why or (lambda q=q, c=ctx: fwm_apply_fused(q, c, FWM_HEADS))
                cases.append(case)
            if "fwm_train" in ops:
                # forward reads q, k, v and writes out; backward reads q, k, v, grad and writes 3 grads
                case = Case("fwm_train", shape, 11 * plane)
                case.providers["eager"] = _train_step(fwm_context_ref, fwm_apply_ref, q, k, v)
                case.providers["triton"] = why or _train_step(fwm_context_fused, fwm_apply_fused, q, k, v)
                cases.append(case)
    return cases


def _train_step(context_fn, apply_fn, q, k, v):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    grad = torch.randn_like(q)

    def step():
        out = apply_fn(q, context_fn(k, v, FWM_HEADS), FWM_HEADS)
        return torch.autograd.grad(out, (q, k, v), grad)
    return step


def csm_cases(device, dtype, batch, sizes) -> list[Case]:
    from ddif.kernels import style_conv

    fused_ok = getattr(style_conv, "fused_available", lambda device: False)(device)
    why = None
    if not fused_ok:
        status = getattr(style_conv, "_status", dict)()
        why = "fused CSM not available here: " + ("; ".join(f"{k}: {v}" for k, v in status.items()) or "not built")
    cases = []
    for size in sizes:
        for dim in CSM_DIMS:
            x = torch.randn(batch, dim, size, size, device=device, dtype=dtype)
            scale, shift = (0.1 * torch.randn(batch, dim, size, size, device=device, dtype=dtype) for _ in range(2))
            # the model's CSM layer (ddif.models.layers.StyleModulatedConv): a 1x1 convolution
            weight = (torch.randn(dim, dim, 1, 1, device=device) / dim**0.5).to(dtype)
            bias = (0.1 * torch.randn(dim, device=device)).to(dtype)
            plane = batch * dim * size * size * dtype.itemsize
            case = Case("csm", f"{dim}->{dim} {batch}x{size}x{size}", 4 * plane)
            case.providers["eager"] = lambda x=x, s=scale, t=shift, w=weight, b=bias: style_conv.style_modulated_conv_ref(
                x, w, b, s, t)
            case.providers["fused (C++/CUDA)"] = why or (
                lambda x=x, s=scale, t=shift, w=weight, b=bias: style_conv.style_modulated_conv(x, w, b, s, t))
            cases.append(case)
    return cases


def default_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for key, gbps in PEAK_GBPS.items() if key in name), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="fp32 | fp16 | bf16 (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--sizes", default="64,256,512", help="comma list of image sizes (square)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--ops", default=",".join(ALL_OPS), help=f"comma list of {list(ALL_OPS)}")
    p.add_argument("--presets", default="wv3,cave", help="channel counts for the wavelet op")
    p.add_argument("--reps", type=int, default=None, help="timed runs (default: 20 on GPU, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 5 on GPU, 1 on CPU;"
                                                            " the first run of a Triton kernel autotunes it)")
    p.add_argument("--peak-gbps", type=float, default=None,
                   help="memory bandwidth for the %% of roofline column (default: datasheet value of known GPUs)")
    p.add_argument("--csv", default="benchmarks/results/ops.csv", help="append rows here ('' to skip)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype or ("fp16" if device.type == "cuda" else "fp32"))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    ops = [o for o in args.ops.split(",") if o]
    unknown = set(ops) - set(ALL_OPS)
    if unknown:
        raise SystemExit(f"unknown ops {sorted(unknown)}; choose from {list(ALL_OPS)}")
    presets = [s for s in args.presets.split(",") if s]
    gpu = device.type == "cuda"
    reps = args.reps or (20 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    peak = args.peak_gbps or default_peak(device)

    print(f"# device {base_fields(device, dtype)['device']}, {dtype}, batch {args.batch}, sizes {sizes}, "
          f"{reps} timed runs after {warmup} warm-up; peak {peak or 'unknown'} GB/s")
    if device.type == "cpu":
        print(f"# note: Triton rows are skipped on CPU: {TRITON_CPU_REASON}.")

    cases: list[Case] = []
    if "wavelet" in ops:
        cases += wavelet_cases(device, dtype, args.batch, sizes, presets)
    if any(o.startswith("fwm") for o in ops):
        cases += fwm_cases(device, dtype, args.batch, sizes, ops)
    if "csm" in ops:
        cases += csm_cases(device, dtype, args.batch, sizes)

    rows, csv_rows = [], []
    for case in cases:
        eager_ms = None
        for provider, fn in case.providers.items():
            if isinstance(fn, str):
                rows.append([case.op, case.shape, provider, "-", "-", "-", "-", "-", f"skipped: {fn}"])
                continue
            grad_mode = torch.enable_grad() if case.op == "fwm_train" else torch.no_grad()
            with grad_mode:
                timing = bench(fn, device, warmup=warmup, reps=reps)
            ms = timing.median * 1e3
            gbps = case.bytes_moved / timing.median / 1e9
            if provider == "eager":
                eager_ms = ms
            speedup = eager_ms / ms if eager_ms else math.nan
            roofline = f"{100 * gbps / peak:.1f}" if peak else "-"
            rows.append([case.op, case.shape, provider, ms, timing.p20 * 1e3, timing.p80 * 1e3, gbps, roofline,
                         f"{speedup:.2f}x"])
            csv_rows.append({**base_fields(device, dtype), "benchmark": "ops", "op": case.op, "shape": case.shape,
                             "provider": provider, "median_ms": ms, "p20_ms": timing.p20 * 1e3,
                             "p80_ms": timing.p80 * 1e3, "gb_per_s": gbps, "peak_gbps": peak or "",
                             "speedup_vs_eager": speedup})
            print(f"# {case.op:11} {case.shape:32} {provider:24} {ms:9.3f} ms", flush=True)
    print()
    print(markdown_table(["op", "shape", "provider", "median ms", "p20 ms", "p80 ms", "GB/s", "% peak",
                          "speedup vs eager"], rows))
    if args.csv and csv_rows:
        append_csv(args.csv, csv_rows)
        print(f"\n# appended {len(csv_rows)} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
