"""Classical pansharpening baselines for side-by-side comparison (Vivone et al., IEEE TGRS 2015;
IEEE GRSM 2021): :func:`brovey`, :func:`gs`, :func:`gsa`, :func:`mtf_glp_hpm`.

``BASELINES`` maps a name to a function with the uniform signature
``fn(lms, pan, ms=None, ratio=4, sensor="wv3") -> fused`` (arguments a method does not use are
ignored; ``sensor`` may also be the per-band MTF gains), so evaluation code can loop over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .classical import brovey, gs, gsa, mtf_glp_hpm

__all__ = ["brovey", "gs", "gsa", "mtf_glp_hpm", "BASELINES", "Baseline"]

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


BASELINES: dict[str, Baseline] = {
    "brovey": _brovey,
    "gs": _gs,
    "gsa": _gsa,
    "mtf_glp_hpm": _mtf_glp_hpm,
}
