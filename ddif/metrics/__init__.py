"""Pansharpening / hyperspectral-fusion quality indices in torch, following the toolbox of
G. Vivone et al. (IEEE GRSM 2021; IEEE TGRS 2015).

Reduced resolution (against a reference, Wald protocol): :func:`sam`, :func:`ergas`,
:func:`q2n`, :func:`q_index`, :func:`scc`, :func:`psnr`, :func:`ssim`,
:func:`reduced_resolution_metrics`. Full resolution (no reference): :func:`d_lambda`,
:func:`d_s`, :func:`hqnr`, :func:`full_resolution_metrics`.

Inputs are (C, H, W) or (B, C, H, W) float tensors on the same scale; each function returns a
Python float for unbatched input and a (B,) float64 tensor for batched input.
"""

from __future__ import annotations

from .hypercomplex import q2n
from .no_reference import d_lambda, d_s, full_resolution_metrics, hqnr
from .reference import ergas, psnr, q_index, reduced_resolution_metrics, sam, scc, ssim

__all__ = [
    "sam",
    "ergas",
    "q2n",
    "q_index",
    "scc",
    "psnr",
    "ssim",
    "reduced_resolution_metrics",
    "d_lambda",
    "d_s",
    "hqnr",
    "full_resolution_metrics",
]
