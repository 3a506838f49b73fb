"""Triton device helpers shared by the kernel modules (imports Triton: load lazily)."""

from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
_INTERPRETED = tl.constexpr(INTERPRETED)


@triton.jit
def cast_to(x, ty: tl.constexpr):
    """``x.to(ty)`` rounding to nearest even, as the GPU compiler does. Triton's CPU interpreter
    (3.9) narrows fp32 to bfloat16 by truncation, and its "rtne" mode drops the carry into the
    exponent; there the rounding is done on the bits instead, so interpreted and compiled kernels
    give the same bfloat16 results."""
    if x.dtype == ty:
        return x
    else:
        if _INTERPRETED:
            if ty == tl.bfloat16:
                bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
                bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
                return bits.to(tl.float32, bitcast=True).to(ty)
            else:
                return x.to(ty)
        else:
            return x.to(ty)
