"""A semi-synthetic PAN for scenes without a panchromatic band: a spectral-response-weighted sum of
the MS bands (:func:`synthesize_pan`), weighted by each band's overlap with the PAN band pass
(:func:`bandpass_pan_weights`).

Such a PAN is a linear function of the MS: it is not a real panchromatic acquisition, and every
result obtained with it must say so (``ddif make-dataset`` marks its files ``pan_source =
"synthesized ..."``). numpy only at import; torch is imported when a tensor is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import numpy as np

from ddif.data.sensors import SENSORS

if TYPE_CHECKING:
    import torch

# Landsat-8 OLI band passes in nm, B8 the panchromatic band: the sensor registry's
# (ddif.data.sensors; USGS band designations)
LANDSAT8_OLI_BANDPASS_NM: dict[str, tuple[float, float]] = SENSORS["landsat8"].band_passes("B8")


def bandpass_pan_weights(
    band_passes_nm: Sequence[tuple[float, float]], pan_pass_nm: tuple[float, float]
) -> tuple[float, ...]:
    """Weights for :func:`synthesize_pan`: the overlap (nm) of each MS band pass with the PAN pass,
    normalised to sum to 1 (box approximation of the relative spectral responses).

    Landsat-8 OLI B2, B3, B4 against B8 (500-680 nm) give (0.1, 0.6, 0.3)."""
    lo_p, hi_p = pan_pass_nm
    overlaps = [max(0.0, min(hi, hi_p) - max(lo, lo_p)) for lo, hi in band_passes_nm]
    total = sum(overlaps)
    if total <= 0:
        raise ValueError(f"no band pass overlaps the PAN pass {pan_pass_nm}")
    return tuple(o / total for o in overlaps)


@overload
def synthesize_pan(ms: torch.Tensor, weights: Sequence[float]) -> torch.Tensor: ...


@overload
def synthesize_pan(ms: np.ndarray, weights: Sequence[float]) -> np.ndarray: ...


def synthesize_pan(ms: torch.Tensor | np.ndarray, weights: Sequence[float]) -> torch.Tensor | np.ndarray:
    """A **synthetic** panchromatic band: ``sum_b w_b * ms_b / sum_b w_b``.

    This is a semi-synthetic stand-in for a scene without a PAN acquisition (a linear function of
    the MS bands, weighted by their spectral overlap with the PAN band, see
    :func:`bandpass_pan_weights`); results obtained with it are not results on real PAN data.
    ``ms`` is (C, H, W) or (B, C, H, W), numpy or torch; returns (1, H, W) or (B, 1, H, W) of the
    same kind.
    """
    import torch

    w = np.asarray(weights, dtype=np.float64)
    shape = tuple(ms.shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"ms: expected (C, H, W) or (B, C, H, W), got shape {shape}")
    c = shape[-3]
    if w.ndim != 1 or w.shape[0] != c:
        raise ValueError(f"pan weights: need one weight per MS band ({c}), got {tuple(np.atleast_1d(w))}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"pan weights must be finite, non-negative and not all zero, got {tuple(w)}")
    w = w / w.sum()
    if isinstance(ms, torch.Tensor):
        wt = torch.as_tensor(w, dtype=ms.dtype if ms.is_floating_point() else torch.float32, device=ms.device)
        return (ms.to(wt.dtype) * wt.view(c, 1, 1)).sum(dim=-3, keepdim=True)
    ms = np.asarray(ms)
    dtype = ms.dtype if ms.dtype.kind == "f" else np.dtype(np.float32)
    pan = np.tensordot(w.astype(dtype), ms.astype(dtype, copy=False), axes=([0], [ms.ndim - 3]))
    return np.expand_dims(pan, -3)
