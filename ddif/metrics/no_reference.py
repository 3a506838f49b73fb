"""Full-resolution (no reference) quality indices: D_lambda (Khan), D_s (QNR) and HQNR.

HQNR = (1 - D_lambda^(K)) (1 - D_s), the hybrid index of G. Vivone et al., "A new benchmark based
on recent advances in multispectral pansharpening", IEEE GRSM 9(1), 2021 (and Vivone et al., "A
benchmarking protocol for pansharpening", IEEE JSTARS 14, 2021), computed as the toolbox's
``HQNR.m``:

- D_lambda^(K) (M. M. Khan, L. Alparone and J. Chanussot, "Pansharpening quality assessment
  using the modulation transfer functions of instruments", IEEE TGRS 47(11), 2009; toolbox
  ``D_lambda_K.m``): ``1 - Q2n(MTF(fused), MS~)``, where ``MTF(fused)`` is the fused image
  low-passed with the sensor's MTF-matched filters (kept on the PAN grid, not decimated) and
  ``MS~`` the MS image interpolated to the PAN grid (23-tap), Q2n on 32 x 32 blocks. The MTF
  filter is ddif's (:func:`ddif.data.mtf.mtf_kernel`) by default; ``mtf_kernel="toolbox"`` uses
  the toolbox's own ``genMTF.m`` filter (:func:`ddif.data.mtf.toolbox_mtf_kernel`), which changes
  D_lambda by ~0.5-3.5 % relative on real data: use it to compare with published tables.
- D_s (L. Alparone, B. Aiazzi, S. Baronti, A. Garzelli, F. Nencini and M. Selva, "Multispectral
  and panchromatic data fusion assessment without reference", PE&RS 74(2), 2008; toolbox
  ``D_s.m``, "toolbox 1.0" option): ``(mean_k |Q(fused_k, PAN) - Q(MS~_k, PAN_LP)|^q)^(1/q)``
  with ``PAN_LP`` the PAN shrunk by the ratio (MATLAB ``imresize``: antialiased bicubic) and
  interpolated back (23-tap), and Q the UIQI averaged over distinct 32 x 32 blocks.

Inputs: ``fused`` (B, C, H, W), ``ms`` the original MS (B, C, H/r, W/r), ``pan`` (B, P, H, W),
all on the same scale, or the same without the batch dimension. A guide with P > 1 bands (RGB) is
reduced to its band mean. Returns a float (unbatched) or a (B,) float64 tensor. Filtering and
interpolation run in float32, statistics in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ddif.data.mtf import check_mtf_kernel, ms_gains, mtf_filter, upsample

from ._common import MetricValue, check_ratio, finish, prepare, uiqi_from_moments
from .hypercomplex import q2n

__all__ = ["d_lambda", "d_s", "hqnr", "full_resolution_metrics"]


def _interp_method(ratio: int) -> str:
    return "interp23tap" if ratio & (ratio - 1) == 0 else "bicubic"


def _prepare_full(fused, ms, pan, ratio: int, need_pan: bool):
    check_ratio(ratio)
    f, unbatched = prepare("fused", fused)
    m, _ = prepare("ms", ms, unbatched=unbatched, like_name="fused")
    if m.shape[:2] != f.shape[:2]:
        raise ValueError(f"ms: shape {tuple(m.shape)} does not match fused {tuple(f.shape)} in batch size / band count")
    h, w = f.shape[-2:]
    if (ratio * m.shape[-2], ratio * m.shape[-1]) != (h, w):
        raise ValueError(
            f"ms: spatial size {m.shape[-2]}x{m.shape[-1]} times the ratio {ratio} does not match "
            f"the fused image's {h}x{w}"
        )
    p = None
    if pan is not None or need_pan:
        if pan is None:
            raise ValueError("pan: the PAN image is required")
        p, _ = prepare("pan", pan, unbatched=unbatched, like_name="fused")
        if p.shape[0] != f.shape[0] or tuple(p.shape[-2:]) != (h, w):
            raise ValueError(
                f"pan: shape {tuple(p.shape)} does not match the fused image {tuple(f.shape)} "
                "in batch size or spatial size"
            )
        if p.shape[1] > 1:
            p = p.mean(dim=1, keepdim=True)
    return f, m, p, unbatched


def _filtered(fn, x, *args, **kwargs) -> torch.Tensor:
    # Filters and interpolators run in float32 (several times faster than float64 convolution on
    # CPU, and ~1e-7 relative error, far below what the indices resolve); statistics stay float64.
    return fn(x.to(torch.float32), *args, **kwargs).to(torch.float64)


def _d_lambda(f, m, ratio, sensor, block_size, mtf_kernel="ddif"):
    gains = ms_gains(sensor, f.shape[1])  # a sensor name, or its gains for a band subset
    fused_lp = _filtered(mtf_filter, f, gains, ratio, kernel=mtf_kernel)
    ms_exp = _filtered(upsample, m, ratio, method=_interp_method(ratio))
    return 1.0 - q2n(fused_lp, ms_exp, block_size, block_size)  # 4-D inputs: a (B,) tensor


def _block_q(x: torch.Tensor, y: torch.Tensor, block_size: int) -> torch.Tensor:
    """UIQI of x (B, C, H, W) against y (B, 1, H, W) on distinct blocks, mean over blocks -> (B, C)."""
    b, c, h, w = x.shape
    s = block_size

    def blocks(t):
        return t.reshape(t.shape[0], t.shape[1], h // s, s, w // s, s)

    xb, yb = blocks(x), blocks(y)
    mx, my = xb.mean(dim=(3, 5)), yb.mean(dim=(3, 5))
    xc = xb - mx[:, :, :, None, :, None]
    yc = yb - my[:, :, :, None, :, None]
    vx, vy = xc.pow(2).mean(dim=(3, 5)), yc.pow(2).mean(dim=(3, 5))
    cxy = (xc * yc).mean(dim=(3, 5))
    return uiqi_from_moments(mx, my.expand_as(mx), vx, vy.expand_as(vx), cxy).mean(dim=(2, 3))


def _d_s(f, m, p, ratio, block_size, q):
    h, w = f.shape[-2:]
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size: expected an integer >= 2, got {block_size!r}")
    if h % block_size or w % block_size:
        raise ValueError(
            f"fused: spatial size {h}x{w} is not a multiple of the D_s block size {block_size} "
            "(as in the toolbox); crop the image or pass another block_size"
        )
    if not (isinstance(q, (int, float)) and not isinstance(q, bool) and q > 0):
        raise ValueError(f"q: expected a positive exponent, got {q!r}")
    pan_small = F.interpolate(
        p.to(torch.float32), size=(h // ratio, w // ratio), mode="bicubic", antialias=True, align_corners=False
    )
    pan_lp = _filtered(upsample, pan_small, ratio, method=_interp_method(ratio))
    ms_exp = _filtered(upsample, m, ratio, method=_interp_method(ratio))
    q_high = _block_q(f, p, block_size)
    q_low = _block_q(ms_exp, pan_lp, block_size)
    return (q_high - q_low).abs().pow(q).mean(dim=1).pow(1.0 / q)


def d_lambda(
    fused: torch.Tensor,
    ms: torch.Tensor,
    pan: torch.Tensor | None = None,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
    block_size: int = 32,
    mtf_kernel: str = "ddif",
) -> MetricValue:
    """Spectral distortion D_lambda^(K) (Khan et al. 2009, toolbox ``D_lambda_K.m``); 0 = none.

    ``pan`` is not used by this index (accepted, and checked when given, so that all
    full-resolution indices share one signature). ``mtf_kernel``: the MTF filter applied to the
    fused image, ``"ddif"`` (:func:`ddif.data.mtf.mtf_kernel`: separable, gain exact at Nyquist,
    sum 1) or ``"toolbox"`` (:func:`ddif.data.mtf.toolbox_mtf_kernel`: the MATLAB toolbox's
    ``genMTF`` filter, for numbers comparable with tables made with it). Either way the gains come
    from :data:`ddif.data.sensors.SENSOR_MTF`, which matches genMTF's table for the sensors it lists;
    for ``sensor="none"`` ddif's table has an all-pass where genMTF would use 0.3.
    """
    check_mtf_kernel(mtf_kernel)
    f, m, _, unbatched = _prepare_full(fused, ms, pan, ratio, need_pan=False)
    return finish(_d_lambda(f, m, ratio, sensor, block_size, mtf_kernel), unbatched)


def d_s(
    fused: torch.Tensor,
    ms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int = 4,
    sensor: str = "wv3",
    block_size: int = 32,
    q: float = 1.0,
    mtf_kernel: str = "ddif",
) -> MetricValue:
    """Spatial distortion D_s of QNR (Alparone et al. 2008, toolbox ``D_s.m``); 0 = none.

    ``sensor`` and ``mtf_kernel`` are not used by this index (shared signature: the toolbox's
    ``D_s.m`` low-passes the PAN with ``imresize``, not with an MTF filter; ``mtf_kernel`` is
    still checked). H and W must be multiples of ``block_size`` (as in the toolbox).
    """
    check_mtf_kernel(mtf_kernel)
    f, m, p, unbatched = _prepare_full(fused, ms, pan, ratio, need_pan=True)
    return finish(_d_s(f, m, p, ratio, block_size, q), unbatched)


def hqnr(
    fused: torch.Tensor,
    ms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
    block_size: int = 32,
    mtf_kernel: str = "ddif",
) -> MetricValue:
    """Hybrid QNR = (1 - D_lambda^(K)) (1 - D_s) (Vivone et al. 2021, toolbox ``HQNR.m``); 1 = ideal.

    ``mtf_kernel`` as in :func:`d_lambda`."""
    return full_resolution_metrics(fused, ms, pan, ratio, sensor, block_size, mtf_kernel)["HQNR"]


def full_resolution_metrics(
    fused: torch.Tensor,
    ms: torch.Tensor,
    pan: torch.Tensor,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
    block_size: int = 32,
    mtf_kernel: str = "ddif",
) -> dict[str, MetricValue]:
    """``{"D_lambda", "D_s", "HQNR"}`` of a full-resolution fusion (floats, or (B,) tensors when
    batched). ``mtf_kernel`` (``"ddif"`` or ``"toolbox"``) picks D_lambda's MTF filter, see
    :func:`d_lambda`."""
    check_mtf_kernel(mtf_kernel)
    f, m, p, unbatched = _prepare_full(fused, ms, pan, ratio, need_pan=True)
    dl = _d_lambda(f, m, ratio, sensor, block_size, mtf_kernel)
    ds = _d_s(f, m, p, ratio, block_size, 1.0)
    return {
        "D_lambda": finish(dl, unbatched),
        "D_s": finish(ds, unbatched),
        "HQNR": finish((1 - dl) * (1 - ds), unbatched),
    }
