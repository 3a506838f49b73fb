"""How a reduced-resolution (Wald protocol) sample is made, as one explicit object.

:class:`Degradation` holds every choice a Wald simulator makes: the MTF gains at Nyquist of the MS
bands and of the PAN, the interpolation that brings the degraded MS back to the PAN grid, PAN
noise and a perturbation of the PAN's spectral response. :func:`wald_triplet` applies one to a
real (or semi-synthetic) pair; every builder of reduced-resolution data (``ddif make-dataset``,
``ddif adapt``, the evaluation scripts) goes through it.

Robust training draws a :class:`Degradation` per variant from :class:`DegradationRanges`
(:func:`draw_degradation`) instead of always using the sensor's nominal values: a model trained on
one simulator (one MTF gain, one interpolator) learns that simulator's blur and loses part of its
edge when a scene was made differently (the MTF of a real sensor varies across the focal plane,
over the mission and with the processing; evaluation sets are made with interp23tap or bicubic).

The MTF filters, decimation and interpolators are :mod:`ddif.data.mtf`'s (the toolbox's
conventions, Vivone et al. 2015 / 2021). The spectral perturbation follows the observation behind
GSA (Aiazzi et al. 2007): a PAN is close to a linear mixture of the MS bands plus detail, so a
sensor with other spectral responses sees a different mixture: ``pan' = pan + sum_k d_k (gt_k -
mean gt_k) std(pan) / std(gt_k)`` with small ``d_k``; for a synthetic PAN the weights themselves
are perturbed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ddif.data.mtf import ReducedResolution, decimate, mtf_filter, upsample
from ddif.data.synthetic_pan import synthesize_pan


@dataclass(frozen=True)
class Degradation:
    """One Wald-protocol simulation of ratio ``ratio``."""

    ratio: int
    ms_gains: tuple[float, ...]  # MTF gain at the MS Nyquist frequency, per band (or one for all)
    pan_gain: float
    interpolation: str = "interp23tap"  # or "bicubic"
    padding: str = "symmetric"  # interp23tap boundary
    pan_noise: float = 0.0  # std of white noise added to the reduced PAN, as a fraction of its std
    pan_mix: tuple[float, ...] = ()  # d_k of the spectral perturbation, one per band (() = none)
    seed: int = 0  # the noise draw

    def __post_init__(self) -> None:
        object.__setattr__(self, "ms_gains", tuple(float(g) for g in self.ms_gains))
        object.__setattr__(self, "pan_mix", tuple(float(d) for d in self.pan_mix))
        if self.ratio < 2:
            raise ValueError(f"ratio must be >= 2, got {self.ratio}")
        for g in (*self.ms_gains, self.pan_gain):
            if not 0.0 < g <= 1.0:
                raise ValueError(f"MTF gains must lie in (0, 1], got {g}")
        if self.interpolation not in ("interp23tap", "bicubic"):
            raise ValueError(f"interpolation must be interp23tap or bicubic, got {self.interpolation!r}")
        if self.interpolation == "interp23tap" and self.ratio & (self.ratio - 1):
            object.__setattr__(self, "interpolation", "bicubic")  # interp23tap needs a power of 2
        if self.pan_noise < 0:
            raise ValueError(f"pan_noise must be >= 0, got {self.pan_noise}")

    @classmethod
    def nominal(
        cls,
        sensor: str,
        bands: int | Sequence[str],
        ratio: int,
        interpolation: str = "interp23tap",
        padding: str = "symmetric",
    ) -> Degradation:
        """The sensor's nominal simulation (its MTF gains, no noise, no spectral perturbation).
        ``bands``: a band count (gains by position, :func:`ddif.data.mtf.sensor_gains`) or band
        names of the sensor (gains by name, :mod:`ddif.data.sensors`)."""
        ms, pan = sensor_band_gains(sensor, bands)
        return cls(ratio, ms, pan, interpolation, padding)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DegradationRanges:
    """What robust training draws a :class:`Degradation` from.

    Gains are drawn per scene variant: ``ms_gain`` is the range of the MS gains (one value for
    every band, the nominal per-band differences kept by scaling), ``pan_gain`` that of the PAN's;
    ``interpolations`` is picked uniformly; the PAN noise std (fraction of the PAN std) uniformly
    in [0, ``pan_noise_max``]; the spectral perturbation ``d_k`` normal with std ``pan_mix_std``.
    """

    ms_gain: tuple[float, float] = (0.15, 0.45)
    pan_gain: tuple[float, float] = (0.08, 0.25)
    interpolations: tuple[str, ...] = ("interp23tap", "bicubic")
    pan_noise_max: float = 0.03
    pan_mix_std: float = 0.1

    def __post_init__(self) -> None:
        for name in ("ms_gain", "pan_gain"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} range must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        for m in self.interpolations:
            if m not in ("interp23tap", "bicubic"):
                raise ValueError(f"interpolations: unknown method {m!r}")
        if not self.interpolations:
            raise ValueError("interpolations: give at least one method")


def sensor_band_gains(sensor: str, bands: int | Sequence[str]) -> tuple[tuple[float, ...], float]:
    """(MS gains, PAN gain) at Nyquist: by band position for a count, by name for band names."""
    from ddif.data.mtf import sensor_gains

    if isinstance(bands, int):
        return sensor_gains(sensor, bands)
    from ddif.data.sensors import find_sensor

    entry = find_sensor(sensor)
    if entry is not None and entry.canonical(list(bands)) is not None:
        return entry.mtf_gains(list(bands))
    return sensor_gains(sensor, len(bands))


def draw_degradation(
    rng: np.random.Generator,
    nominal: Degradation,
    ranges: DegradationRanges,
) -> Degradation:
    """A random simulation around ``nominal`` (its ratio, padding and relative band gains)."""
    base = np.asarray(nominal.ms_gains, dtype=np.float64)
    target = rng.uniform(*ranges.ms_gain)
    ms_gains = tuple(float(np.clip(g * target / base.mean(), 0.02, 0.95)) for g in base)
    pan_gain = float(rng.uniform(*ranges.pan_gain))
    interpolation = str(ranges.interpolations[int(rng.integers(len(ranges.interpolations)))])
    noise = float(rng.uniform(0.0, ranges.pan_noise_max)) if ranges.pan_noise_max > 0 else 0.0
    bands = len(base)
    mix = tuple(float(v) for v in rng.normal(0.0, ranges.pan_mix_std, bands)) if ranges.pan_mix_std > 0 else ()
    return Degradation(
        nominal.ratio,
        ms_gains,
        pan_gain,
        interpolation,
        nominal.padding,
        noise,
        mix,
        int(rng.integers(2**31 - 1)),
    )


def _gains_per_band(gains: tuple[float, ...], bands: int) -> list[float]:
    if len(gains) == 1:
        return list(gains) * bands
    if len(gains) != bands:
        raise ValueError(f"degradation has {len(gains)} MS gains for an image with {bands} bands")
    return list(gains)


def _perturb_pan(pan: torch.Tensor, gt: torch.Tensor, mix: tuple[float, ...]) -> torch.Tensor:
    """pan + sum_k d_k (gt_k - mean gt_k) std(pan) / std(gt_k), per image (B, P, H, W)."""
    d = torch.tensor(mix, dtype=pan.dtype, device=pan.device).view(1, -1, 1, 1)
    g = gt.to(pan.dtype)
    g0 = g - g.mean(dim=(-2, -1), keepdim=True)
    gstd = g0.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    pstd = pan.std(dim=(-2, -1), keepdim=True)
    return pan + (d * g0 / gstd).sum(dim=1, keepdim=True) * pstd


def wald_triplet(
    gt: torch.Tensor,
    pan_full: torch.Tensor | None,
    degradation: Degradation,
    pan_weights: Sequence[float] = (),
) -> ReducedResolution:
    """Reduced-resolution sample of a real pair: ``gt`` (B, C, h, w) the MS at its resolution (the
    reference), ``pan_full`` (B, P, r h, r w) the PAN at its own; both MTF-filtered with
    ``degradation``'s gains and decimated by r (the toolbox grid), the degraded MS interpolated
    back; then the PAN's spectral perturbation and noise. ``pan_full=None`` synthesises the PAN on
    the gt grid from ``gt`` with ``pan_weights`` (semi-synthetic; the perturbation then acts on the
    weights). Float32 in, float32 out; h, w divisible by r."""
    deg = degradation
    r = deg.ratio
    x = gt.to(torch.float32)
    c = x.shape[1]
    ms_lr = decimate(mtf_filter(x, _gains_per_band(deg.ms_gains, c), r), r)
    lms = upsample(ms_lr, r, method=deg.interpolation, padding=deg.padding)
    if pan_full is not None:
        p = pan_full.to(torch.float32)
        pan = decimate(mtf_filter(p, [deg.pan_gain] * p.shape[1], r), r)
        if deg.pan_mix:
            if len(deg.pan_mix) != c:
                raise ValueError(f"pan_mix has {len(deg.pan_mix)} values for {c} bands")
            pan = _perturb_pan(pan, x, deg.pan_mix)
    else:
        if len(pan_weights) != c:
            raise ValueError(f"pan_weights: need {c} weights for a synthetic PAN, got {len(pan_weights)}")
        w = np.asarray(pan_weights, dtype=np.float64)
        if deg.pan_mix:
            w = w * np.exp(np.asarray(deg.pan_mix, dtype=np.float64))
        pan = synthesize_pan(x, tuple(float(v) for v in w / w.sum()))
    if deg.pan_noise > 0:
        g = torch.Generator().manual_seed(int(deg.seed))
        noise = torch.randn(pan.shape, generator=g, dtype=torch.float32)
        pan = pan + noise * deg.pan_noise * pan.std(dim=(-2, -1), keepdim=True)
    return ReducedResolution(gt=x, ms=ms_lr, lms=lms, pan=pan)


@dataclass
class DegradationLog:
    """The degradations a dataset was made with (for its files' attributes and the model card)."""

    nominal: dict[str, Any]
    ranges: dict[str, Any] | None
    variants: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nominal": self.nominal, "ranges": self.ranges, "variants": len(self.variants)}
        if self.variants:
            gains = [float(np.mean(v["ms_gains"])) for v in self.variants]
            out["ms_gain_drawn"] = [round(min(gains), 4), round(max(gains), 4)]
            out["interpolations_drawn"] = sorted({v["interpolation"] for v in self.variants})
        return out


def is_power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1) and math.log2(n).is_integer()


__all__ = [
    "Degradation",
    "DegradationRanges",
    "DegradationLog",
    "draw_degradation",
    "sensor_band_gains",
    "wald_triplet",
]
