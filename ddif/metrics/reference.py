"""Reduced-resolution (with reference) quality indices, as in the pansharpening toolbox.

Conventions follow the toolbox of G. Vivone et al., "A new benchmark based on recent advances in
multispectral pansharpening", IEEE GRSM 9(1), 2021 (``indexes_evaluation.m``: SAM, ERGAS, SCC, Q,
Q2n) and "A critical comparison among pansharpening algorithms", IEEE TGRS 53(5), 2015. PSNR and
SSIM follow the hyperspectral-fusion literature (per band, averaged).

Every function takes ``pred`` and ``target`` (the reference) as (C, H, W) or (B, C, H, W) tensors
on the same scale, and returns a Python float for unbatched input or a (B,) float64 tensor (one
value per image) for batched input. Statistics are computed in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import MetricValue, box_sum, check_block, check_ratio, finish, prepare_pair, uiqi_from_moments
from .hypercomplex import q2n

__all__ = ["sam", "ergas", "q_index", "q2n", "scc", "psnr", "ssim", "reduced_resolution_metrics"]


def sam(pred: torch.Tensor, target: torch.Tensor) -> MetricValue:
    """Spectral Angle Mapper in degrees (Yuhas et al. 1992; toolbox ``SAM.m``); 0 = perfect.

    The angle between the two spectra is computed at each pixel and averaged over the pixels where
    both spectra are non-zero (pixels with a zero spectrum are skipped, as in the toolbox). Returns
    NaN when no pixel qualifies. Invariant to a positive scaling of either spectrum at any pixel.
    """
    p, t, unbatched = prepare_pair(pred, target)
    dot = (p * t).sum(dim=1)
    norms = (p.pow(2).sum(dim=1) * t.pow(2).sum(dim=1)).sqrt()
    valid = norms > 0
    cos = (dot / torch.where(valid, norms, torch.ones_like(norms))).clamp(-1.0, 1.0)
    angle = torch.where(valid, torch.acos(cos), torch.zeros_like(cos))
    count = valid.flatten(1).sum(1)
    mean = angle.flatten(1).sum(1) / count.clamp_min(1)
    mean = torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
    return finish(torch.rad2deg(mean), unbatched)


def ergas(pred: torch.Tensor, target: torch.Tensor, ratio: int = 4) -> MetricValue:
    """ERGAS (Ranchin & Wald 2000; toolbox ``ERGAS.m``); 0 = perfect.

    ``100 / ratio * sqrt(mean_k(MSE_k / mean(target_k)^2))`` with ``ratio`` the PAN/MS resolution
    ratio (the toolbox's 100/ratio convention, i.e. h/l = 1/ratio). A band whose reference mean is
    0 makes the index infinite.
    """
    check_ratio(ratio)
    p, t, unbatched = prepare_pair(pred, target)
    mse = (p - t).pow(2).mean(dim=(2, 3))
    mean_sq = t.mean(dim=(2, 3)).pow(2)
    value = (100.0 / ratio) * (mse / mean_sq).mean(dim=1).sqrt()
    return finish(value, unbatched)


def q_index(pred: torch.Tensor, target: torch.Tensor, block_size: int = 32) -> MetricValue:
    """Q (UIQI, Wang & Bovik 2002) averaged over bands, the toolbox's ``Q.m`` / ``img_qi.m``; 1 = perfect.

    For each band the index is computed on every ``block_size`` x ``block_size`` window sliding by
    one pixel ('valid' windows only) and averaged over windows; the result is the mean over bands.
    Degenerate windows are handled as described in :func:`ddif.metrics._common.uiqi_from_moments`.
    """
    p, t, unbatched = prepare_pair(pred, target)
    check_block("target", t, block_size)
    n = float(block_size * block_size)
    # Second moments from per-band centred data (covariance is shift invariant, so this only
    # avoids cancellation in the integral-image sums); means from the raw data.
    shift_p = p.mean(dim=(2, 3), keepdim=True)
    shift_t = t.mean(dim=(2, 3), keepdim=True)
    pc, tc = p - shift_p, t - shift_t
    mp = box_sum(pc, block_size) / n
    mt = box_sum(tc, block_size) / n
    vp = box_sum(pc * pc, block_size) / n - mp**2
    vt = box_sum(tc * tc, block_size) / n - mt**2
    cpt = box_sum(pc * tc, block_size) / n - mp * mt
    q = uiqi_from_moments(mp + shift_p, mt + shift_t, vp.clamp_min(0), vt.clamp_min(0), cpt)
    return finish(q.mean(dim=(1, 2, 3)), unbatched)


def _sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    sobel = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]], dtype=x.dtype, device=x.device)
    weight = torch.stack([sobel, sobel.T]).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    g = F.conv2d(x, weight, padding=1, groups=c)
    return g.view(x.shape[0], c, 2, *x.shape[-2:]).pow(2).sum(dim=2).sqrt()


def scc(pred: torch.Tensor, target: torch.Tensor) -> MetricValue:
    """Spatial correlation coefficient, the toolbox's ``SCC.m`` (Vivone et al. 2021); 1 = perfect.

    Convention (2021 toolbox, Sobel): the one-pixel border is cut, each band's gradient magnitude
    is taken with the horizontal and vertical Sobel filters (zero padding, MATLAB ``imfilter``
    default), and the index is the normalised inner product of the two gradient-magnitude stacks
    over all bands and pixels, ``sum(Gp Gt) / sqrt(sum(Gp^2) sum(Gt^2))`` (not mean-centred).
    (The 2015 toolbox used a Laplacian high-pass and a centred correlation coefficient instead.)
    """
    p, t, unbatched = prepare_pair(pred, target)
    if min(t.shape[-2:]) < 3:
        raise ValueError(f"target: spatial size {t.shape[-2]}x{t.shape[-1]} is too small for SCC (needs 3x3)")
    gp = _sobel_magnitude(p[..., 1:-1, 1:-1]).flatten(1)
    gt = _sobel_magnitude(t[..., 1:-1, 1:-1]).flatten(1)
    denom = (gp.pow(2).sum(1) * gt.pow(2).sum(1)).sqrt()
    value = (gp * gt).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom))
    value = torch.where(denom > 0, value, torch.full_like(value, float("nan")))
    return finish(value, unbatched)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> MetricValue:
    """Peak signal-to-noise ratio in dB: per band ``10 log10(data_range^2 / MSE_k)``, averaged over
    bands (the hyperspectral-fusion convention). A perfect prediction gives ``inf`` (not capped),
    as does any band reproduced exactly."""
    if not (isinstance(data_range, (int, float)) and not isinstance(data_range, bool) and data_range > 0):
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    p, t, unbatched = prepare_pair(pred, target)
    mse = (p - t).pow(2).mean(dim=(2, 3))
    per_band = 10.0 * torch.log10(data_range**2 / mse)  # mse = 0 -> +inf
    return finish(per_band.mean(dim=1), unbatched)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> MetricValue:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13(4), 2004); 1 = perfect.

    Gaussian window (11 x 11, sigma 1.5), C1 = (k1 L)^2, C2 = (k2 L)^2 with L = ``data_range``,
    'valid' windows only (as Wang's ``ssim.m``), mean SSIM per band, averaged over bands.
    """
    if not (isinstance(data_range, (int, float)) and not isinstance(data_range, bool) and data_range > 0):
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    p, t, unbatched = prepare_pair(pred, target)
    if min(t.shape[-2:]) < window_size:
        raise ValueError(
            f"target: spatial size {t.shape[-2]}x{t.shape[-1]} is smaller than the SSIM window "
            f"{window_size}; pass a smaller window_size"
        )
    c = t.shape[1]
    g = _gaussian_window(window_size, sigma, p.dtype, p.device)
    wv = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    wh = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, wv, groups=c), wh, groups=c)

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return finish(ssim_map.mean(dim=(1, 2, 3)), unbatched)


def reduced_resolution_metrics(
    pred: torch.Tensor, gt: torch.Tensor, ratio: int = 4, data_range: float = 1.0, block_size: int = 32, border: int = 0
) -> dict[str, MetricValue]:
    """All reduced-resolution indices of ``pred`` against ``gt``:
    ``{"SAM", "ERGAS", "Q2n", "Q", "SCC", "PSNR", "SSIM"}`` (floats, or (B,) tensors when batched).

    ``border``: pixels cut from every side before evaluation (the toolbox's ``flag_cut_bounds``;
    PanCollection evaluations commonly cut 21 at ratio 4; default 0 = whole image). ``block_size``
    is used by Q2n (blocks and shift) and Q (sliding window); use a smaller one for small images.
    """
    p, t, _ = prepare_pair(pred, gt, "pred", "gt")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(f"border: expected a non-negative integer, got {border!r}")
    if border:
        if 2 * border >= min(t.shape[-2:]):
            raise ValueError(f"border {border} leaves nothing of a {t.shape[-2]}x{t.shape[-1]} image")
        pred = pred[..., border:-border, border:-border]
        gt = gt[..., border:-border, border:-border]
    return {
        "SAM": sam(pred, gt),
        "ERGAS": ergas(pred, gt, ratio),
        "Q2n": q2n(pred, gt, block_size, block_size),
        "Q": q_index(pred, gt, block_size),
        "SCC": scc(pred, gt),
        "PSNR": psnr(pred, gt, data_range),
        "SSIM": ssim(pred, gt, data_range),
    }
