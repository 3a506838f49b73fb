"""CSM style-modulated convolution on the CPU: the C++ extension against eager PyTorch.

    python benchmarks/csm_cpu.py                       # DDIF shapes, fp32, 1 and 2 threads
    python benchmarks/csm_cpu.py --threads 2 --dtype bf16 --reps 30

Eager is ``style_modulated_conv_ref`` (oneDNN 1x1 conv, then ``1 + scale``, multiply, add; autograd
for the backward); fused is ``style_modulated_conv`` (what ``StyleModulatedConv(fused=True)`` runs).
"fwd" is the sampling case (no grad); "fwd+bwd" is a training step's share (every input requires
grad). Eager and fused runs alternate so that a shared, busy machine slows both alike; the speedup is
the median of the per-pair ratios. GB/s counts the bytes a single pass must move (fwd only).
``--clock cpu`` times process CPU time instead of wall time: on a machine shared with other busy
processes it leaves out the time this process waits for a core (with one thread it is the op's own
cost; with more it also counts OpenMP threads spinning at barriers).
Prints a Markdown table and appends rows to a CSV.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from benchmarks.common import Timing, append_csv, base_fields, markdown_table, parse_dtype
from ddif.kernels import style_conv

# (batch, C_in, C_out, H, W): DDIF's CSM layers at the resolutions they run at for a 256x256 image,
# a 128 x 128 -> 128 layer at 64^2, and a small batch of training crops.
DEFAULT_SHAPES = ["1x32x32x256x256", "1x32x64x256x256", "1x64x64x128x128", "1x64x128x64x64",
                  "1x128x128x32x32", "1x128x128x64x64", "4x32x32x64x64"]


@dataclass(frozen=True)
class BenchConfig:
    shapes: tuple[tuple[int, int, int, int, int], ...]
    threads: tuple[int, ...]
    dtype: torch.dtype
    reps: int
    warmup: int
    modes: tuple[str, ...]
    csv: str
    clock: str


def parse_args(argv=None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="BxCinxCoutxHxW")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--dtype", default="fp32", help="fp32 or bf16")
    p.add_argument("--reps", type=int, default=15, help="timed eager/fused pairs per case")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", default="fwd,fwd+bwd")
    p.add_argument("--csv", default="benchmarks/results/csm_cpu.csv")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = p.parse_args(argv)
    shapes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in a.shapes)
    if any(len(s) != 5 for s in shapes):
        p.error("--shapes take the form BxCinxCoutxHxW")
    return BenchConfig(shapes=shapes, threads=tuple(int(t) for t in a.threads.split(",")),
                       dtype=parse_dtype(a.dtype), reps=a.reps, warmup=a.warmup,
                       modes=tuple(a.modes.split(",")), csv=a.csv, clock=a.clock)


def make_case(shape, dtype, requires_grad: bool):
    b, c_in, c_out, h, w = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c_in, h, w, generator=gen).to(dtype)
    weight = (torch.randn(c_out, c_in, 1, 1, generator=gen) * c_in ** -0.5).to(dtype)
    bias = torch.randn(c_out, generator=gen).to(dtype) * 0.1
    scale = torch.randn(b, c_out, h, w, generator=gen).to(dtype) * 0.5
    shift = torch.randn(b, c_out, h, w, generator=gen).to(dtype) * 0.5
    inputs = [x, weight, bias, scale, shift]
    if requires_grad:
        inputs = [t.requires_grad_(True) for t in inputs]
    grad_out = torch.randn(b, c_out, h, w, generator=gen).to(dtype)
    return inputs, grad_out


def runner(fn, inputs, grad_out, mode: str):
    if mode == "fwd":
        def run():
            with torch.no_grad():
                fn(*inputs)
    else:
        def run():
            y = fn(*inputs)
            torch.autograd.grad(y, inputs, grad_out)
    return run


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(run, clock) -> float:
    t0 = clock()
    run()
    return clock() - t0


def main(argv=None) -> None:
    cfg = parse_args(argv)
    if not style_conv.fused_available("cpu"):
        raise SystemExit(f"the CSM extension is not built: {style_conv._status()['csm_cpu']}")
    from ddif.kernels import _csm_ext

    rows, table = [], []
    for threads in cfg.threads:
        torch.set_num_threads(threads)
        for shape in cfg.shapes:
            for mode in cfg.modes:
                inputs, grad_out = make_case(shape, cfg.dtype, requires_grad=(mode != "fwd"))
                eager = runner(style_conv.style_modulated_conv_ref, inputs, grad_out, mode)
                fused = runner(style_conv.style_modulated_conv, inputs, grad_out, mode)
                for _ in range(cfg.warmup):
                    eager()
                    fused()
                t_eager, t_fused, ratios = [], [], []
                for _ in range(cfg.reps):
                    te, tf = timed(eager, CLOCKS[cfg.clock]), timed(fused, CLOCKS[cfg.clock])
                    t_eager.append(te)
                    t_fused.append(tf)
                    ratios.append(te / tf)
                te, tf = Timing(t_eager), Timing(t_fused)
                b, c_in, c_out, h, w = shape
                esize = torch.finfo(cfg.dtype).bits // 8
                fwd_bytes = b * h * w * (c_in + 3 * c_out) * esize
                speedup = statistics.median(ratios)
                shape_s = f"{b}x{c_in}->{c_out}x{h}x{w}"
                gbs = fwd_bytes / tf.median / 1e9 if mode == "fwd" else float("nan")
                table.append([threads, shape_s, mode, te.median * 1e3, te.p20 * 1e3, te.p80 * 1e3,
                              tf.median * 1e3, tf.p20 * 1e3, tf.p80 * 1e3,
                              f"{gbs:.1f}" if mode == "fwd" else "-", f"{speedup:.2f}x"])
                rows.append({**base_fields("cpu", cfg.dtype), "benchmark": "csm_cpu", "threads": threads,
                             "shape": shape_s, "mode": mode, "eager_ms": te.median * 1e3,
                             "eager_p20_ms": te.p20 * 1e3, "eager_p80_ms": te.p80 * 1e3,
                             "fused_ms": tf.median * 1e3, "fused_p20_ms": tf.p20 * 1e3,
                             "fused_p80_ms": tf.p80 * 1e3, "fused_gbs": gbs, "speedup": speedup, "clock": cfg.clock,
                             "cpu_kernels": _csm_ext.cpu_kernel_isa()})
                print(f"  {threads} thr {shape_s:>22} {mode:8} eager {te.median * 1e3:8.3f} ms  "
                      f"fused {tf.median * 1e3:8.3f} ms  x{speedup:.2f}", flush=True)
    append_csv(cfg.csv, rows)
    print()
    print(f"CSM style-modulated conv, {cfg.clock} clock, {base_fields('cpu', cfg.dtype)['device']}, {cfg.dtype}, "
          f"CPU kernels: {_csm_ext.cpu_kernel_isa()}, torch {torch.__version__}")
    print(markdown_table(["threads", "shape", "mode", "eager ms", "p20", "p80", "fused ms", "p20", "p80",
                          "fused GB/s", "speedup"], table))


if __name__ == "__main__":
    main()
