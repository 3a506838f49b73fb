"""Triton kernels and launchers for the FWM linear attention of DDIF (Cao et al., 2024).

Imported lazily by :mod:`ddif.kernels.fwm`. q, k, v are (B, dim, H, W) tensors whose H x W planes are
contiguous (the launchers copy other layouts; batch and channel strides are free, so the k / v
halves of a ``chunk`` are used in place), ``heads`` groups of d = dim / heads channels, context
(B, heads, d, d).

- context = sum over positions of softmax_W(k) v^T (per head);
- apply   = context^T softmax_H(q) / sqrt(d).

Neither softmax is ever written to memory. A statistics kernel first reduces each row of k (over
W) or each column of q (over H) to its log-sum-exp (1/W or 1/H of the input, fp32; an online
max / sum, so any length works), and the main kernels normalise on the fly:
``softmax = exp(x - lse)``, fused with the ``tl.dot`` (tensor cores for fp16 / bf16, IEEE fp32
for fp32 inputs as eager matmul does by default). Accumulation is always fp32. The log-sum-exps
are returned as a second output and saved for the backward pass.

Main kernels work on 2-D tiles (BLOCK_D channels x BLOCK_N consecutive positions): coalesced,
vectorisable loads, no reshapes. When d < 16 (the smallest ``tl.dot``), one tile holds several
heads (BLOCK_D // d) and the d x d matrices are handled block-diagonally, so no lane is padding.
The context's sum over positions is split over programs into fp32 partials that the launcher
sums (deterministic, no atomics); so is the context gradient in apply's backward.

Backward passes:
- context: dP = gC V, dK = P (dP - rowdot), dV = gC^T P, where rowdot = sum_x P dP per row comes
  from a per-row kernel (``_context_rowdot_kernel``);
- apply: dP = s ctx gO, dq = P (dP - colsum), d ctx = s P gO^T, where colsum = sum_y P dP per
  column and the context gradient come from a per-column-strip kernel (``_apply_colsum_kernel``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ddif.kernels._triton_common import INTERPRETED, cast_to
from ddif.kernels._triton_utils import autotune, cdiv, next_pow2, target_programs

_NEG = tl.constexpr(-3.0e38)  # "minus infinity" that keeps exp(NEG - NEG) finite for masked lanes


# Register budget on a GPU, in tile values per thread: kernels.compile_check on sm_90 shows the
# dot-carrying kernels free of spills at <= 16 per thread with 8 warps and <= 8 with 4 warps
# (e.g. the context kernel: 16/thread at 8 warps = 192 registers, 32/thread spills).
def _fits(values: int, num_warps: int) -> bool:
    return values // (32 * num_warps) <= (16 if num_warps >= 8 else 8)


# The interpreter pays per operation, not per element: big tiles, few programs.
_INTERP_MAX_TILE = 1 << 16


def _tile_configs():
    return [
        triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s) for n in (64, 128, 256) for w in (4, 8) for s in (2, 3)
    ]


def _prune(configs, named_args, **kwargs):
    block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D"))
    kept = [c for c in configs if _fits(block_d * c.kwargs["BLOCK_N"], c.num_warps)]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_N"] / c.num_warps)]


_LSE_CONFIGS = [triton.Config({"BLOCK_R": r}, num_warps=w) for r in (8, 16, 32) for w in (4, 8)]
# the column-strip kernel carries two dots and a running sum: it spills above 8 values per thread
_STRIP_CONFIGS = [triton.Config({"ROWS": r}, num_warps=8, num_stages=s) for r in (2, 4, 8) for s in (2, 3)]


def _prune_strip(configs, named_args, **kwargs):
    block_d = kwargs.get("BLOCK_D", named_args.get("BLOCK_D"))
    cols = kwargs.get("COLS", named_args.get("COLS"))
    kept = [c for c in configs if block_d * cols * c.kwargs["ROWS"] // (32 * c.num_warps) <= 8]
    return kept or [min(configs, key=lambda c: c.kwargs["ROWS"])]


def _autotune(key, configs=None, prune=_prune):
    """Autotune on a GPU; nothing to tune in the interpreter (the launchers pass the tiles)."""
    if INTERPRETED:
        return lambda fn: fn
    return autotune(configs or _tile_configs(), key, prune_configs_by={"early_config_prune": prune} if prune else None)


# ----------------------------------------------------------------------------------- helpers
@triton.jit
def _mm(a, b, acc, IEEE: tl.constexpr):
    """acc + a @ b with fp32 accumulation; IEEE: exact fp32 products of the (already rounded)
    operands instead of the tensor-core path."""
    if IEEE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _head_group(pid, heads, d, G: tl.constexpr, BLOCK_D: tl.constexpr):
    """Image index, first channel, channel offsets and validity of a tile of G heads."""
    n_groups = tl.cdiv(heads, G)
    b = pid // n_groups
    c0 = (pid % n_groups) * G * d
    offs_c = tl.arange(0, BLOCK_D)
    mask_c = (offs_c < G * d) & (c0 + offs_c < heads * d)
    return b, c0, offs_c, mask_c


@triton.jit
def _block_diag(ptr, b, c0, offs_c, mask_c, d, sb, sh, si, sj, TRANSPOSE: tl.constexpr):
    """Load the (B, heads, d, d) matrices of a tile's heads as one block-diagonal BLOCK_D x BLOCK_D
    fp32 tile (transposed within each block if TRANSPOSE); zeros off the diagonal blocks."""
    row = offs_c[:, None]
    col = offs_c[None, :]
    ok = mask_c[:, None] & mask_c[None, :] & ((row // d) == (col // d))
    head = (c0 + row) // d
    if TRANSPOSE:
        off = head * sh + (col % d) * si + (row % d) * sj
    else:
        off = head * sh + (row % d) * si + (col % d) * sj
    return tl.load(ptr + b.to(tl.int64) * sb + off, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _store_block_diag(ptr, value, b, c0, offs_c, mask_c, d, heads, slot, n_slots):
    """Store the diagonal blocks of a BLOCK_D x BLOCK_D tile into a contiguous
    (B, heads, n_slots, d, d) fp32 buffer at ``slot``."""
    row = offs_c[:, None]
    col = offs_c[None, :]
    ok = mask_c[:, None] & mask_c[None, :] & ((row // d) == (col // d))
    head = (c0 + row) // d
    off = ((b * heads + head) * n_slots + slot).to(tl.int64) * d * d + (row % d) * d + (col % d)
    tl.store(ptr + off, value, mask=ok)


# ----------------------------------------------------------------------------------- statistics
@_autotune(key=["H", "W"], configs=_LSE_CONFIGS, prune=None)
@triton.jit
def _lse_rows_kernel(x_ptr, lse_ptr, sb, sc, C, H, W, n_rows, BLOCK_W: tl.constexpr, BLOCK_R: tl.constexpr):
    """log-sum-exp over W of BLOCK_R rows of the flattened (B, C, H) row index: lse (B, C, H) fp32."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = rows < n_rows
    bc = rows // H
    row_off = (bc // C).to(tl.int64) * sb + (bc % C).to(tl.int64) * sc + (rows % H) * W
    m = tl.full((BLOCK_R, BLOCK_W), _NEG, dtype=tl.float32)
    acc = tl.zeros((BLOCK_R, BLOCK_W), dtype=tl.float32)
    for x0 in range(0, W, BLOCK_W):  # element-wise running (max, sum); one reduction at the end
        cols = x0 + tl.arange(0, BLOCK_W)
        mask = mask_r[:, None] & (cols < W)[None, :]
        t = tl.load(x_ptr + row_off[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        t = tl.where(mask, t, _NEG)
        m_new = tl.maximum(m, t)
        acc = acc * tl.exp(m - m_new) + tl.exp(t - m_new)
        m = m_new
    row_max = tl.max(m, axis=1)
    row_sum = tl.sum(acc * tl.exp(m - row_max[:, None]), axis=1)
    tl.store(lse_ptr + rows, row_max + tl.log(row_sum), mask=mask_r)


@_autotune(key=["H", "W"], configs=_LSE_CONFIGS, prune=None)
@triton.jit
def _lse_cols_kernel(x_ptr, lse_ptr, sb, sc, C, H, W, n_cols, BLOCK_X: tl.constexpr, BLOCK_R: tl.constexpr):
    """log-sum-exp over H of BLOCK_X columns of the flattened (B, C, W) column index (consecutive
    columns of a channel are contiguous in memory): lse (B, C, W) fp32."""
    cols = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)
    mask_x = cols < n_cols
    bc = cols // W
    col_off = (bc // C).to(tl.int64) * sb + (bc % C).to(tl.int64) * sc + cols % W
    m = tl.full((BLOCK_R, BLOCK_X), _NEG, dtype=tl.float32)
    acc = tl.zeros((BLOCK_R, BLOCK_X), dtype=tl.float32)
    for y0 in range(0, H, BLOCK_R):
        rows = y0 + tl.arange(0, BLOCK_R)
        mask = (rows < H)[:, None] & mask_x[None, :]
        t = tl.load(x_ptr + col_off[None, :] + rows[:, None] * W, mask=mask, other=0.0).to(tl.float32)
        t = tl.where(mask, t, _NEG)
        m_new = tl.maximum(m, t)
        acc = acc * tl.exp(m - m_new) + tl.exp(t - m_new)
        m = m_new
    col_max = tl.max(m, axis=0)
    col_sum = tl.sum(acc * tl.exp(m - col_max[None, :]), axis=0)
    tl.store(lse_ptr + cols, col_max + tl.log(col_sum), mask=mask_x)


# ----------------------------------------------------------------------------------- context
@_autotune(key=["d", "H", "W"])
@triton.jit
def _context_fwd_kernel(
    k_ptr,
    v_ptr,
    lse_ptr,
    part_ptr,
    skb,
    skc,
    svb,
    svc,
    heads,
    d,
    H,
    W,
    per_split,
    n_splits,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Partial context over positions [s * per_split, (s + 1) * per_split) for a tile of heads:
    sum_n exp(k - lse_row) v^T."""
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    s = tl.program_id(1)
    HW = H * W
    k_base = k_ptr + b.to(tl.int64) * skb + c0.to(tl.int64) * skc
    v_base = v_ptr + b.to(tl.int64) * svb + c0.to(tl.int64) * svc
    lse_base = lse_ptr + (b * heads * d + c0).to(tl.int64) * H
    DT = v_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    n_begin = s * per_split
    n_end = tl.minimum(n_begin + per_split, HW)
    for n0 in range(n_begin, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask = mask_c[:, None] & (offs_n < n_end)[None, :]
        kt = tl.load(k_base + offs_c[:, None] * skc + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
        lse = tl.load(lse_base + offs_c[:, None] * H + (offs_n // W)[None, :], mask=mask, other=0.0)
        p = tl.exp(tl.where(mask, kt - lse, _NEG))
        vt = tl.load(v_base + offs_c[:, None] * svc + offs_n[None, :], mask=mask, other=0.0)
        acc = _mm(cast_to(p, DT), tl.trans(vt), acc, IEEE)
    _store_block_diag(part_ptr, acc, b, c0, offs_c, mask_c, d, heads, s, n_splits)


@triton.jit
def _context_rowdot_kernel(
    k_ptr,
    v_ptr,
    lse_ptr,
    gc_ptr,
    rowdot_ptr,
    skb,
    skc,
    svb,
    svc,
    sgb,
    sgh,
    sgi,
    sgj,
    heads,
    d,
    H,
    W,
    rows_per_prog,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_W: tl.constexpr,
    IEEE: tl.constexpr,
):
    """rowdot = sum over x of P dP for a band of rows, with P = exp(k - lse_row), dP = gC V."""
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    k_base = k_ptr + b.to(tl.int64) * skb + c0.to(tl.int64) * skc
    v_base = v_ptr + b.to(tl.int64) * svb + c0.to(tl.int64) * svc
    row_base = (b * heads * d + c0).to(tl.int64) * H
    DT = v_ptr.dtype.element_ty
    gc = cast_to(_block_diag(gc_ptr, b, c0, offs_c, mask_c, d, sgb, sgh, sgi, sgj, False), DT)
    y_begin = tl.program_id(1) * rows_per_prog
    for y in range(y_begin, tl.minimum(y_begin + rows_per_prog, H)):
        lse = tl.load(lse_ptr + row_base + offs_c * H + y, mask=mask_c, other=0.0)
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for x0 in range(0, W, BLOCK_W):
            offs_x = x0 + tl.arange(0, BLOCK_W)
            mask = mask_c[:, None] & (offs_x < W)[None, :]
            pos = y * W + offs_x
            kt = tl.load(k_base + offs_c[:, None] * skc + pos[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(tl.where(mask, kt - lse[:, None], _NEG))
            vt = tl.load(v_base + offs_c[:, None] * svc + pos[None, :], mask=mask, other=0.0)
            dp = _mm(gc, vt, tl.zeros((BLOCK_D, BLOCK_W), dtype=tl.float32), IEEE)
            acc += tl.sum(p * dp, axis=1)
        tl.store(rowdot_ptr + row_base + offs_c * H + y, acc, mask=mask_c)


@_autotune(key=["d", "H", "W"])
@triton.jit
def _context_bwd_kernel(
    k_ptr,
    v_ptr,
    lse_ptr,
    rowdot_ptr,
    gc_ptr,
    gk_ptr,
    gv_ptr,
    skb,
    skc,
    svb,
    svc,
    sgb,
    sgh,
    sgi,
    sgj,
    heads,
    d,
    H,
    W,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dK = P (gC V - rowdot), dV = gC^T P on one tile of positions; dK, dV contiguous."""
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    HW = H * W
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = mask_c[:, None] & (offs_n < HW)[None, :]
    k_base = k_ptr + b.to(tl.int64) * skb + c0.to(tl.int64) * skc
    v_base = v_ptr + b.to(tl.int64) * svb + c0.to(tl.int64) * svc
    row_base = (b * heads * d + c0).to(tl.int64) * H
    out = (b * heads * d + c0).to(tl.int64) * HW + offs_c[:, None] * HW + offs_n[None, :]
    DT = v_ptr.dtype.element_ty
    gc = _block_diag(gc_ptr, b, c0, offs_c, mask_c, d, sgb, sgh, sgi, sgj, False)
    gc_t = _block_diag(gc_ptr, b, c0, offs_c, mask_c, d, sgb, sgh, sgi, sgj, True)
    stat = offs_c[:, None] * H + (offs_n // W)[None, :]
    lse = tl.load(lse_ptr + row_base + stat, mask=mask, other=0.0)
    rowdot = tl.load(rowdot_ptr + row_base + stat, mask=mask, other=0.0)
    kt = tl.load(k_base + offs_c[:, None] * skc + offs_n[None, :], mask=mask, other=0.0).to(tl.float32)
    p = tl.exp(tl.where(mask, kt - lse, _NEG))
    vt = tl.load(v_base + offs_c[:, None] * svc + offs_n[None, :], mask=mask, other=0.0)
    zero = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dp = _mm(cast_to(gc, DT), vt, zero, IEEE)
    tl.store(gk_ptr + out, cast_to(p * (dp - rowdot), gk_ptr.dtype.element_ty), mask=mask)
    gv = _mm(cast_to(gc_t, DT), cast_to(p, DT), zero, IEEE)
    tl.store(gv_ptr + out, cast_to(gv, gv_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------- apply
@_autotune(key=["d", "H", "W"])
@triton.jit
def _apply_fwd_kernel(
    q_ptr,
    lse_ptr,
    ctx_ptr,
    out_ptr,
    sqb,
    sqc,
    scb,
    sch,
    sci,
    scj,
    heads,
    d,
    H,
    W,
    scale,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """out = ctx^T exp(q - lse_col) * scale on one tile of positions; ``out`` contiguous."""
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    HW = H * W
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = mask_c[:, None] & (offs_n < HW)[None, :]
    DT = q_ptr.dtype.element_ty
    ctx_t = cast_to(_block_diag(ctx_ptr, b, c0, offs_c, mask_c, d, scb, sch, sci, scj, True), DT)
    qt = tl.load(
        q_ptr + b.to(tl.int64) * sqb + c0.to(tl.int64) * sqc + offs_c[:, None] * sqc + offs_n[None, :],
        mask=mask,
        other=0.0,
    ).to(tl.float32)
    lse = tl.load(
        lse_ptr + (b * heads * d + c0).to(tl.int64) * W + offs_c[:, None] * W + (offs_n % W)[None, :],
        mask=mask,
        other=0.0,
    )
    p = tl.exp(tl.where(mask, qt - lse, _NEG)) * scale
    o = _mm(ctx_t, cast_to(p, DT), tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32), IEEE)
    out = (b * heads * d + c0).to(tl.int64) * HW + offs_c[:, None] * HW + offs_n[None, :]
    tl.store(out_ptr + out, cast_to(o, out_ptr.dtype.element_ty), mask=mask)


@_autotune(key=["d", "H", "W"], configs=_STRIP_CONFIGS, prune=_prune_strip)
@triton.jit
def _apply_colsum_kernel(
    q_ptr,
    lse_ptr,
    ctx_ptr,
    go_ptr,
    colsum_ptr,
    part_ptr,
    sqb,
    sqc,
    scb,
    sch,
    sci,
    scj,
    sgb,
    sgc,
    heads,
    d,
    H,
    W,
    n_strips,
    scale,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    COLS: tl.constexpr,
    IEEE: tl.constexpr,
    ROWS: tl.constexpr,
):
    """For a strip of COLS columns: colsum = sum over y of P dP (dP = scale ctx gO) and the
    strip's share of d ctx = scale P gO^T. Tiles are BLOCK_D x (ROWS * COLS) positions."""
    NT: tl.constexpr = ROWS * COLS
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    strip = tl.program_id(1)
    q_base = q_ptr + b.to(tl.int64) * sqb + c0.to(tl.int64) * sqc
    g_base = go_ptr + b.to(tl.int64) * sgb + c0.to(tl.int64) * sgc
    col_base = (b * heads * d + c0).to(tl.int64) * W
    DT = q_ptr.dtype.element_ty
    ctx = cast_to(_block_diag(ctx_ptr, b, c0, offs_c, mask_c, d, scb, sch, sci, scj, False), DT)
    t = tl.arange(0, NT)
    x = strip * COLS + t % COLS
    mask_x = x < W
    lse = tl.load(
        lse_ptr + col_base + offs_c[:, None] * W + x[None, :], mask=mask_c[:, None] & mask_x[None, :], other=0.0
    )
    colsum = tl.zeros((BLOCK_D, NT), dtype=tl.float32)  # summed over the ROWS lanes at the end
    gctx = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for y0 in range(0, H, ROWS):
        y = y0 + t // COLS
        mask = mask_c[:, None] & (mask_x & (y < H))[None, :]
        pos = (y * W + x)[None, :]
        qt = tl.load(q_base + offs_c[:, None] * sqc + pos, mask=mask, other=0.0).to(tl.float32)
        p = tl.exp(tl.where(mask, qt - lse, _NEG))
        go = cast_to(tl.load(g_base + offs_c[:, None] * sgc + pos, mask=mask, other=0.0), DT)
        dp = _mm(ctx, go, tl.zeros((BLOCK_D, NT), dtype=tl.float32), IEEE) * scale
        colsum += p * dp
        gctx = _mm(cast_to(p, DT), tl.trans(go), gctx, IEEE)
    colsum_x = tl.sum(tl.reshape(colsum, (BLOCK_D, ROWS, COLS)), axis=1)
    xs = strip * COLS + tl.arange(0, COLS)
    tl.store(
        colsum_ptr + col_base + offs_c[:, None] * W + xs[None, :], colsum_x, mask=mask_c[:, None] & (xs < W)[None, :]
    )
    _store_block_diag(part_ptr, gctx * scale, b, c0, offs_c, mask_c, d, heads, strip, n_strips)


@_autotune(key=["d", "H", "W"])
@triton.jit
def _apply_bwd_kernel(
    q_ptr,
    lse_ptr,
    colsum_ptr,
    ctx_ptr,
    go_ptr,
    gq_ptr,
    sqb,
    sqc,
    scb,
    sch,
    sci,
    scj,
    sgb,
    sgc,
    heads,
    d,
    H,
    W,
    scale,
    G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dq = P (scale ctx gO - colsum) on one tile of positions; ``gq`` contiguous."""
    b, c0, offs_c, mask_c = _head_group(tl.program_id(0), heads, d, G, BLOCK_D)
    HW = H * W
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = mask_c[:, None] & (offs_n < HW)[None, :]
    DT = q_ptr.dtype.element_ty
    ctx = cast_to(_block_diag(ctx_ptr, b, c0, offs_c, mask_c, d, scb, sch, sci, scj, False), DT)
    stat = (b * heads * d + c0).to(tl.int64) * W + offs_c[:, None] * W + (offs_n % W)[None, :]
    lse = tl.load(lse_ptr + stat, mask=mask, other=0.0)
    colsum = tl.load(colsum_ptr + stat, mask=mask, other=0.0)
    qt = tl.load(
        q_ptr + b.to(tl.int64) * sqb + c0.to(tl.int64) * sqc + offs_c[:, None] * sqc + offs_n[None, :],
        mask=mask,
        other=0.0,
    ).to(tl.float32)
    p = tl.exp(tl.where(mask, qt - lse, _NEG))
    go = cast_to(
        tl.load(
            go_ptr + b.to(tl.int64) * sgb + c0.to(tl.int64) * sgc + offs_c[:, None] * sgc + offs_n[None, :],
            mask=mask,
            other=0.0,
        ),
        DT,
    )
    dp = _mm(ctx, go, tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32), IEEE) * scale
    out = (b * heads * d + c0).to(tl.int64) * HW + offs_c[:, None] * HW + offs_n[None, :]
    tl.store(gq_ptr + out, cast_to(p * (dp - colsum), gq_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------- launchers
def _plane_contiguous(x: torch.Tensor) -> torch.Tensor:
    """Kernels index H x W planes as contiguous runs; batch / channel strides stay free."""
    W = x.shape[-1]
    if x.stride(-1) == 1 and (x.stride(-2) == W or x.shape[-2] == 1):
        return x
    return x.contiguous()


def _heads_tile(d: int, dim: int) -> tuple[int, int]:
    """(BLOCK_D, heads per tile): tl.dot needs every dimension >= 16, so small heads share a tile.
    The interpreter, which pays per program, packs up to 64 channels of heads into a tile."""
    block_d = max(16, next_pow2(d), min(next_pow2(dim), 64) if INTERPRETED else 0)
    return block_d, max(1, block_d // d)


def _ieee_dot(dtype: torch.dtype) -> bool:
    """fp32 inputs get IEEE fp32 products (as eager matmul by default). Triton's interpreter
    mis-multiplies bfloat16 operands in ``tl.dot`` (Triton 3.9: garbage results), so there bf16
    operands are widened to fp32 after rounding: the same products the tensor cores form."""
    return dtype == torch.float32 or (INTERPRETED and dtype == torch.bfloat16)


def _position_meta(d: int, dim: int, n_positions: int, dtype: torch.dtype) -> dict:
    block_d, g = _heads_tile(d, dim)
    meta = {"G": g, "BLOCK_D": block_d, "IEEE": _ieee_dot(dtype)}
    if INTERPRETED:
        meta["BLOCK_N"] = max(16, min(next_pow2(n_positions), _INTERP_MAX_TILE // block_d))
    return meta


def _tiles_grid(groups: int, n_positions: int):
    return lambda meta: (groups, cdiv(n_positions, meta["BLOCK_N"]))


def lse_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> log-sum-exp over W, (B, C, H) fp32."""
    B, C, H, W = x.shape
    x = _plane_contiguous(x)
    lse = torch.empty((B, C, H), dtype=torch.float32, device=x.device)
    block_w = min(next_pow2(W), 1024 if INTERPRETED else 128)
    meta = {"BLOCK_R": max(1, min(next_pow2(B * C * H), _INTERP_MAX_TILE // block_w))} if INTERPRETED else {}
    wrap_triton(_lse_rows_kernel)[lambda m: (cdiv(B * C * H, m["BLOCK_R"]),)](
        x, lse, x.stride(0), x.stride(1), C, H, W, B * C * H, BLOCK_W=block_w, **meta
    )
    return lse


def lse_cols(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> log-sum-exp over H, (B, C, W) fp32."""
    B, C, H, W = x.shape
    x = _plane_contiguous(x)
    lse = torch.empty((B, C, W), dtype=torch.float32, device=x.device)
    if INTERPRETED:
        block_x = max(1, min(next_pow2(B * C * W), _INTERP_MAX_TILE // next_pow2(H)))
        meta = {"BLOCK_R": next_pow2(H)}
    else:
        block_x, meta = 64, {}
    wrap_triton(_lse_cols_kernel)[(cdiv(B * C * W, block_x),)](
        x, lse, x.stride(0), x.stride(1), C, H, W, B * C * W, BLOCK_X=block_x, **meta
    )
    return lse


def fwm_context(k: torch.Tensor, v: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (context (B, heads, d, d) in k's dtype, lse_row (B, dim, H) fp32)."""
    B, dim, H, W = k.shape
    d = dim // heads
    k, v = _plane_contiguous(k), _plane_contiguous(v)
    lse = lse_rows(k)
    meta = _position_meta(d, dim, H * W, k.dtype)
    groups = B * cdiv(heads, meta["G"])
    # split the positions so the launch fills the GPU; chunks are multiples of the largest tile
    splits = max(1, min(target_programs(k.device, INTERPRETED) // groups, cdiv(H * W, 1024)))
    per_split = cdiv(cdiv(H * W, splits), 256) * 256
    splits = cdiv(H * W, per_split)
    part = torch.empty((B, heads, splits, d, d), dtype=torch.float32, device=k.device)
    wrap_triton(_context_fwd_kernel)[(groups, splits)](
        k, v, lse, part, k.stride(0), k.stride(1), v.stride(0), v.stride(1), heads, d, H, W, per_split, splits, **meta
    )
    ctx = part[:, :, 0] if splits == 1 else part.sum(dim=2)
    return ctx.to(k.dtype), lse


def fwm_context_backward(
    grad: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    B, dim, H, W = k.shape
    d = dim // heads
    k, v = _plane_contiguous(k), _plane_contiguous(v)
    meta = _position_meta(d, dim, H * W, k.dtype)
    groups = B * cdiv(heads, meta["G"])
    rows = max(1, cdiv(H, max(1, target_programs(k.device, INTERPRETED) // groups)))
    rowdot = torch.empty((B, dim, H), dtype=torch.float32, device=k.device)
    block_w = max(16, min(next_pow2(W), 1024 if INTERPRETED else 64))
    wrap_triton(_context_rowdot_kernel)[(groups, cdiv(H, rows))](
        k,
        v,
        lse,
        grad,
        rowdot,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        *grad.stride(),
        heads,
        d,
        H,
        W,
        rows,
        G=meta["G"],
        BLOCK_D=meta["BLOCK_D"],
        BLOCK_W=block_w,
        IEEE=meta["IEEE"],
        num_warps=8,
    )
    gk = torch.empty((B, dim, H, W), dtype=k.dtype, device=k.device)
    gv = torch.empty((B, dim, H, W), dtype=v.dtype, device=v.device)
    wrap_triton(_context_bwd_kernel)[_tiles_grid(groups, H * W)](
        k,
        v,
        lse,
        rowdot,
        grad,
        gk,
        gv,
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        *grad.stride(),
        heads,
        d,
        H,
        W,
        **meta,
    )
    return gk, gv


def fwm_apply(q: torch.Tensor, context: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (out (B, dim, H, W) in q's dtype, lse_col (B, dim, W) fp32)."""
    B, dim, H, W = q.shape
    d = dim // heads
    q = _plane_contiguous(q)
    lse = lse_cols(q)
    meta = _position_meta(d, dim, H * W, q.dtype)
    out = torch.empty((B, dim, H, W), dtype=q.dtype, device=q.device)
    wrap_triton(_apply_fwd_kernel)[_tiles_grid(B * cdiv(heads, meta["G"]), H * W)](
        q, lse, context, out, q.stride(0), q.stride(1), *context.stride(), heads, d, H, W, 1.0 / math.sqrt(d), **meta
    )
    return out, lse


def fwm_apply_backward(
    grad: torch.Tensor, q: torch.Tensor, context: torch.Tensor, lse: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    B, dim, H, W = q.shape
    d = dim // heads
    q, grad = _plane_contiguous(q), _plane_contiguous(grad)
    meta = _position_meta(d, dim, H * W, q.dtype)
    groups = B * cdiv(heads, meta["G"])
    scale = 1.0 / math.sqrt(d)
    cols = max(16, min(next_pow2(W), 64 if INTERPRETED else 16))  # >= 16: the K of tl.dot for d ctx
    strips = cdiv(W, cols)
    rows = {"ROWS": max(1, min(next_pow2(H), _INTERP_MAX_TILE // (meta["BLOCK_D"] * cols)))} if INTERPRETED else {}
    colsum = torch.empty((B, dim, W), dtype=torch.float32, device=q.device)
    part = torch.empty((B, heads, strips, d, d), dtype=torch.float32, device=q.device)
    wrap_triton(_apply_colsum_kernel)[(groups, strips)](
        q,
        lse,
        context,
        grad,
        colsum,
        part,
        q.stride(0),
        q.stride(1),
        *context.stride(),
        grad.stride(0),
        grad.stride(1),
        heads,
        d,
        H,
        W,
        strips,
        scale,
        G=meta["G"],
        BLOCK_D=meta["BLOCK_D"],
        COLS=cols,
        IEEE=meta["IEEE"],
        **rows,
    )
    gq = torch.empty((B, dim, H, W), dtype=q.dtype, device=q.device)
    wrap_triton(_apply_bwd_kernel)[_tiles_grid(groups, H * W)](
        q,
        lse,
        colsum,
        context,
        grad,
        gq,
        q.stride(0),
        q.stride(1),
        *context.stride(),
        grad.stride(0),
        grad.stride(1),
        heads,
        d,
        H,
        W,
        scale,
        **meta,
    )
    gctx = part[:, :, 0] if strips == 1 else part.sum(dim=2)
    return gq, gctx.to(context.dtype)
