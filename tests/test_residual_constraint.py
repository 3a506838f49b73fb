"""The residual-mean constraint of the one inference path (preset.diffusion.residual_mean):
"zero" removes each tile's per-band residual mean before blending, for every entry point (the
Fuser's whole-image path and the station's tile entry alike); "free" is the published sampler."""

from __future__ import annotations

import pytest
import torch

from ddif.inference.engine import InferencePath
from ddif.inference.tiling import Tiling


class _Offset:
    """A tile sampler whose residual is a per-band offset plus a zero-mean pattern."""

    device = torch.device("cpu")
    dtype = torch.float32
    stochastic = False

    def sample_batch(self, lms, pan, noise, generators=None):
        n, c, h, w = lms.shape
        offset = torch.arange(1, c + 1, dtype=torch.float32).view(1, c, 1, 1) * 0.01
        yy = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
        pattern = 0.001 * (yy - yy.mean())
        return (offset + pattern).expand(n, c, h, w).clone()


def _path(mode: str) -> InferencePath:
    return InferencePath(_Offset(), bands=3, guide_bands=1, max_dn=1.0, preset_name="t",
                         tiling=Tiling(16, 4, 4), residual_mean=mode)


def test_zero_mean_residual_keeps_each_tiles_mean():
    lms, pan = torch.full((1, 3, 40, 40), 0.4), torch.full((1, 1, 40, 40), 0.5)
    free = _path("free").fuse(lms, pan)
    zero = _path("zero").fuse(lms, pan)
    assert float((free - lms).mean()) == pytest.approx(0.02, abs=1e-4)   # the offsets 0.01, 0.02, 0.03
    torch.testing.assert_close(zero.mean(dim=(-2, -1)), lms.mean(dim=(-2, -1)), atol=2e-4, rtol=0)
    # the detail (the zero-mean pattern) is kept
    assert float((zero - lms).abs().max()) > 0.005
    tiles = _path("zero").sample_tiles(torch.rand(5, 3, 16, 16), torch.rand(5, 1, 16, 16), torch.randn(5, 3, 16, 16))
    torch.testing.assert_close(tiles.mean(dim=(-2, -1)), torch.zeros(5, 3), atol=1e-6, rtol=0)


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="residual_mean"):
        _path("sometimes")
    from ddif.config import DiffusionConfig

    with pytest.raises(ValueError, match="residual_mean"):
        DiffusionConfig(residual_mean="x")
