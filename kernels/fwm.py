"""FWM (fine-grained wavelet modulation) linear attention of DDIF (Cao et al., 2024).

With ``q`` from the decoder features and ``k, v`` from the wavelet condition (all (B, dim, H, W)):

1. q is softmaxed over the height axis, k over the width axis;
2. channels split into ``heads`` groups of d = dim / heads; q is scaled by 1 / sqrt(d);
3. ``context[head] = sum over positions of k v^T`` (a d x d matrix per head and image);
4. ``out = context^T q``.

Because k and v depend on the condition only, ``context`` is computed once per image
(:func:`fwm_context_ref`) and applied at every sampling step (:func:`fwm_apply_ref`).
"""
from __future__ import annotations

import math

import torch

__all__ = ["fwm_context_ref", "fwm_apply_ref", "fwm_attention_ref"]


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


class FWMAttention(torch.nn.Module):
    """FWM linear attention with a cacheable context; ``fused=True`` selects the Triton kernels."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        self.fused = False

    def context(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return fwm_context_ref(k, v, self.heads)

    def forward(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return fwm_apply_ref(q, context, self.heads)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, fused={self.fused}"
