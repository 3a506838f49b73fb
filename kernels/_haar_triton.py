"""Triton kernels and launchers for the Haar DWT and the DDIF wavelet condition.

Imported lazily by :mod:`ddif.kernels.haar_dwt` (never at package import). Conventions are those of
:func:`kernels.haar_dwt.haar_dwt2_ref`; the bilinear resize follows ``F.interpolate(...,
mode="bilinear", align_corners=False)`` with an explicit output size (scale = in / out).

Kernels
-------
- ``_analysis_kernel``: one-level DWT of any (B, C, H, W) view into four bands.
- ``_synthesis_kernel``: the orthonormal inverse, written with the *adjoint* of the replicate
  padding (a padded row / column's value is folded onto the row / column it copies). For even
  sizes it is the exact inverse; for odd sizes it is the transpose of the analysis, which is what
  the analysis' backward needs. So each of the two is the other's backward.
- ``_wavelet_condition_kernel``: LL(lms) and the guide's H, V, D bands straight into one
  (B, C + 3P, ., .) tensor, optionally with the bilinear resize back to H x W fused in (each
  output pixel blends four Haar coefficients computed on the fly; the half-size tensor never
  exists).
- ``_wavelet_condition_bwd_kernel``: its adjoint, per half-size position: the transpose of the
  bilinear resize as a *gather* over the (at most 4 x 4) output pixels that read the position
  (no atomics, deterministic), then the synthesis above. Both are linear maps, so this is the
  exact gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ddif.kernels._triton_common import INTERPRETED, cast_to
from ddif.kernels._triton_utils import autotune, cdiv, next_pow2


# Tiles are (BLOCK_S channels, BLOCK_Y rows, BLOCK_X columns). On a GPU one channel per program
# and 2-D tiles whose rows are contiguous in memory (coalesced); the autotuner picks the shape.
# In the interpreter, whose cost is per program instance and per operation, the launchers pass
# one large tile covering many channels instead, and nothing is autotuned.
# Each output of the fused-resize kernels gathers 16 (forward) or 16-36 (backward) inputs: a
# compile check for sm_90 (kernels.compile_check) shows 2 outputs per thread forward (70
# registers) and 1 backward keep them free of spills, so the tiles are sized for that.
def _tiles(per_thread: int):
    shapes = ((2, 64), (2, 128), (4, 64), (4, 128), (8, 64), (1, 256))
    return [
        triton.Config({"BLOCK_S": 1, "BLOCK_Y": by, "BLOCK_X": bx}, num_warps=by * bx // (32 * per_thread))
        for by, bx in shapes
    ]


def _autotune(key, per_thread: int = 2):
    if INTERPRETED:
        return lambda fn: fn
    return autotune(_tiles(per_thread), key)


def _blocks(channels: int, rows: int, cols: int) -> dict:
    """Explicit tile sizes in the interpreter (the autotuner picks them on a GPU)."""
    if not INTERPRETED:
        return {}
    return {
        "BLOCK_S": min(next_pow2(channels), 32),
        "BLOCK_Y": min(next_pow2(rows), 64),
        "BLOCK_X": min(next_pow2(cols), 64),
    }


# ----------------------------------------------------------------------------------- helpers
@triton.jit
def _tile(pid, OH, OW, BLOCK_Y: tl.constexpr, BLOCK_X: tl.constexpr):
    """Split a flat program id into (channel group, rows (1, BY, 1), columns (1, 1, BX))."""
    n_tx = tl.cdiv(OW, BLOCK_X)
    n_tiles = tl.cdiv(OH, BLOCK_Y) * n_tx
    group = pid // n_tiles
    t = pid % n_tiles
    oy = (t // n_tx) * BLOCK_Y + tl.arange(0, BLOCK_Y)
    ox = (t % n_tx) * BLOCK_X + tl.arange(0, BLOCK_X)
    return group, oy[None, :, None], ox[None, None, :]


@triton.jit
def _haar_at(base, sy, sx, i, j, H, W, mask):
    """Haar coefficients (LL, H, V, D) in fp32 at half-size positions (i, j) of the images at
    ``base`` (a (BLOCK_S, 1, 1) block of channel pointers); rows / columns past the end repeat the
    last one (odd sizes)."""
    r0 = 2 * i
    r1 = tl.minimum(r0 + 1, H - 1)
    c0 = 2 * j
    c1 = tl.minimum(c0 + 1, W - 1)
    a = tl.load(base + r0 * sy + c0 * sx, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(base + r0 * sy + c1 * sx, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(base + r1 * sy + c0 * sx, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(base + r1 * sy + c1 * sx, mask=mask, other=0.0).to(tl.float32)
    top = a + b
    bottom = c + d
    left_diff = a - b
    right_diff = c - d
    return ((top + bottom) * 0.5, (top - bottom) * 0.5, (left_diff + right_diff) * 0.5, (left_diff - right_diff) * 0.5)


@triton.jit
def _synthesis_store(base, sy, i, j, OH, OW, ll, hh, vv, dd, mask):
    """Write the 2x2 blocks at half-size (i, j) of OH x OW images (row stride ``sy``, unit column
    stride): the orthonormal inverse Haar transform, with any row / column past OH / OW folded back
    onto the one it replicated (the transpose of the replicate padding)."""
    a = (ll + hh + vv + dd) * 0.5
    b = (ll + hh - vv - dd) * 0.5
    c = (ll - hh + vv - dd) * 0.5
    d = (ll - hh - vv + dd) * 0.5
    r0 = 2 * i
    c0 = 2 * j
    has_r1 = (r0 + 1) < OH
    has_c1 = (c0 + 1) < OW
    a = a + tl.where(has_c1, 0.0, b)
    c = c + tl.where(has_c1, 0.0, d)
    a = a + tl.where(has_r1, 0.0, c)
    b = b + tl.where(has_r1, 0.0, d)
    ty = base.dtype.element_ty
    top = base + r0 * sy + c0
    tl.store(top, cast_to(a, ty), mask=mask)
    tl.store(top + 1, cast_to(b, ty), mask=mask & has_c1)
    tl.store(top + sy, cast_to(c, ty), mask=mask & has_r1)
    tl.store(top + sy + 1, cast_to(d, ty), mask=mask & has_r1 & has_c1)


@triton.jit
def _source_index(dst, scale, n_in):
    """Bilinear source indices (i0, i1) and weight of i1 for output index ``dst``
    (align_corners=False, as ATen computes them)."""
    src = tl.maximum((dst.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = src.to(tl.int32)  # src >= 0: truncation is floor
    i1 = tl.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0.to(tl.float32)


@triton.jit
def _blend(c00, c01, c10, c11, wy, wx):
    return (1.0 - wy) * ((1.0 - wx) * c00 + wx * c01) + wy * ((1.0 - wx) * c10 + wx * c11)


@triton.jit
def _first_reader(i, scale, TAPS: tl.constexpr):
    """First candidate output index whose bilinear source may read input index ``i``."""
    if TAPS == 4:
        return 2 * i - 1  # exact 2x (scale 1/2): readers are 2i-1 .. 2i+2
    else:
        return tl.floor((i.to(tl.float32) - 0.5) / scale - 0.5).to(tl.int32)


@triton.jit
def _resize_adjoint(
    base1,
    base2,
    base3,
    sy,
    sx,
    i,
    j,
    OH,
    OW,
    h2,
    w2,
    scale_y,
    scale_x,
    mask,
    NBANDS: tl.constexpr,
    TAPS_Y: tl.constexpr,
    TAPS_X: tl.constexpr,
):
    """Transpose of the bilinear resize (h2 x w2 -> OH x OW) at input positions (i, j), for one or
    three gradient planes, as a gather: sum of w_y * w_x * g over the output pixels that read (i, j).

    An output row y reads input row i when its source lies in (i - 1, i + 1), an interval of
    length 2 / scale <= 4 (scale = h2 / OH >= 1/2 here). For an exact 2x resize the readers are
    rows 2i-1 .. 2i+2 (TAPS = 4). Otherwise six candidates from floor((i - 1/2) / scale - 1/2)
    cover the interval with a row to spare either side against rounding (TAPS = 6). The weights
    are recomputed exactly as the forward computes them, so a candidate that does not read (i, j)
    adds zero (and is not loaded).
    """
    y_first = _first_reader(i, scale_y, TAPS_Y)
    x_first = _first_reader(j, scale_x, TAPS_X)
    acc1 = tl.zeros(mask.shape, dtype=tl.float32)
    acc2 = tl.zeros(mask.shape, dtype=tl.float32)
    acc3 = tl.zeros(mask.shape, dtype=tl.float32)
    for dy in tl.static_range(TAPS_Y):
        y = y_first + dy
        y0, y1, ly = _source_index(y, scale_y, h2)
        wy = tl.where(y0 == i, 1.0 - ly, 0.0) + tl.where(y1 == i, ly, 0.0)
        ok_y = (y >= 0) & (y < OH) & (wy != 0.0)
        for dx in tl.static_range(TAPS_X):
            x = x_first + dx
            x0, x1, lx = _source_index(x, scale_x, w2)
            wx = tl.where(x0 == j, 1.0 - lx, 0.0) + tl.where(x1 == j, lx, 0.0)
            ok = mask & ok_y & (x >= 0) & (x < OW) & (wx != 0.0)
            off = y * sy + x * sx
            w = wy * wx
            acc1 += w * tl.load(base1 + off, mask=ok, other=0.0).to(tl.float32)
            if NBANDS == 3:
                acc2 += w * tl.load(base2 + off, mask=ok, other=0.0).to(tl.float32)
                acc3 += w * tl.load(base3 + off, mask=ok, other=0.0).to(tl.float32)
    return acc1, acc2, acc3


# ----------------------------------------------------------------------------------- kernels
@_autotune(key=["h2", "w2"])
@triton.jit
def _analysis_kernel(
    x_ptr,
    ll_ptr,
    h_ptr,
    v_ptr,
    d_ptr,
    sxb,
    sxc,
    sxy,
    sxx,
    BC,
    C,
    H,
    W,
    h2,
    w2,
    BLOCK_S: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
):
    group, i, j = _tile(tl.program_id(0), h2, w2, BLOCK_Y, BLOCK_X)
    n = group * BLOCK_S + tl.arange(0, BLOCK_S)[:, None, None]  # flat (batch, channel) index
    mask = (n < BC) & (i < h2) & (j < w2)
    base = x_ptr + (n // C).to(tl.int64) * sxb + (n % C).to(tl.int64) * sxc
    ll, hh, vv, dd = _haar_at(base, sxy, sxx, i, j, H, W, mask)
    out = n.to(tl.int64) * h2 * w2 + i * w2 + j
    ty = ll_ptr.dtype.element_ty
    tl.store(ll_ptr + out, cast_to(ll, ty), mask=mask)
    tl.store(h_ptr + out, cast_to(hh, ty), mask=mask)
    tl.store(v_ptr + out, cast_to(vv, ty), mask=mask)
    tl.store(d_ptr + out, cast_to(dd, ty), mask=mask)


@_autotune(key=["h2", "w2"])
@triton.jit
def _synthesis_kernel(
    ll_ptr,
    h_ptr,
    v_ptr,
    d_ptr,
    x_ptr,
    BC,
    h2,
    w2,
    OH,
    OW,
    BLOCK_S: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
):
    group, i, j = _tile(tl.program_id(0), h2, w2, BLOCK_Y, BLOCK_X)
    n = group * BLOCK_S + tl.arange(0, BLOCK_S)[:, None, None]
    mask = (n < BC) & (i < h2) & (j < w2)
    band = n.to(tl.int64) * h2 * w2 + i * w2 + j
    ll = tl.load(ll_ptr + band, mask=mask, other=0.0).to(tl.float32)
    hh = tl.load(h_ptr + band, mask=mask, other=0.0).to(tl.float32)
    vv = tl.load(v_ptr + band, mask=mask, other=0.0).to(tl.float32)
    dd = tl.load(d_ptr + band, mask=mask, other=0.0).to(tl.float32)
    _synthesis_store(x_ptr + n.to(tl.int64) * OH * OW, OW, i, j, OH, OW, ll, hh, vv, dd, mask)


@_autotune(key=["OH", "OW", "RESIZE"])
@triton.jit
def _wavelet_condition_kernel(
    lms_ptr,
    guide_ptr,
    out_ptr,
    slb,
    slc,
    sly,
    slx,
    sgb,
    sgc,
    sgy,
    sgx,
    C,
    P,
    H,
    W,
    h2,
    w2,
    OH,
    OW,
    scale_y,
    scale_x,
    pos_h,
    pos_v,
    pos_d,
    RESIZE: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
):
    """One program: one tile of a block of source channels of one image: lms bands -> their LL
    channels, or guide bands -> their three detail channels each."""
    group, oy, ox = _tile(tl.program_id(0), OH, OW, BLOCK_Y, BLOCK_X)
    n_lms = tl.cdiv(C, BLOCK_S)
    n_groups = n_lms + tl.cdiv(P, BLOCK_S)
    b = group // n_groups
    k = group % n_groups
    pix = (oy < OH) & (ox < OW)
    offs = tl.arange(0, BLOCK_S)[:, None, None]
    if k < n_lms:
        ch = k * BLOCK_S + offs
        mask = (ch < C) & pix
        base = lms_ptr + b.to(tl.int64) * slb + ch.to(tl.int64) * slc
        sy = sly
        sx = slx
    else:
        ch = (k - n_lms) * BLOCK_S + offs
        mask = (ch < P) & pix
        base = guide_ptr + b.to(tl.int64) * sgb + ch.to(tl.int64) * sgc
        sy = sgy
        sx = sgx
    if RESIZE:
        i0, i1, wy = _source_index(oy, scale_y, h2)
        j0, j1, wx = _source_index(ox, scale_x, w2)
        ll00, h00, v00, d00 = _haar_at(base, sy, sx, i0, j0, H, W, mask)
        ll01, h01, v01, d01 = _haar_at(base, sy, sx, i0, j1, H, W, mask)
        ll10, h10, v10, d10 = _haar_at(base, sy, sx, i1, j0, H, W, mask)
        ll11, h11, v11, d11 = _haar_at(base, sy, sx, i1, j1, H, W, mask)
        ll = _blend(ll00, ll01, ll10, ll11, wy, wx)
        hh = _blend(h00, h01, h10, h11, wy, wx)
        vv = _blend(v00, v01, v10, v11, wy, wx)
        dd = _blend(d00, d01, d10, d11, wy, wx)
    else:
        ll, hh, vv, dd = _haar_at(base, sy, sx, oy, ox, H, W, mask)
    plane = OH * OW
    out_img = out_ptr + b.to(tl.int64) * (C + 3 * P) * plane + oy * OW + ox
    ty = out_ptr.dtype.element_ty
    if k < n_lms:
        tl.store(out_img + ch.to(tl.int64) * plane, cast_to(ll, ty), mask=mask)
    else:
        tl.store(out_img + (C + pos_h * P + ch).to(tl.int64) * plane, cast_to(hh, ty), mask=mask)
        tl.store(out_img + (C + pos_v * P + ch).to(tl.int64) * plane, cast_to(vv, ty), mask=mask)
        tl.store(out_img + (C + pos_d * P + ch).to(tl.int64) * plane, cast_to(dd, ty), mask=mask)


@_autotune(key=["h2", "w2", "RESIZE"], per_thread=1)
@triton.jit
def _wavelet_condition_bwd_kernel(
    grad_ptr,
    glms_ptr,
    gguide_ptr,
    sgb,
    sgc,
    sgy,
    sgx,
    C,
    P,
    H,
    W,
    h2,
    w2,
    OH,
    OW,
    scale_y,
    scale_x,
    pos_h,
    pos_v,
    pos_d,
    RESIZE: tl.constexpr,
    TAPS_Y: tl.constexpr,
    TAPS_X: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_Y: tl.constexpr,
    BLOCK_X: tl.constexpr,
):
    """One program: one tile of half-size positions of a block of source channels; writes the 2x2
    input blocks under it (the gradients are contiguous (B, C | P, H, W) tensors)."""
    group, i, j = _tile(tl.program_id(0), h2, w2, BLOCK_Y, BLOCK_X)
    n_lms = tl.cdiv(C, BLOCK_S)
    n_groups = n_lms + tl.cdiv(P, BLOCK_S)
    b = group // n_groups
    k = group % n_groups
    pix = (i < h2) & (j < w2)
    offs = tl.arange(0, BLOCK_S)[:, None, None]
    g_img = grad_ptr + b.to(tl.int64) * sgb
    zero = tl.zeros((BLOCK_S, BLOCK_Y, BLOCK_X), dtype=tl.float32)
    if k < n_lms:
        ch = k * BLOCK_S + offs
        mask = (ch < C) & pix
        g_ll_base = g_img + ch.to(tl.int64) * sgc
        if RESIZE:
            g_ll, _, _ = _resize_adjoint(
                g_ll_base,
                g_ll_base,
                g_ll_base,
                sgy,
                sgx,
                i,
                j,
                OH,
                OW,
                h2,
                w2,
                scale_y,
                scale_x,
                mask,
                1,
                TAPS_Y,
                TAPS_X,
            )
        else:
            g_ll = tl.load(g_ll_base + i * sgy + j * sgx, mask=mask, other=0.0).to(tl.float32)
        out = glms_ptr + (b * C + ch).to(tl.int64) * H * W
        _synthesis_store(out, W, i, j, H, W, g_ll, zero, zero, zero, mask)
    else:
        ch = (k - n_lms) * BLOCK_S + offs
        mask = (ch < P) & pix
        g_h_base = g_img + (C + pos_h * P + ch).to(tl.int64) * sgc
        g_v_base = g_img + (C + pos_v * P + ch).to(tl.int64) * sgc
        g_d_base = g_img + (C + pos_d * P + ch).to(tl.int64) * sgc
        if RESIZE:
            g_h, g_v, g_d = _resize_adjoint(
                g_h_base, g_v_base, g_d_base, sgy, sgx, i, j, OH, OW, h2, w2, scale_y, scale_x, mask, 3, TAPS_Y, TAPS_X
            )
        else:
            g_h = tl.load(g_h_base + i * sgy + j * sgx, mask=mask, other=0.0).to(tl.float32)
            g_v = tl.load(g_v_base + i * sgy + j * sgx, mask=mask, other=0.0).to(tl.float32)
            g_d = tl.load(g_d_base + i * sgy + j * sgx, mask=mask, other=0.0).to(tl.float32)
        out = gguide_ptr + (b * P + ch).to(tl.int64) * H * W
        _synthesis_store(out, W, i, j, H, W, zero, g_h, g_v, g_d, mask)


# ----------------------------------------------------------------------------------- launchers
def _grid(groups_of, rows: int, cols: int):
    """Flat grid: channel groups (a function of BLOCK_S) x spatial tiles."""
    return lambda meta: (groups_of(meta["BLOCK_S"]) * cdiv(rows, meta["BLOCK_Y"]) * cdiv(cols, meta["BLOCK_X"]),)


def haar_dwt2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C, H, W = x.shape
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    bands = [x.new_empty((B, C, h2, w2)) for _ in range(4)]
    wrap_triton(_analysis_kernel)[_grid(lambda bs: cdiv(B * C, bs), h2, w2)](
        x, *bands, *x.stride(), B * C, C, H, W, h2, w2, **_blocks(B * C, h2, w2)
    )
    return bands[0], bands[1], bands[2], bands[3]


def haar_synthesis(
    ll: torch.Tensor, h: torch.Tensor, v: torch.Tensor, d: torch.Tensor, out_h: int, out_w: int
) -> torch.Tensor:
    B, C, h2, w2 = ll.shape
    bands = [t.contiguous() for t in (ll, h, v, d)]
    x = ll.new_empty((B, C, out_h, out_w))
    wrap_triton(_synthesis_kernel)[_grid(lambda bs: cdiv(B * C, bs), h2, w2)](
        *bands, x, B * C, h2, w2, out_h, out_w, **_blocks(B * C, h2, w2)
    )
    return x


def _detail_positions(detail_order: str) -> tuple[int, int, int]:
    return detail_order.index("H"), detail_order.index("V"), detail_order.index("D")


def wavelet_condition(lms: torch.Tensor, guide: torch.Tensor, detail_order: str, resize: bool) -> torch.Tensor:
    B, C, H, W = lms.shape
    P = guide.shape[1]
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    OH, OW = (H, W) if resize else (h2, w2)
    out = lms.new_empty((B, C + 3 * P, OH, OW))
    wrap_triton(_wavelet_condition_kernel)[_grid(lambda bs: B * (cdiv(C, bs) + cdiv(P, bs)), OH, OW)](
        lms,
        guide,
        out,
        *lms.stride(),
        *guide.stride(),
        C,
        P,
        H,
        W,
        h2,
        w2,
        OH,
        OW,
        h2 / OH,
        w2 / OW,
        *_detail_positions(detail_order),
        RESIZE=resize,
        **_blocks(max(C, P), OH, OW),
    )
    return out


def wavelet_condition_backward(
    grad: torch.Tensor, C: int, P: int, H: int, W: int, detail_order: str, resize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    B = grad.shape[0]
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    OH, OW = grad.shape[-2:]
    g_lms = grad.new_empty((B, C, H, W))
    g_guide = grad.new_empty((B, P, H, W))
    wrap_triton(_wavelet_condition_bwd_kernel)[_grid(lambda bs: B * (cdiv(C, bs) + cdiv(P, bs)), h2, w2)](
        grad,
        g_lms,
        g_guide,
        *grad.stride(),
        C,
        P,
        H,
        W,
        h2,
        w2,
        OH,
        OW,
        h2 / OH,
        w2 / OW,
        *_detail_positions(detail_order),
        RESIZE=resize,
        TAPS_Y=4 if OH == 2 * h2 else 6,
        TAPS_X=4 if OW == 2 * w2 else 6,
        **_blocks(max(C, P), h2, w2),
    )
    return g_lms, g_guide
