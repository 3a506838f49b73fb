"""The value-scale rule of the scene-ingestion layer: does a raster hold digital numbers on the
scale a model was trained on? (Used for GeoTIFF scenes, ``.npy`` arrays and ``.h5`` files alike.)"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddif.data.raster import BAD_SCALE, SceneError

# --------------------------------------------------------------------------------------------
# value scale
# --------------------------------------------------------------------------------------------
# The rule: a raster fits a model whose inputs are DN / max_dn when (1) an integer dtype can hold
# at least 40 % of the max DN (int16 counts of a 16-bit Landsat product do; uint8 for 11 bits do
# not), (2) its largest valid value reaches 2 % of the max DN (reflectance in
# [0, 1] or an 8-bit quick-look of a 15-bit model does not), (3) at most 1 % of its valid pixels
# exceed the max DN (a 16-bit full-range product for a 15-bit model does not).
MIN_DTYPE_FRACTION = 0.4
MIN_PEAK_FRACTION = 0.02
MAX_ABOVE_FRACTION = 0.01


@dataclass
class ValueStats:
    """Running statistics of the valid pixels of one raster (values in file units)."""

    dtype: str
    valid: int = 0
    above: int = 0  # valid pixels (any band) above the threshold (the max DN, in file units)
    peak: float = -math.inf  # largest valid value
    low: float = math.inf  # smallest valid value
    threshold: float = math.inf

    def add(self, data: np.ndarray, invalid: np.ndarray) -> None:
        ok = ~invalid
        n = int(ok.sum())
        if not n:
            return
        vals = data[:, ok]
        if vals.dtype.kind == "f":
            vals = vals[:, np.isfinite(vals).all(axis=0)]
            if not vals.size:
                return
        self.valid += n
        self.peak = max(self.peak, float(vals.max()))
        self.low = min(self.low, float(vals.min()))
        self.above += int((vals > self.threshold).any(axis=0).sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "valid_pixels": self.valid,
            "min": self.low if self.valid else None,
            "max": self.peak if self.valid else None,
            "above_max_dn": self.above,
        }


def new_stats(info_dtype: str, max_dn: float, scale: float) -> ValueStats:
    return ValueStats(str(info_dtype), threshold=float(max_dn) / float(scale))


def array_stats(arr: np.ndarray, max_dn: float, scale: float = 1.0) -> ValueStats:
    """:class:`ValueStats` of a whole (C, H, W) / (N, C, H, W) array (non-finite values ignored)."""
    arr = np.asarray(arr)
    stats = new_stats(arr.dtype.name, max_dn, scale)
    flat = arr.reshape((-1,) + arr.shape[-2:]) if arr.ndim >= 3 else arr[None]
    bad = ~np.isfinite(flat).all(axis=0) if flat.dtype.kind == "f" else np.zeros(flat.shape[-2:], dtype=bool)
    stats.add(flat, bad)
    return stats


def scale_problem(stats: ValueStats, max_dn: float, scale: float = 1.0) -> str | None:
    """Why values with these statistics (times ``scale``) do not fit DN up to ``max_dn``, or None."""
    dtype = np.dtype(stats.dtype)
    if dtype.kind in "iu" and np.iinfo(dtype).max * scale < MIN_DTYPE_FRACTION * max_dn:
        return (
            f"dtype {dtype.name} holds at most {np.iinfo(dtype).max} (x scale {scale:g}), but the model expects "
            f"digital numbers up to {max_dn:g}"
        )
    if not stats.valid:
        return None
    peak = stats.peak * scale
    if peak < MIN_PEAK_FRACTION * max_dn:
        return (
            f"the largest valid value is {peak:g}, under {100 * MIN_PEAK_FRACTION:g}% of the model's max DN "
            f"{max_dn:g} (reflectance in [0, 1], or data scaled for display?)"
        )
    frac = stats.above / stats.valid
    if frac > MAX_ABOVE_FRACTION:
        return (
            f"{100 * frac:.1f}% of the valid pixels exceed the model's max DN {max_dn:g} (largest {peak:g}): "
            "the data use another DN range than the model was trained on"
        )
    return None


# Even with an explicit --input-scale, a conversion that saturates most of the scene or leaves it
# near zero is a wrong number, not a user's choice: refused.
SATURATED_FRACTION = 0.5
DARK_PEAK_FRACTION = 0.005


def check_input_scale(value: float | None, what: str = "input_scale") -> float | None:
    """``value`` when it is a usable DN conversion factor (None, or finite and positive), else
    ValueError naming it."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} must be a finite positive number (DN = file value x {what}), got {value!r}")
    return v


def check_scale(
    what: str,
    path: str,
    stats: ValueStats,
    max_dn: float,
    input_scale: float | None,
    warn: Callable[[str], object] | None = None,
) -> None:
    """Refuse (:class:`SceneError` BAD_SCALE) a raster whose values do not fit the model's DN
    convention; when ``input_scale`` was stated explicitly, the user has the last word: the
    problem is only reported through ``warn``."""
    scale = check_input_scale(input_scale)
    problem = scale_problem(stats, max_dn, 1.0 if scale is None else scale)
    if problem is None:
        return
    if scale is not None and stats.valid:
        peak = stats.peak * scale
        saturated = stats.above / stats.valid
        if saturated > SATURATED_FRACTION or peak < DARK_PEAK_FRACTION * max_dn:
            raise SceneError(
                BAD_SCALE,
                f"{what} {path}: with --input-scale {scale:g} {problem}; that would make "
                + (
                    f"{100 * saturated:.0f}% of the product saturate at the max DN"
                    if saturated > SATURATED_FRACTION
                    else "a product near zero"
                )
                + f". Expected DN = value x scale in [0, {max_dn:g}]",
            )
    if input_scale is None:
        raise SceneError(
            BAD_SCALE,
            f"{what} {path}: {problem}. Expected {stats.dtype} digital numbers in "
            f"[0, {max_dn:g}]; if the values are in other units, state the conversion "
            "with --input-scale S (DN = value x S)",
        )
    if warn is not None:
        warn(f"{what} {path}: {problem} (kept: --input-scale {scale:g} was given)")
