"""Classical pansharpening baselines in torch, vectorised over (B, C, H, W).

Component substitution (CS): Brovey, Gram-Schmidt (GS) and adaptive Gram-Schmidt (GSA);
multiresolution analysis (MRA): MTF-GLP with high-pass modulation (MTF-GLP-HPM). Each follows the
formulation of G. Vivone, L. Alparone, J. Chanussot, M. Dalla Mura, A. Garzelli, G. Licciardi,
R. Restaino and L. Wald, "A critical comparison among pansharpening algorithms", IEEE TGRS 53(5),
2015, and of the toolbox that accompanies G. Vivone et al., "A new benchmark based on recent
advances in multispectral pansharpening", IEEE GRSM 9(1), 2021.

Shared conventions:
- ``lms`` is the MS image interpolated to the PAN grid, (B, C, H, W) or (C, H, W); ``pan`` the
  guide, (B, P, H, W) or (P, H, W), same spatial size. The baselines are defined for a single PAN
  band; a guide with P > 1 bands (an RGB image in hyperspectral fusion) is reduced to its band
  mean first.
- Statistics (means, standard deviations, covariances, regressions) are per image and computed in
  float64; low-pass filters run in float32 (float64 inputs: float64). The output has ``lms``'s
  dtype and shape and is not clamped (CS and HPM can leave the input's range slightly).
- Divisions by an intensity or a low-passed PAN add the machine epsilon, as the toolbox does;
  inputs should be non-negative radiances / reflectances (DN scaled to [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ddif.data.mtf import bicubic_upsample, decimate, mtf_filter, sensor_gains, upsample
from ddif.utils.validation import check_image

__all__ = ["bicubic", "brovey", "gs", "gsa", "gsa_synthesized", "mtf_glp_hpm", "mtf_glp_synthesized"]

_EPS = torch.finfo(torch.float64).eps
HPM_FLOOR = 0.05  # MTF-GLP-HPM's divisor floor, a fraction of the band mean (see mtf_glp_hpm)
HPM_MAX_MODULATION = 4.0  # and its largest modulation gain


def _prepare(
    lms: torch.Tensor,
    pan: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int | None = None,
    keep_guide_bands: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool, torch.dtype]:
    """Validate and return float64 (lms, pan, ms or None, unbatched, out dtype); a multi-band
    guide is reduced to its band mean unless ``keep_guide_bands``."""
    unbatched = isinstance(lms, torch.Tensor) and lms.dim() == 3
    x = check_image("lms", lms, allow_unbatched=True)
    if isinstance(pan, torch.Tensor) and pan.dim() in (3, 4) and (pan.dim() == 3) != unbatched:
        raise ValueError(
            f"pan: shape {tuple(pan.shape)} does not match the {'un' if unbatched else ''}batched "
            f"lms of shape {tuple(lms.shape)}"
        )
    p = check_image(
        "pan",
        pan,
        allow_unbatched=True,
        batch=x.shape[0],
        spatial=x.shape[-2:],
        spatial_of="lms",
        channel_what="guide bands",
    )
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1):
        raise ValueError(f"ratio: expected a positive integer scale ratio, got {ratio!r}")
    m = None
    if ms is not None:
        if isinstance(ms, torch.Tensor) and ms.dim() in (3, 4) and (ms.dim() == 3) != unbatched:
            raise ValueError(
                f"ms: shape {tuple(ms.shape)} does not match the {'un' if unbatched else ''}batched "
                f"lms of shape {tuple(lms.shape)}"
            )
        if ratio is None:
            raise ValueError("ratio: needed to check ms against lms")
        h, w = x.shape[-2:]
        if h % ratio or w % ratio:
            raise ValueError(f"lms: spatial size {h}x{w} is not divisible by the ratio {ratio}")
        m = check_image(
            "ms",
            ms,
            allow_unbatched=True,
            batch=x.shape[0],
            channels=x.shape[1],
            spatial=(h // ratio, w // ratio),
            spatial_of=f"lms / ratio {ratio}",
        ).to(torch.float64)
    p = p.to(torch.float64)
    if p.shape[1] > 1 and not keep_guide_bands:
        p = p.mean(dim=1, keepdim=True)
    return x.to(torch.float64), p, m, unbatched, lms.dtype


def _finish(fused: torch.Tensor, unbatched: bool, dtype: torch.dtype) -> torch.Tensor:
    fused = fused.to(dtype)
    return fused[0] if unbatched else fused


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(-2, -1), keepdim=True)


def _std(x: torch.Tensor) -> torch.Tensor:
    return x.std(dim=(-2, -1), keepdim=True)  # unbiased, as MATLAB std2


def _cov_over_var(target: torch.Tensor, intensity: torch.Tensor) -> torch.Tensor:
    """g_k = cov(I, target_k) / var(I) per image and band: (B, C, 1, 1)."""
    i0 = intensity - _mean(intensity)
    t0 = target - _mean(target)
    return _mean(i0 * t0) / _mean(i0 * i0).clamp_min(_EPS)


def _filter(fn, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return fn(x.to(torch.float32), *args, **kwargs).to(torch.float64)


def brovey(lms: torch.Tensor, pan: torch.Tensor) -> torch.Tensor:
    """Brovey transform (Gillespie, Kahle and Walker 1987; toolbox ``BT``).

    ``fused_k = lms_k * P' / (I + eps)`` with the intensity ``I`` the band mean of ``lms`` and
    ``P'`` the PAN histogram-matched to ``I`` (same mean and standard deviation). Every pixel's
    spectrum is scaled by one factor, so the spectral angle to ``lms`` is 0 and the fused band mean
    equals ``P'`` at every pixel.
    """
    x, p, _, unbatched, dtype = _prepare(lms, pan)
    intensity = x.mean(dim=1, keepdim=True)
    p_eq = (p - _mean(p)) * (_std(intensity) / _std(p).clamp_min(_EPS)) + _mean(intensity)
    return _finish(x * (p_eq / (intensity + _EPS)), unbatched, dtype)


def _cs_inject(x: torch.Tensor, intensity: torch.Tensor, p_detail: torch.Tensor) -> torch.Tensor:
    """fused_k = lms_k + g_k (P - I), with zero-mean P and I and g_k = cov(I, lms_k) / var(I)."""
    i0 = intensity - _mean(intensity)
    gains = _cov_over_var(x, i0)
    return x + gains * (p_detail - i0)


def gs(lms: torch.Tensor, pan: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt spectral sharpening (Laben and Brower, US patent 6,011,875, 2000) in its CS form
    (Aiazzi et al. 2007; toolbox ``GS``): intensity = band mean of ``lms``, PAN matched to its mean
    and standard deviation, injection gains ``g_k = cov(I, lms_k) / var(I)``."""
    x, p, _, unbatched, dtype = _prepare(lms, pan)
    intensity = x.mean(dim=1, keepdim=True)
    i0 = intensity - _mean(intensity)
    p_eq = (p - _mean(p)) * (_std(i0) / _std(p).clamp_min(_EPS))
    return _finish(_cs_inject(x, intensity, p_eq), unbatched, dtype)


def _b3_atrous_lowpass(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Approximation plane of the a-trous (undecimated) wavelet with the B3-spline kernel
    [1 4 6 4 1]/16 dilated by 2^j at level j (Starck and Murtagh), replicate boundaries."""
    base = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    y = x
    for level in range(levels):
        d = 2**level
        k = torch.zeros(4 * d + 1, dtype=x.dtype, device=x.device)
        k[::d] = base
        pad = 2 * d
        c = y.shape[1]
        y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return y


def gsa(lms: torch.Tensor, pan: torch.Tensor, ms: torch.Tensor | None = None, ratio: int = 4) -> torch.Tensor:
    """Adaptive Gram-Schmidt (B. Aiazzi, S. Baronti and M. Selva, "Improving component substitution
    pansharpening through multivariate regression of MS+Pan data", IEEE TGRS 45(10), 2007;
    toolbox ``GSA``).

    The intensity is the linear combination of the (mean-removed) MS bands plus a constant that
    best fits, in the least-squares sense and at the MS scale, the low-passed and decimated PAN:
    ``[ms_0, 1] alpha ~ LP(P_0)``, regressed per image on ``ms`` (the original MS,
    (B, C, H/ratio, W/ratio)). The same weights applied to ``lms`` give ``I``; the details
    ``P_0 - I_0`` are injected with ``g_k = cov(I, lms_k) / var(I)``.

    The PAN low-pass is the approximation plane of the a-trous B3-spline wavelet at level
    ceil(log2(ratio)) followed by the toolbox's decimation (the toolbox's ``LPfilterPlusDec``
    reconstructs it through its undecimated wavelet, a slightly smoother variant of the same
    filter). With ``ms=None`` the MS is taken as ``lms`` decimated on the toolbox grid, which
    recovers it exactly when ``lms`` was made by :func:`ddif.data.mtf.interp23tap` or
    :func:`ddif.data.mtf.bicubic_upsample` (both interpolating).
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ValueError(f"ratio: expected a positive integer scale ratio, got {ratio!r}")
    x, p, m, unbatched, dtype = _prepare(lms, pan, _ms_or_decimated(lms, ms, ratio), ratio)
    assert m is not None  # ms was given (or made) above
    b, c = x.shape[:2]
    p0 = p - _mean(p)
    p_low = decimate(_filter(_b3_atrous_lowpass, p0, max(1, math.ceil(math.log2(ratio)))), ratio)
    m0 = m - _mean(m)
    design = torch.cat([m0, torch.ones_like(m0[:, :1])], dim=1).flatten(2).transpose(1, 2)  # (B, n, C+1)
    alpha = torch.linalg.lstsq(design, p_low.flatten(2).transpose(1, 2)).solution  # (B, C+1, 1)
    x0 = x - _mean(x)
    intensity = (x0 * alpha[:, :c].view(b, c, 1, 1)).sum(dim=1, keepdim=True) + alpha[:, c].view(b, 1, 1, 1)
    return _finish(_cs_inject(x, intensity, p0), unbatched, dtype)


def mtf_glp_hpm(
    lms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
    floor: float = HPM_FLOOR,
) -> torch.Tensor:
    """MTF-GLP with high-pass modulation (B. Aiazzi, L. Alparone, S. Baronti, A. Garzelli and
    M. Selva, "MTF-tailored multiscale fusion of high-resolution MS and Pan imagery", PE&RS 72(5),
    2006; "An MTF-based spectral distortion minimizing model for pan-sharpening of very high
    resolution multispectral images of urban areas", URBAN 2003; toolbox ``MTF_GLP_HPM``).

    Per band k: the PAN is equalised to the band, ``P_k = (P - mean P) std(lms_k) / std(LP(P)) +
    mean(lms_k)`` (LP: Gaussian with gain 0.3 at Nyquist, the toolbox's ``LPfilterGauss``); its
    low-resolution version ``P_k^L`` goes through the generalised Laplacian pyramid: the band's
    MTF-matched filter, decimation by ``ratio`` and interpolation back (23-tap for power-of-2
    ratios, bicubic otherwise); the fusion multiplies ``lms_k`` by the PAN's high-pass modulation,
    ``fused_k = lms_k * P_k / P_k^L``. ``sensor`` picks the MTF gains
    (:data:`ddif.data.sensors.SENSOR_MTF`), or give the per-band gains themselves (e.g. for a band
    subset of a sensor: :meth:`ddif.data.sensors.Sensor.mtf_gains`). H and W must be divisible by
    ``ratio``.

    Dark pixels. The equalisation is a linear stretch: where the PAN is darker, relative to its
    mean, than the band is (shadows, water in the blue band of 11-bit VHR data), ``P_k`` goes
    negative and ``P_k^L`` passes through 0, so the toolbox's ratio (with only ``eps`` below it)
    flips sign or explodes (measured on WorldView-2: negative products and pixels at the top of
    the 16-bit range). Here ``P_k`` is clipped at 0 (a radiance is non-negative) and the divisor
    is floored at ``floor`` x mean(lms_k) (default 5 %), and the modulation gain ``P_k / P_k^L``
    capped at 4. On data where none of the three guards acts (``P_k`` positive, ``P_k^L`` above the
    floor, gains below 4: most scenes) the result is the toolbox's HPM; elsewhere the gain stays
    bounded and the product non-negative.
    """
    _check_pyramid_ratio(ratio)
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor: expected a fraction in [0, 1), got {floor!r}")
    x, p, _, unbatched, dtype = _prepare(lms, pan)
    _check_divisible_by(x, ratio)
    gains = _band_gains(sensor, x.shape[1])
    p_lp = _filter(mtf_filter, p, 0.3, ratio)
    p_eq = (p - _mean(p)) * (_std(x) / _std(p_lp).clamp_min(_EPS)) + _mean(x)  # (B, C, H, W)
    p_eq = p_eq.clamp_min(0.0)
    return _finish(_hpm_modulate(x, p_eq, gains, ratio, floor), unbatched, dtype)


def _hpm_modulate(
    x: torch.Tensor, p_eq: torch.Tensor, gains: Sequence[float], ratio: int, floor: float
) -> torch.Tensor:
    """MTF-GLP-HPM's fusion of prepared tensors: ``x * P / P^L`` with the pyramid (each band's MTF
    filter, decimation, interpolation back) and the divisor floor and gain cap of
    :func:`mtf_glp_hpm`; ``p_eq`` (B, C, H, W) is already on each band's scale."""
    method = "interp23tap" if ratio & (ratio - 1) == 0 else "bicubic"
    p_low = _filter(lambda t: upsample(decimate(mtf_filter(t, gains, ratio), ratio), ratio, method=method), p_eq)
    divisor = torch.maximum(p_low, floor * _mean(x)).clamp_min(_EPS)
    return x * (p_eq / divisor).clamp_max(HPM_MAX_MODULATION)


def _check_pyramid_ratio(ratio: int) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
        raise ValueError(f"ratio: expected an integer scale ratio >= 2, got {ratio!r}")


def _check_divisible_by(x: torch.Tensor, ratio: int) -> None:
    h, w = x.shape[-2:]
    if h % ratio or w % ratio:
        raise ValueError(f"lms: spatial size {h}x{w} is not divisible by the ratio {ratio}")


# ------------------------------------------------------------------ multi-band guides (Sentinel-2)
def _band_gains(sensor: str | Sequence[float], bands: int) -> list[float]:
    if isinstance(sensor, str):
        gains = list(sensor_gains(sensor, bands)[0])
    else:
        gains = [float(g) for g in sensor]
    if len(gains) == 1:
        gains = gains * bands
    if len(gains) != bands:
        raise ValueError(f"sensor: {len(gains)} MTF gains given for {bands} bands")
    return gains


def _ms_or_decimated(lms: torch.Tensor, ms: torch.Tensor | None, ratio: int) -> torch.Tensor:
    """The coarse MS: given, or ``lms`` decimated on the toolbox grid (exact for interpolating kernels)."""
    if ms is not None:
        return ms
    x = check_image("lms", lms, allow_unbatched=True)
    m = decimate(x, ratio)
    return m[0] if isinstance(lms, torch.Tensor) and lms.dim() == 3 else m


def _synthesize(x: torch.Tensor, p: torch.Tensor, m: torch.Tensor, ratio: int, gains: Sequence[float]) -> torch.Tensor:
    """:func:`synthesize_band_guides` on prepared, batched float64 tensors."""
    b, c = x.shape[:2]
    n_guide = p.shape[1]
    synth = []
    for k in range(c):
        low = decimate(_filter(mtf_filter, p, [gains[k]] * n_guide, ratio), ratio)  # (B, P, h, w)
        design = torch.cat([low, torch.ones_like(low[:, :1])], dim=1).flatten(2).transpose(1, 2)
        weights = torch.linalg.lstsq(design, m[:, k].flatten(1).unsqueeze(-1)).solution  # (B, P + 1, 1)
        synth.append(
            (p * weights[:, :n_guide].view(b, n_guide, 1, 1)).sum(1, keepdim=True)
            + weights[:, n_guide].view(b, 1, 1, 1)
        )
    return torch.cat(synth, dim=1)


def _prepare_multi_guide(
    lms: torch.Tensor, guide: torch.Tensor, ms: torch.Tensor | None, ratio: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, torch.dtype]:
    """float64 (lms, every guide band, the coarse MS (given or decimated), unbatched, out dtype)."""
    x, p, m, unbatched, dtype = _prepare(lms, guide, _ms_or_decimated(lms, ms, ratio), ratio, keep_guide_bands=True)
    assert m is not None  # given or made above
    return x, p, m, unbatched, dtype


def synthesize_band_guides(
    lms: torch.Tensor,
    guide: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 2,
    sensor: str | Sequence[float] = "generic",
) -> torch.Tensor:
    """One synthetic high-resolution band per MS band from a multi-band guide (B, P, H, W): for band
    k the affine combination of the guide bands that best predicts the coarse band at its own
    scale, ``ms_k ~ sum_j w_kj LP_k(guide_j) + b_k`` (LP_k: band k's MTF-matched filter and
    decimation by ``ratio``; least squares per image), applied to the full-resolution guide. The
    standard way to sharpen Sentinel-2's 20 m bands with its 10 m bands by pansharpening methods
    (a synthesised "PAN" per band: J. Vaiopoulos and K. Karantzalos, "Pansharpening on the narrow
    VNIR and SWIR spectral bands of Sentinel-2", ISPRS Archives XLI-B7, 2016; G. Vivone et al.'s
    MRA-based Sentinel-2 sharpening, IEEE GRSL 2019, regress it the same way). Returns (B, C, H, W)
    float64 (unbatched in, unbatched out)."""
    x, p, m, unbatched, _ = _prepare_multi_guide(lms, guide, ms, ratio)
    out = _synthesize(x, p, m, ratio, _band_gains(sensor, x.shape[1]))
    return out[0] if unbatched else out


def mtf_glp_synthesized(
    lms: torch.Tensor,
    guide: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 2,
    sensor: str | Sequence[float] = "generic",
) -> torch.Tensor:
    """MTF-GLP-HPM per band with its own regressed high-resolution band
    (:func:`synthesize_band_guides`) as the PAN: ``fused_k = lms_k * P_k / P_k^L``, with
    :func:`mtf_glp_hpm`'s pyramid (band k's MTF filter, decimation, interpolation back) and its
    guards (``P_k`` clipped at 0, divisor floored, gain capped). The regression already puts
    ``P_k`` on band k's scale, so no histogram equalisation is needed."""
    _check_pyramid_ratio(ratio)
    x, p, m, unbatched, dtype = _prepare_multi_guide(lms, guide, ms, ratio)
    _check_divisible_by(x, ratio)
    gains = _band_gains(sensor, x.shape[1])
    synth = _synthesize(x, p, m, ratio, gains).clamp_min(0.0)
    return _finish(_hpm_modulate(x, synth, gains, ratio, HPM_FLOOR), unbatched, dtype)


def gsa_synthesized(
    lms: torch.Tensor,
    guide: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 2,
    sensor: str | Sequence[float] = "generic",
) -> torch.Tensor:
    """GSA with a multi-band guide: band k is :func:`gsa` run with band k's regressed
    high-resolution band (:func:`synthesize_band_guides`) as its PAN (the intensity regressed on
    the whole MS, the gain of band k), the component-substitution counterpart of
    :func:`mtf_glp_synthesized`."""
    x, p, m, unbatched, dtype = _prepare_multi_guide(lms, guide, ms, ratio)
    synth = _synthesize(x, p, m, ratio, _band_gains(sensor, x.shape[1]))
    bands = [gsa(x, synth[:, k : k + 1], m, ratio)[:, k : k + 1] for k in range(x.shape[1])]
    return _finish(torch.cat(bands, dim=1), unbatched, dtype)


def bicubic(lms: torch.Tensor, ms: torch.Tensor | None = None, ratio: int = 2) -> torch.Tensor:
    """The coarse MS upsampled by Keys bicubic convolution (:func:`ddif.data.mtf.bicubic_upsample`):
    the plain-interpolation reference of single-image sharpening tables."""
    x = check_image("lms", lms, allow_unbatched=True)
    m = _ms_or_decimated(lms, ms, ratio)
    m4 = m[None] if m.dim() == 3 else m
    out = bicubic_upsample(m4.to(torch.float32), ratio).to(x.dtype)
    return out[0] if lms.dim() == 3 else out
