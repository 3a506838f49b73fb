"""FWM (fine-grained wavelet modulation) linear attention of DDIF (Cao et al., 2024).

With ``q`` from the decoder features and ``k, v`` from the wavelet condition (all (B, dim, H, W)):

1. q is softmaxed over the height axis, k over the width axis;
2. channels split into ``heads`` groups of d = dim / heads; q is scaled by 1 / sqrt(d);
3. ``context[head] = sum over positions of k v^T`` (a d x d matrix per head and image);
4. ``out = context^T q``.

Because k and v depend on the condition only, ``context`` is computed once per image
(:func:`fwm_context_ref`) and applied at every sampling step (:func:`fwm_apply_ref`).

Fused path: Triton kernels (:mod:`ddif.kernels._fwm_triton`, imported on first use) that never write
the softmaxed q or k (launched through ``torch.library.wrap_triton``), registered as
``torch.library.triton_op`` ops ``ddif::fwm_context`` and
``ddif::fwm_apply`` with fake (meta) kernels and autograd (their backward passes are Triton
kernels too: ``ddif::fwm_context_backward``, ``ddif::fwm_apply_backward``). The public
``fwm_*_fused`` functions validate inputs, apply the autocast policy (floating inputs cast to the
autocast dtype, fp32 accumulation inside) and use the references while a graph is exported.
"""

from __future__ import annotations

import math

import torch
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
from ddif.kernels.dispatch import autocast_dtype, autocast_inputs, exporting

__all__ = [
    "fwm_context_ref",
    "fwm_apply_ref",
    "fwm_attention_ref",
    "fwm_context_fused",
    "fwm_apply_fused",
    "fwm_attention_fused",
    "fused_ready",
    "fwm_context",
    "fwm_apply",
]

_KERNELS = "ddif.kernels._fwm_triton"


def fwm_context_ref(k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, dim, H, W) x2 -> context (B, heads, d, d); k is softmaxed over the width axis."""
    b, dim, h, w = k.shape
    k = k.softmax(dim=-1)
    k = k.reshape(b, heads, dim // heads, h * w)
    v = v.reshape(b, heads, dim // heads, h * w)
    return torch.matmul(k, v.transpose(-1, -2))


def fwm_apply_ref(q: torch.Tensor, context: torch.Tensor, heads: int) -> torch.Tensor:
    """q (B, dim, H, W), context (B, heads, d, d) -> out = context^T softmax_H(q) / sqrt(d)."""
    b, dim, h, w = q.shape
    d = dim // heads
    q = q.softmax(dim=-2) * (1.0 / math.sqrt(d))
    q = q.reshape(b, heads, d, h * w)
    out = torch.matmul(context.transpose(-1, -2), q)
    return out.reshape(b, dim, h, w)


def fwm_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return fwm_apply_ref(q, fwm_context_ref(k, v, heads), heads)


# ----------------------------------------------------------------------------------- custom ops
def _kernels():
    return load_kernels(_KERNELS)


def _register_ops() -> None:
    """The ``torch.library`` ops, their fakes and autograd (run once, when the kernels load:
    see :func:`ddif.kernels._triton_utils.on_kernels_loaded`)."""

    # The forward ops return the softmax statistics (log-sum-exp of k's rows / q's columns, fp32) as
    # a second output: the backward needs them, and they are 1/W or 1/H of the input.
    @triton_kernel_op("ddif::fwm_context", _KERNELS)
    def _fwm_context_op(k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
        return _kernels().fwm_context(k, v, heads)

    @_fwm_context_op.register_fake
    def _(k, v, heads):
        b, dim, h, _ = k.shape
        d = dim // heads
        return k.new_empty((b, heads, d, d)), k.new_empty((b, dim, h), dtype=torch.float32)

    @triton_kernel_op("ddif::fwm_context_backward", _KERNELS)
    def _fwm_context_backward_op(grad: Tensor, k: Tensor, v: Tensor, lse: Tensor, heads: int) -> tuple[Tensor, Tensor]:
        d = k.shape[1] // heads
        if tuple(grad.shape) != (k.shape[0], heads, d, d) or tuple(lse.shape) != tuple(k.shape[:3]):
            raise ValueError(
                f"fwm_context_backward: grad {tuple(grad.shape)} / lse {tuple(lse.shape)} do not match "
                f"k {tuple(k.shape)} with {heads} heads"
            )
        return _kernels().fwm_context_backward(grad, k, v, lse, heads)

    @_fwm_context_backward_op.register_fake
    def _(grad, k, v, lse, heads):
        return (
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
        )

    def _context_setup(ctx, inputs, output):
        k, v, ctx.heads = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(k, v, output[1])

    def _context_backward(ctx, grad, _grad_lse):
        k, v, lse = ctx.saved_tensors
        gk, gv = torch.ops.ddif.fwm_context_backward(grad, k, v, lse, ctx.heads)
        return gk, gv, None

    torch.library.register_autograd("ddif::fwm_context", _context_backward, setup_context=_context_setup)

    @triton_kernel_op("ddif::fwm_apply", _KERNELS)
    def _fwm_apply_op(q: Tensor, context: Tensor, heads: int) -> tuple[Tensor, Tensor]:
        return _kernels().fwm_apply(q, context, heads)

    @_fwm_apply_op.register_fake
    def _(q, context, heads):
        b, dim, _, w = q.shape
        return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty((b, dim, w), dtype=torch.float32)

    @triton_kernel_op("ddif::fwm_apply_backward", _KERNELS)
    def _fwm_apply_backward_op(
        grad: Tensor, q: Tensor, context: Tensor, lse: Tensor, heads: int
    ) -> tuple[Tensor, Tensor]:
        if grad.shape != q.shape or tuple(lse.shape) != (q.shape[0], q.shape[1], q.shape[3]):
            raise ValueError(
                f"fwm_apply_backward: grad {tuple(grad.shape)} / lse {tuple(lse.shape)} do not match q {tuple(q.shape)}"
            )
        return _kernels().fwm_apply_backward(grad, q, context, lse, heads)

    @_fwm_apply_backward_op.register_fake
    def _(grad, q, context, lse, heads):
        return (
            torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(context, memory_format=torch.contiguous_format),
        )

    def _apply_setup(ctx, inputs, output):
        q, context, ctx.heads = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(q, context, output[1])

    def _apply_backward(ctx, grad, _grad_lse):
        q, context, lse = ctx.saved_tensors
        gq, gctx = torch.ops.ddif.fwm_apply_backward(grad, q, context, lse, ctx.heads)
        return gq, gctx, None

    torch.library.register_autograd("ddif::fwm_apply", _apply_backward, setup_context=_apply_setup)


on_kernels_loaded(_KERNELS, _register_ops)


# ----------------------------------------------------------------------------------- public API
def fused_ready(*tensors: Tensor) -> bool:
    """Whether the Triton kernels can take these tensors here (device, dtype after the autocast
    policy, non-empty)."""
    t = tensors[0]
    cast = autocast_dtype(t.device.type) is not None
    ok_dtype = (lambda x: x.is_floating_point()) if cast else (lambda x: x.dtype in KERNEL_DTYPES)
    return all(ok_dtype(x) and x.numel() > 0 and x.device == t.device for x in tensors) and can_launch(
        t.device, _KERNELS
    )


def _check_features(name: str, x: Tensor, heads: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, dim, H, W) tensor, got {shape}")
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{name}: the fused FWM kernels take float16, bfloat16 or float32, got {x.dtype}")
    if not isinstance(heads, int) or heads <= 0 or x.shape[1] % heads:
        raise ValueError(f"{name}: {x.shape[1]} channels cannot be split into heads={heads!r} heads")


def fwm_context_fused(k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Triton :func:`fwm_context_ref`: (B, dim, H, W) x2 -> (B, heads, d, d)."""
    if exporting():
        return fwm_context_ref(k, v, heads)
    k, v = autocast_inputs(k, v)
    _check_features("k", k, heads)
    _check_features("v", v, heads)
    if k.shape != v.shape:
        raise ValueError(f"v: shape {tuple(v.shape)} does not match k {tuple(k.shape)}")
    if k.device != v.device:
        raise ValueError(f"v is on {v.device} but k on {k.device}")
    dtype = torch.promote_types(k.dtype, v.dtype)
    k, v = k.to(dtype), v.to(dtype)
    if not can_launch(k.device, _KERNELS):
        raise launch_error(k.device)
    return torch.ops.ddif.fwm_context(k, v, heads)[0]


def fwm_apply_fused(q: Tensor, context: Tensor, heads: int) -> Tensor:
    """Triton :func:`fwm_apply_ref`: q (B, dim, H, W), context (B, heads, d, d) -> (B, dim, H, W).

    This is the precomputed-context mode (the sampler's condition cache). The output has q's
    dtype; context may be in another floating dtype (it is read in fp32 and rounded to q's dtype
    for the matrix product, as autocast would do)."""
    if exporting():
        return fwm_apply_ref(q, context, heads)
    q, context = autocast_inputs(q, context)
    _check_features("q", q, heads)
    d = q.shape[1] // heads
    if not isinstance(context, Tensor) or tuple(context.shape) != (q.shape[0], heads, d, d):
        shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(
            f"context: expected shape {(q.shape[0], heads, d, d)} for q {tuple(q.shape)} and heads={heads}, got {shape}"
        )
    if context.dtype not in KERNEL_DTYPES:
        raise ValueError(f"context: the fused FWM kernels take float16, bfloat16 or float32, got {context.dtype}")
    if context.device != q.device:
        raise ValueError(f"context is on {context.device} but q on {q.device}")
    if not can_launch(q.device, _KERNELS):
        raise launch_error(q.device)
    return torch.ops.ddif.fwm_apply(q, context, heads)[0]


def fwm_attention_fused(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    return fwm_apply_fused(q, fwm_context_fused(k, v, heads), heads)


def _status() -> dict[str, str | bool]:
    return status_entry("fwm (triton)")


def fwm_context(k: Tensor, v: Tensor, heads: int, *, fused: bool = False) -> Tensor:
    """FWM context: the fused Triton kernels when ``fused`` and they can run here (CUDA, or CPU
    under ``TRITON_INTERPRET=1``; never while a graph is exported), else the reference."""
    if fused and not exporting() and fused_ready(k, v):
        return fwm_context_fused(k, v, heads)
    return fwm_context_ref(k, v, heads)


def fwm_apply(q: Tensor, context: Tensor, heads: int, *, fused: bool = False) -> Tensor:
    """FWM apply (the query side), fused or reference as :func:`fwm_context` chooses."""
    if fused and not exporting() and fused_ready(q, context):
        return fwm_apply_fused(q, context, heads)
    return fwm_apply_ref(q, context, heads)
