"""Sub-pixel resampling and MS-to-PAN registration.

- :func:`sample_axis` / :func:`shift_image`: Keys cubic convolution (a = -0.5, R. Keys, "Cubic
  convolution interpolation for digital image processing", IEEE TASSP 29(6), 1981) at arbitrary
  fractional positions, separable, replicate boundaries. The scene layer places the interpolated
  MS on the PAN grid with it (exact sub-pixel placement, :class:`ddif.data.scene.SceneReader`);
  registration corrections shift a PAN with it.
- :func:`estimate_misregistration`: how far the MS really sits from where its geotransform puts
  it on the PAN grid, in PAN pixels. The PAN is low-passed to the MS resolution, sampled at the MS
  pixel centres displaced by ``s``, and fitted by a linear mixture of the MS bands plus a constant
  (the GSA intensity, Aiazzi et al., IEEE TGRS 45(10), 2007); ``s`` is refined by Gauss-Newton
  on the same least-squares problem (the Lucas-Kanade linearisation, jointly with the mixture).
  Masked pixels (clouds, which move between the PAN and MS acquisitions; fill) are left out.

Written here rather than taken from a library: the estimate is a joint regression (mixture and
shift in one least-squares problem, cross-sensor), which plain phase correlation does not do, and
the resampler must be the very one the scene layer and the dataset builder use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


def _keys(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    d = t.abs()
    return torch.where(
        d <= 1,
        (a + 2) * d**3 - (a + 3) * d**2 + 1,
        torch.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, torch.zeros_like(d)),
    )


def sample_axis(x: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` sampled along ``dim`` at float ``positions`` (index units: sample i sits at i) with
    Keys cubic convolution, replicate boundaries. Integer positions return the samples exactly."""
    n = x.shape[dim]
    pos = positions.to(torch.float64)
    i0 = torch.floor(pos)
    t = pos - i0
    i0 = i0.long()
    shape = [1] * x.dim()
    shape[dim] = pos.numel()
    out = torch.zeros(x.shape[:dim] + (pos.numel(),) + x.shape[dim + 1 :], dtype=x.dtype, device=x.device)
    for off in (-1, 0, 1, 2):
        w = _keys(t - off).to(device=x.device, dtype=x.dtype).view(shape)
        idx = (i0 + off).clamp(0, n - 1).to(x.device)
        out = out + x.index_select(dim, idx) * w
    return out


def shift_axis(x: torch.Tensor, start: float, length: int, dim: int) -> torch.Tensor:
    """``x`` sampled along ``dim`` at ``start, start + 1, ..., start + length - 1``: the same
    values as :func:`sample_axis` at those positions, computed as one 4-tap convolution (the Keys
    weights of a constant fractional offset) over the replicate-padded axis instead of four
    gathers: the fast path of a sub-pixel placement, which shifts every sample alike."""
    import torch.nn.functional as F

    base = math.floor(start)
    frac = float(start - base)
    n = x.shape[dim]
    if frac == 0.0:
        idx = torch.arange(base, base + length, device=x.device).clamp(0, n - 1)
        return x.index_select(dim, idx)
    t = torch.tensor(frac, dtype=torch.float64)
    taps = torch.stack([_keys(t - off) for off in (-1, 0, 1, 2)]).to(x.dtype)  # for x[i-1], x[i], x[i+1], x[i+2]
    # the samples needed: base - 1 .. base + length + 1, with replicate beyond the axis
    idx = torch.arange(base - 1, base + length + 2, device=x.device).clamp(0, n - 1)
    window = x.index_select(dim, idx).movedim(dim, -1)
    lead = window.shape[:-1]
    out = F.conv1d(window.reshape(-1, 1, window.shape[-1]), taps.view(1, 1, 4).to(x.device))
    return out.reshape(*lead, length).movedim(-1, dim)


def shift_image(x: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """``y[..., i, j] = x[..., i + dy, j + dx]`` (Keys cubic, replicate boundaries) for (..., H, W)."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    y = x
    if dy:
        y = shift_axis(y, float(dy), h, y.dim() - 2)
    if dx:
        y = shift_axis(y, float(dx), w, y.dim() - 1)
    return y


def ms_centre_in_pan(ms_transform: Any, pan_transform: Any) -> tuple[float, float]:
    """(row, col) of MS pixel (0, 0)'s centre in PAN index coordinates (PAN pixel m's centre is m),
    from the two north-up geotransforms."""
    mt, pt = ms_transform, pan_transform
    row = (mt.f + mt.e / 2 - pt.f) / pt.e - 0.5
    col = (mt.c + mt.a / 2 - pt.c) / pt.a - 0.5
    return float(row), float(col)


@dataclass
class Registration:
    """Measured placement of an MS on its PAN: MS pixel (i, j)'s centre really sits at PAN
    ``(ratio i + origin_row + shift_row, ratio j + origin_col + shift_col)``."""

    shift_pan_px: tuple[float, float]  # beyond what the geotransforms say (rows, cols)
    r2: float  # fit of the low-passed PAN by the MS mixture at the measured shift
    r2_unshifted: float  # the same fit at shift 0
    pixels: int  # MS pixels used
    iterations: int
    weights: tuple[float, ...]  # the mixture (per band, then the constant), DN units of the inputs

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["shift_pan_px"] = [round(v, 4) for v in self.shift_pan_px]
        d["r2"], d["r2_unshifted"] = round(self.r2, 5), round(self.r2_unshifted, 5)
        d["weights"] = [round(v, 6) for v in self.weights]
        return d


def _pan_lowpass(pan: np.ndarray, ratio: int, gain: float) -> torch.Tensor:
    from ddif.data.mtf import mtf_filter

    p = torch.from_numpy(np.ascontiguousarray(pan, dtype=np.float64))[None, None]
    return mtf_filter(p, gain, ratio)


def _sample_centres(p_lp: torch.Tensor, ratio: int, origin: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    ys = ratio * torch.arange(shape[0], dtype=torch.float64) + origin[0]
    xs = ratio * torch.arange(shape[1], dtype=torch.float64) + origin[1]
    return sample_axis(sample_axis(p_lp, ys, 2), xs, 3)[0, 0].numpy()


def estimate_misregistration(
    ms: np.ndarray,
    pan: np.ndarray,
    ratio: int,
    origin: tuple[float, float],
    valid: np.ndarray | None = None,
    *,
    pan_gain: float = 0.3,
    iterations: int = 8,
    margin: int = 3,
    tolerance: float = 1e-3,
) -> Registration:
    """Sub-pixel shift (PAN px) of ``ms`` (C, h, w) against ``pan`` (H, W) of ratio ``ratio``,
    ``origin`` the PAN index coordinates of MS pixel (0, 0)'s centre by the geotransforms
    (:func:`ms_centre_in_pan`); ``valid`` (h, w) marks the MS pixels to use (clear, not fill).
    ``pan_gain``: the low-pass taking the PAN to the MS resolution (MTF gain at the MS Nyquist).
    Raises ValueError when fewer than 100 pixels are usable."""
    c, h, w = ms.shape
    use = np.ones((h, w), dtype=bool) if valid is None else valid.astype(bool).copy()
    use[:margin], use[h - margin :], use[:, :margin], use[:, w - margin :] = False, False, False, False
    # the sampled centres must stay inside the PAN, whatever the shift
    rows_ok = (ratio * np.arange(h) + origin[0] >= 2) & (ratio * np.arange(h) + origin[0] <= pan.shape[0] - 3)
    cols_ok = (ratio * np.arange(w) + origin[1] >= 2) & (ratio * np.arange(w) + origin[1] <= pan.shape[1] - 3)
    use &= rows_ok[:, None] & cols_ok[None, :]
    n = int(use.sum())
    if n < 100:
        raise ValueError(f"registration: only {n} usable MS pixels (clear, inside the PAN, off the border)")
    p_lp = _pan_lowpass(pan, ratio, pan_gain)
    x = np.concatenate([ms.reshape(c, -1).astype(np.float64), np.ones((1, h * w))]).T[use.ravel()]
    s = np.zeros(2)
    eps = 0.05
    r2_0 = 0.0
    coef = np.zeros(c + 1)
    done = 0
    for it in range(iterations):
        o = (origin[0] + s[0], origin[1] + s[1])
        p = _sample_centres(p_lp, ratio, o, (h, w)).ravel()[use.ravel()]
        py = (
            _sample_centres(p_lp, ratio, (o[0] + eps, o[1]), (h, w))
            - _sample_centres(p_lp, ratio, (o[0] - eps, o[1]), (h, w))
        ).ravel()[use.ravel()] / (2 * eps)
        px = (
            _sample_centres(p_lp, ratio, (o[0], o[1] + eps), (h, w))
            - _sample_centres(p_lp, ratio, (o[0], o[1] - eps), (h, w))
        ).ravel()[use.ravel()] / (2 * eps)
        if it == 0:
            fit0, *_ = np.linalg.lstsq(x, p, rcond=None)
            r2_0 = 1.0 - float(np.var(p - x @ fit0) / max(np.var(p), 1e-30))
        a = np.concatenate([x, -py[:, None], -px[:, None]], axis=1)
        sol, *_ = np.linalg.lstsq(a, p, rcond=None)
        step = np.clip(sol[-2:], -1.0, 1.0)  # Gauss-Newton, damped to one PAN pixel per iteration
        s += step
        done = it + 1
        if np.abs(step).max() < tolerance:
            break
    o = (origin[0] + s[0], origin[1] + s[1])
    p = _sample_centres(p_lp, ratio, o, (h, w)).ravel()[use.ravel()]
    coef, *_ = np.linalg.lstsq(x, p, rcond=None)
    r2 = 1.0 - float(np.var(p - x @ coef) / max(np.var(p), 1e-30))
    return Registration((float(s[0]), float(s[1])), r2, r2_0, n, done, tuple(float(v) for v in coef))


__all__ = [
    "Registration",
    "estimate_misregistration",
    "ms_centre_in_pan",
    "sample_axis",
    "shift_axis",
    "shift_image",
]
