"""Compile every Triton kernel for a GPU architecture without a GPU, and report its resources.

The CPU interpreter checks the kernels' arithmetic but not that they compile: it accepts things
the GPU compiler rejects (layouts, shapes for ``tl.dot``, types across branches). This runs the
real compiler (Triton -> TTIR -> TTGIR -> LLVM -> PTX -> cubin via the ptxas bundled with Triton)
for the given target and prints registers, stack (register spills land there) and shared memory per kernel,
so GPU code cannot rot unseen on a CPU-only CI.

    python -m ddif.kernels.compile_check [--arch 90] [--dtypes fp16,bf16,fp32] [--quick]

Must run with ``TRITON_INTERPRET`` unset (it re-executes itself without it when needed).
Compilation uses no driver; the launch-time specialisation of unit strides is reproduced by
passing the innermost strides as the constant 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

_DTYPES = {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}
_FLOAT_ARGS = {"scale", "scale_x", "scale_y"}
_FP32_POINTERS = {"part_ptr", "lse_ptr", "rowdot_ptr", "colsum_ptr"}  # fp32 statistics and partial sums
# innermost (unit) strides: Triton specialises an int argument equal to 1 into a constant at launch
_UNIT_STRIDES = {"slx", "sgx", "sxx", "skx", "svx", "sqx"}


@dataclass
class Case:
    module: str
    kernel: str
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 2
    label: str = ""
    extra: dict = field(default_factory=dict)


def cases(quick: bool = False) -> list[Case]:
    haar = "ddif.kernels._haar_triton"
    fwm = "ddif.kernels._fwm_triton"
    tile = {"BLOCK_S": 1, "BLOCK_Y": 4, "BLOCK_X": 64}  # 2 outputs per thread at 4 warps
    bwd_tile = {"BLOCK_S": 1, "BLOCK_Y": 2, "BLOCK_X": 64}  # 1 per thread
    d32 = {"G": 1, "BLOCK_D": 32}
    d8 = {"G": 2, "BLOCK_D": 16}  # two heads of 8 channels per tile
    out = [
        Case(haar, "_wavelet_condition_kernel", {**tile, "RESIZE": True}, label="resize"),
        Case(
            haar,
            "_wavelet_condition_bwd_kernel",
            {**bwd_tile, "RESIZE": True, "TAPS_Y": 4, "TAPS_X": 4},
            label="resize, even",
        ),
        Case(fwm, "_lse_rows_kernel", {"BLOCK_W": 128, "BLOCK_R": 16}, label="W-chunk 128"),
        Case(fwm, "_lse_cols_kernel", {"BLOCK_X": 64, "BLOCK_R": 16}, label="64 columns"),
        Case(fwm, "_context_fwd_kernel", {**d32, "BLOCK_N": 128}, num_warps=8, num_stages=3, label="d32"),
        Case(fwm, "_context_rowdot_kernel", {**d32, "BLOCK_W": 64}, num_warps=8, label="d32"),
        Case(fwm, "_context_bwd_kernel", {**d32, "BLOCK_N": 128}, num_warps=8, label="d32"),
        Case(fwm, "_apply_fwd_kernel", {**d32, "BLOCK_N": 128}, num_warps=8, label="d32"),
        Case(fwm, "_apply_colsum_kernel", {**d32, "COLS": 16, "ROWS": 2}, num_warps=8, num_stages=3, label="d32"),
        Case(fwm, "_apply_bwd_kernel", {**d32, "BLOCK_N": 128}, num_warps=8, label="d32"),
    ]
    if quick:
        return out
    return out + [
        Case(haar, "_wavelet_condition_kernel", {**tile, "RESIZE": False}, label="half size"),
        Case(
            haar,
            "_wavelet_condition_bwd_kernel",
            {**bwd_tile, "RESIZE": True, "TAPS_Y": 6, "TAPS_X": 6},
            label="resize, odd",
        ),
        Case(
            haar,
            "_wavelet_condition_bwd_kernel",
            {**bwd_tile, "RESIZE": False, "TAPS_Y": 4, "TAPS_X": 4},
            label="half size",
        ),
        Case(haar, "_analysis_kernel", {"BLOCK_S": 1, "BLOCK_Y": 4, "BLOCK_X": 128}, num_warps=8),
        Case(haar, "_synthesis_kernel", {"BLOCK_S": 1, "BLOCK_Y": 4, "BLOCK_X": 128}, num_warps=8),
        Case(fwm, "_context_fwd_kernel", {**d8, "BLOCK_N": 256}, num_warps=8, num_stages=3, label="d8 x2 heads"),
        Case(fwm, "_context_bwd_kernel", {**d8, "BLOCK_N": 256}, num_warps=8, label="d8 x2 heads"),
        Case(fwm, "_apply_fwd_kernel", {**d8, "BLOCK_N": 256}, num_warps=8, label="d8 x2 heads"),
        Case(fwm, "_apply_bwd_kernel", {**d8, "BLOCK_N": 256}, num_warps=8, label="d8 x2 heads"),
        Case(fwm, "_apply_fwd_kernel", {"G": 1, "BLOCK_D": 64, "BLOCK_N": 64}, num_warps=8, label="d64"),
    ]


def _jit_function(obj):
    while hasattr(obj, "fn") and not hasattr(obj, "params"):
        obj = obj.fn
    return obj


def compile_case(case: Case, dtype: str, arch: int) -> dict:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = importlib.import_module(case.module)
    fn = _jit_function(getattr(module, case.kernel))
    constexprs = dict(case.constexprs)
    if "IEEE" in fn.arg_names and "IEEE" not in constexprs:
        constexprs["IEEE"] = dtype == "fp32"
    signature = {}
    for param in fn.params:
        name = param.name
        if param.is_constexpr or name in constexprs:
            signature[name] = "constexpr"
        elif name in _UNIT_STRIDES:
            signature[name] = "constexpr"
            constexprs[name] = 1
        elif name.endswith("_ptr"):
            signature[name] = "*fp32" if name in _FP32_POINTERS else f"*{dtype}"
        elif name in _FLOAT_ARGS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", arch, 32), options={"num_warps": case.num_warps, "num_stages": case.num_stages}
    )
    usage = _resource_usage(compiled.asm["cubin"])
    return {
        "kernel": case.kernel,
        "case": case.label,
        "dtype": dtype,
        "warps": case.num_warps,
        "shared_bytes": compiled.metadata.shared,
        **usage,
    }


def _resource_usage(cubin: bytes) -> dict:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, timeout=60).stdout
    finally:
        os.unlink(f.name)
    usage = {}
    for token in out.split():
        if ":" in token:
            key, _, value = token.partition(":")
            if key in ("REG", "STACK", "LOCAL") and value.isdigit():
                usage[key.lower()] = int(value)
    return usage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (80 = A100, 90 = H100)")
    parser.add_argument("--dtypes", default="fp16,bf16,fp32")
    parser.add_argument("--quick", action="store_true", help="the main configuration of each kernel only")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "").strip() not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "ddif.kernels.compile_check", *(argv or sys.argv[1:])], env=env)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    failures = 0
    print(f"{'kernel':32} {'case':14} {'dtype':5} {'warps':>5} {'regs':>5} {'stack':>6} {'smem':>7}")
    for case in cases(args.quick):
        for dtype in args.dtypes.split(","):
            try:
                r = compile_case(case, _DTYPES[dtype], args.arch)
            except Exception as exc:  # noqa: BLE001 - report every failure, then fail
                failures += 1
                print(f"{case.kernel:32} {case.label:14} {dtype:5} FAILED: {type(exc).__name__}: {exc}")
                continue
            print(
                f"{r['kernel']:32} {r['case']:14} {r['dtype']:5} {r['warps']:>5} {r.get('reg', '?'):>5} "
                f"{r.get('stack', '?'):>6} {r['shared_bytes']:>7}"
            )
    print(f"sm_{args.arch}: {'all kernels compiled' if not failures else f'{failures} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
