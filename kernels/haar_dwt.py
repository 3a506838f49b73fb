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
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["haar_dwt2_ref", "haar_idwt2_ref", "wavelet_condition_ref"]


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
    top, bottom = a + b, c + d          # row sums
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
    top = torch.stack((a, b), dim=-1).flatten(-2)        # interleave columns
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


class WaveletCondition(torch.nn.Module):
    """Computes the wavelet condition; ``fused=True`` selects the Triton kernel where it is live."""

    def __init__(self, detail_order: str = "HDV"):
        super().__init__()
        self.detail_order = detail_order
        self.fused = False

    def forward(self, lms: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return wavelet_condition_ref(lms, guide, self.detail_order)

    def extra_repr(self) -> str:
        return f"detail_order={self.detail_order!r}, fused={self.fused}"
