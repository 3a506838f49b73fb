"""One-level orthonormal Haar DWT (PyWavelets ``dwt2(x, "db1")`` convention) and the DDIF
wavelet condition.

For each 2x2 block [[a, b], [c, d]]::

    LL = (a + b + c + d) / 2      H = (a + b - c - d) / 2
    V  = (a - b + c - d) / 2      D = (a - b - c + d) / 2

Odd sizes are extended by repeating the last row / column (PyWavelets "symmetric" mode for a
length-2 filter), giving ceil(n / 2) outputs.

The wavelet condition of DDIF (Cao et al., 2024) is ``cat[LL(lms), details(guide)]`` with the
guide's detail bands in the model's recorded order (grouped by detail type), resized bilinearly
(align_corners=False) back to the input size.

Three layers per op: Triton kernels and launchers (:mod:`ddif.kernels._haar_triton`, imported on first
use; every launch goes through ``torch.library.wrap_triton``), ``torch.library.triton_op`` ops with
fake (meta) and autograd registrations (``ddif::haar_dwt2``, ``ddif::haar_synthesis``,
``ddif::wavelet_condition`` and its backward; see :func:`ddif.kernels._triton_utils.triton_kernel_op`), and
the public ``*_fused`` functions, which validate inputs, fall back to the ``*_ref`` ops while a
graph is exported, and otherwise call the custom ops. :func:`wavelet_condition` picks fused or
reference per call.

Backward passes: every map here is linear. The DWT's backward is the synthesis kernel (the
orthonormal inverse with the replicate padding folded back: the transpose of the analysis) and
vice versa; the wavelet condition has its own backward kernel (transpose of the bilinear resize as
a gather, then the synthesis), whose own backward is the forward kernel again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ddif.kernels._triton_utils import (
    KERNEL_DTYPES,
    can_launch,
    launch_error,
    load_kernels,
    on_kernels_loaded,
    status_entry,
    triton_kernel_op,
)
from ddif.kernels.dispatch import exporting

__all__ = [
    "haar_dwt2_ref",
    "haar_idwt2_ref",
    "wavelet_condition_ref",
    "haar_dwt2_fused",
    "haar_idwt2_fused",
    "wavelet_condition_fused",
    "fused_ready",
    "wavelet_condition",
]

_KERNELS = "ddif.kernels._haar_triton"


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def haar_dwt2_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (LL, H, V, D), each (B, C, ceil(H/2), ceil(W/2))."""
    x = _pad_even(x)
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    top, bottom = a + b, c + d  # row sums
    left_diff, right_diff = a - b, c - d
    return (
        (top + bottom) * 0.5,
        (top - bottom) * 0.5,
        (left_diff + right_diff) * 0.5,
        (left_diff - right_diff) * 0.5,
    )


def haar_idwt2_ref(ll: torch.Tensor, h: torch.Tensor, v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2_ref` for even sizes: four (B, C, h, w) -> (B, C, 2h, 2w)."""
    a = (ll + h + v + d) * 0.5
    b = (ll + h - v - d) * 0.5
    c = (ll - h + v - d) * 0.5
    e = (ll - h - v + d) * 0.5
    top = torch.stack((a, b), dim=-1).flatten(-2)  # interleave columns
    bottom = torch.stack((c, e), dim=-1).flatten(-2)
    return torch.stack((top, bottom), dim=-2).flatten(-3, -2)  # interleave rows


def wavelet_condition_ref(lms: torch.Tensor, guide: torch.Tensor, detail_order: str = "HDV") -> torch.Tensor:
    """cat[LL(lms), details(guide)] resized back to the input size: C + 3P channels."""
    size = lms.shape[-2:]
    ll = haar_dwt2_ref(lms)[0]
    _, gh, gv, gd = haar_dwt2_ref(guide)
    by_name = {"H": gh, "V": gv, "D": gd}
    half = torch.cat([ll] + [by_name[k] for k in detail_order], dim=1)
    return F.interpolate(half, size=size, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------- custom ops
def _kernels():
    return load_kernels(_KERNELS)


def _register_ops() -> None:
    """The ``torch.library`` ops, their fakes and autograd (run once, when the kernels load:
    see :func:`ddif.kernels._triton_utils.on_kernels_loaded`)."""

    @triton_kernel_op("ddif::haar_dwt2", _KERNELS)
    def _haar_dwt2_op(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _kernels().haar_dwt2(x)

    @_haar_dwt2_op.register_fake
    def _(x):
        b, c, h, w = x.shape
        return tuple(x.new_empty((b, c, (h + 1) // 2, (w + 1) // 2)) for _ in range(4))

    @triton_kernel_op("ddif::haar_synthesis", _KERNELS)
    def _haar_synthesis_op(ll: Tensor, h: Tensor, v: Tensor, d: Tensor, out_h: int, out_w: int) -> Tensor:
        if (out_h + 1) // 2 != ll.shape[-2] or (out_w + 1) // 2 != ll.shape[-1]:
            raise ValueError(
                f"haar_synthesis: bands of size {tuple(ll.shape[-2:])} cannot make a {out_h}x{out_w} image"
            )
        return _kernels().haar_synthesis(ll, h, v, d, out_h, out_w)

    @_haar_synthesis_op.register_fake
    def _(ll, h, v, d, out_h, out_w):
        return ll.new_empty((ll.shape[0], ll.shape[1], out_h, out_w))

    def _zeros_for_none(grads: Sequence[Tensor | None], like: Tensor) -> list[Tensor]:
        return [torch.zeros_like(like) if g is None else g for g in grads]

    def _dwt2_setup(ctx, inputs, output):
        ctx.out_hw = inputs[0].shape[-2:]

    def _dwt2_backward(ctx, g_ll, g_h, g_v, g_d):
        like = next(g for g in (g_ll, g_h, g_v, g_d) if g is not None)
        grads = _zeros_for_none((g_ll, g_h, g_v, g_d), like)
        return torch.ops.ddif.haar_synthesis(*grads, ctx.out_hw[0], ctx.out_hw[1])

    def _synthesis_setup(ctx, inputs, output):
        pass

    def _synthesis_backward(ctx, grad):
        return (*torch.ops.ddif.haar_dwt2(grad), None, None)

    torch.library.register_autograd("ddif::haar_dwt2", _dwt2_backward, setup_context=_dwt2_setup)
    torch.library.register_autograd("ddif::haar_synthesis", _synthesis_backward, setup_context=_synthesis_setup)

    @triton_kernel_op("ddif::wavelet_condition", _KERNELS)
    def _wavelet_condition_op(lms: Tensor, guide: Tensor, detail_order: str, resize: bool) -> Tensor:
        return _kernels().wavelet_condition(lms, guide, detail_order, resize)

    @_wavelet_condition_op.register_fake
    def _(lms, guide, detail_order, resize):
        b, c, h, w = lms.shape
        size = (h, w) if resize else ((h + 1) // 2, (w + 1) // 2)
        return lms.new_empty((b, c + 3 * guide.shape[1], *size))

    @triton_kernel_op("ddif::wavelet_condition_backward", _KERNELS)
    def _wavelet_condition_backward_op(
        grad: Tensor, bands: int, guide_bands: int, height: int, width: int, detail_order: str, resize: bool
    ) -> tuple[Tensor, Tensor]:
        size = (height, width) if resize else ((height + 1) // 2, (width + 1) // 2)
        if grad.dim() != 4 or grad.shape[1] != bands + 3 * guide_bands or tuple(grad.shape[-2:]) != size:
            raise ValueError(
                f"wavelet_condition_backward: grad of shape {tuple(grad.shape)} does not match "
                f"{bands} + 3 x {guide_bands} channels of {size[0]}x{size[1]}"
            )
        return _kernels().wavelet_condition_backward(grad, bands, guide_bands, height, width, detail_order, resize)

    @_wavelet_condition_backward_op.register_fake
    def _(grad, bands, guide_bands, height, width, detail_order, resize):
        b = grad.shape[0]
        return grad.new_empty((b, bands, height, width)), grad.new_empty((b, guide_bands, height, width))

    def _condition_setup(ctx, inputs, output):
        lms, guide, ctx.detail_order, ctx.resize = inputs
        ctx.dims = (lms.shape[1], guide.shape[1], lms.shape[2], lms.shape[3])

    def _condition_backward(ctx, grad):
        g_lms, g_guide = torch.ops.ddif.wavelet_condition_backward(grad, *ctx.dims, ctx.detail_order, ctx.resize)
        return g_lms, g_guide, None, None

    def _condition_bwd_setup(ctx, inputs, output):
        _, ctx.bands, ctx.guide_bands, _, _, ctx.detail_order, ctx.resize = inputs

    def _condition_bwd_backward(ctx, gg_lms, gg_guide):
        # the backward is linear in ``grad``: its own backward is the forward map
        if gg_lms is None and gg_guide is None:
            return (None,) * 7
        like = gg_lms if gg_lms is not None else gg_guide
        if gg_lms is None:
            gg_lms = like.new_zeros((like.shape[0], ctx.bands, *like.shape[-2:]))
        if gg_guide is None:
            gg_guide = like.new_zeros((like.shape[0], ctx.guide_bands, *like.shape[-2:]))
        return (torch.ops.ddif.wavelet_condition(gg_lms, gg_guide, ctx.detail_order, ctx.resize),) + (None,) * 6

    torch.library.register_autograd("ddif::wavelet_condition", _condition_backward, setup_context=_condition_setup)
    torch.library.register_autograd(
        "ddif::wavelet_condition_backward", _condition_bwd_backward, setup_context=_condition_bwd_setup
    )


on_kernels_loaded(_KERNELS, _register_ops)


# ----------------------------------------------------------------------------------- public API
def fused_ready(*tensors: Tensor) -> bool:
    """Whether the Triton kernels can take these tensors here (device, dtype, non-empty)."""
    t = tensors[0]
    return all(x.dtype in KERNEL_DTYPES and x.numel() > 0 and x.device == t.device for x in tensors) and can_launch(
        t.device, _KERNELS
    )


def _check_image(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(
            f"{name}: the fused kernels take float16, bfloat16 or float32, got {x.dtype} (use the reference op)"
        )


def _require_launch(x: Tensor) -> None:
    if not can_launch(x.device, _KERNELS):
        raise launch_error(x.device)


def haar_dwt2_fused(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Triton :func:`haar_dwt2_ref`: (B, C, H, W) -> (LL, H, V, D)."""
    if exporting():
        return haar_dwt2_ref(x)
    _check_image("x", x)
    _require_launch(x)
    return torch.ops.ddif.haar_dwt2(x)


def haar_idwt2_fused(ll: Tensor, h: Tensor, v: Tensor, d: Tensor) -> Tensor:
    """Triton :func:`haar_idwt2_ref`: four (B, C, h, w) bands -> (B, C, 2h, 2w)."""
    if exporting():
        return haar_idwt2_ref(ll, h, v, d)
    for name, t in (("ll", ll), ("h", h), ("v", v), ("d", d)):
        _check_image(name, t)
        if t.shape != ll.shape or t.dtype != ll.dtype or t.device != ll.device:
            raise ValueError(
                f"{name}: shape {tuple(t.shape)} {t.dtype} on {t.device} does not match "
                f"ll: {tuple(ll.shape)} {ll.dtype} on {ll.device}"
            )
    _require_launch(ll)
    return torch.ops.ddif.haar_synthesis(ll, h, v, d, 2 * ll.shape[-2], 2 * ll.shape[-1])


def _check_detail_order(detail_order: str) -> None:
    if not isinstance(detail_order, str) or sorted(detail_order) != ["D", "H", "V"]:
        raise ValueError(f"detail_order must be a permutation of 'HDV', got {detail_order!r}")


def wavelet_condition_fused(lms: Tensor, guide: Tensor, detail_order: str = "HDV", fuse_resize: bool = True) -> Tensor:
    """Triton :func:`wavelet_condition_ref`: one pass from (lms, guide) to the (B, C + 3P, H, W)
    condition. With ``fuse_resize=False`` the kernel writes the half-size condition and
    ``F.interpolate`` resizes it (same result; kept to measure what the fused resize gains)."""
    if exporting():
        return wavelet_condition_ref(lms, guide, detail_order)
    _check_image("lms", lms)
    _check_image("guide", guide)
    _check_detail_order(detail_order)
    if guide.shape[0] != lms.shape[0] or guide.shape[-2:] != lms.shape[-2:]:
        raise ValueError(
            f"guide: shape {tuple(guide.shape)} does not match lms {tuple(lms.shape)} (same batch and H x W expected)"
        )
    if guide.device != lms.device:
        raise ValueError(f"guide is on {guide.device} but lms on {lms.device}")
    dtype = torch.promote_types(lms.dtype, guide.dtype)
    lms, guide = lms.to(dtype), guide.to(dtype)
    _require_launch(lms)
    if fuse_resize:
        return torch.ops.ddif.wavelet_condition(lms, guide, detail_order, True)
    half = torch.ops.ddif.wavelet_condition(lms, guide, detail_order, False)
    return F.interpolate(half, size=lms.shape[-2:], mode="bilinear", align_corners=False)


def _status() -> dict[str, str | bool]:
    return status_entry("haar_dwt (triton)")


def wavelet_condition(
    lms: Tensor, guide: Tensor, detail_order: str = "HDV", *, fused: bool = False, fuse_resize: bool = True
) -> Tensor:
    """The wavelet condition: the fused Triton kernel when ``fused`` and it can run here (CUDA, or
    CPU under ``TRITON_INTERPRET=1``; never while a graph is exported), else the reference.
    ``fuse_resize`` chooses the one-pass kernel (DWT + bilinear resize) over the half-size kernel
    followed by ``F.interpolate``; ``benchmarks/ops.py`` measures both."""
    if fused and not exporting() and fused_ready(lms, guide):
        return wavelet_condition_fused(lms, guide, detail_order, fuse_resize)
    return wavelet_condition_ref(lms, guide, detail_order)
