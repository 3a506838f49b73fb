"""Classical pansharpening baselines for side-by-side comparison (Vivone et al., IEEE TGRS 2015;
IEEE GRSM 2021): :func:`brovey`, :func:`gs`, :func:`gsa`, :func:`mtf_glp_hpm`; and GDAL's own
weighted Brovey (``gdal_brovey``, :mod:`ddif.baselines.gdal_pansharpen`, where rasterio is installed).

``BASELINES`` maps a name to a function with the uniform signature
``fn(lms, pan, ms=None, ratio=4, sensor="wv3") -> fused`` (arguments a method does not use are
ignored; ``sensor`` may also be the per-band MTF gains), so evaluation code can loop over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .classical import bicubic, brovey, gs, gsa, gsa_synthesized, mtf_glp_hpm, mtf_glp_synthesized
from .gdal_pansharpen import gdal_available

__all__ = [
    "bicubic",
    "brovey",
    "gs",
    "gsa",
    "gsa_synthesized",
    "mtf_glp_hpm",
    "mtf_glp_synthesized",
    "BASELINES",
    "MULTI_GUIDE_BASELINES",
    "Baseline",
]

Baseline = Callable[..., torch.Tensor]


def _brovey(
    lms: torch.Tensor, pan: torch.Tensor, ms: torch.Tensor | None = None, ratio: int = 4, sensor: str = "wv3"
) -> torch.Tensor:
    return brovey(lms, pan)


def _gs(
    lms: torch.Tensor, pan: torch.Tensor, ms: torch.Tensor | None = None, ratio: int = 4, sensor: str = "wv3"
) -> torch.Tensor:
    return gs(lms, pan)


def _gsa(
    lms: torch.Tensor, pan: torch.Tensor, ms: torch.Tensor | None = None, ratio: int = 4, sensor: str = "wv3"
) -> torch.Tensor:
    return gsa(lms, pan, ms, ratio)


def _mtf_glp_hpm(
    lms: torch.Tensor,
    pan: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
) -> torch.Tensor:
    return mtf_glp_hpm(lms, pan, ratio, sensor)


def _gdal_brovey(
    lms: torch.Tensor,
    pan: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
) -> torch.Tensor:
    from ddif.data.mtf import decimate

    from .gdal_pansharpen import gdal_weighted_brovey

    unbatched = lms.dim() == 3
    lms4, pan4 = (lms[None], pan[None]) if unbatched else (lms, pan)
    if ms is None:  # GDAL pansharpens the coarse MS: recover it from lms (interpolating kernels)
        ms4 = decimate(lms4, ratio)
    else:
        ms4 = ms[None] if unbatched else ms
    guide = pan4 if pan4.shape[1] == 1 else pan4.mean(dim=1, keepdim=True)
    fused = gdal_weighted_brovey(ms4, guide, ratio)
    return fused[0] if unbatched else fused


def _bicubic(
    lms: torch.Tensor,
    pan: torch.Tensor,
    ms: torch.Tensor | None = None,
    ratio: int = 4,
    sensor: str | Sequence[float] = "wv3",
) -> torch.Tensor:
    return bicubic(lms, ms, ratio)


BASELINES: dict[str, Baseline] = {
    "brovey": _brovey,
    "gs": _gs,
    "gsa": _gsa,
    "mtf_glp_hpm": _mtf_glp_hpm,
}
#: the baselines that use every band of a multi-band guide (Sentinel-2's four 10 m bands, an RGB
#: guide): one regressed high-resolution band per MS band (these two have the uniform signature
#: themselves), and plain bicubic interpolation
MULTI_GUIDE_BASELINES: dict[str, Baseline] = {
    "bicubic": _bicubic,
    "gsa_synthesized": gsa_synthesized,
    "mtf_glp_synthesized": mtf_glp_synthesized,
}
# GDAL's own weighted Brovey (gdal_pansharpen.py defaults), where rasterio is installed
if gdal_available():
    BASELINES["gdal_brovey"] = _gdal_brovey
