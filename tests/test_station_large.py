"""Full-size products through the whole station (plan, fuse, write, overviews, read-back check,
quicklook): a product 15,361 px wide (a full Landsat-8 PAN row) with the real sampling path of a
tiny model, and a 40,000 px long side in both orientations, as thin strips, with a backend whose
residual is zero (the product is then the interpolated MS: what is tested is everything around
the network, at a cost the suite can afford). (``test_station_faults.py`` checks the read-back
rule alone over a sweep of widths.)"""
from __future__ import annotations

import math

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from test_station_support import CRS, ORIGIN, PAN_RES, shared_backend, small_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def strip_pair(folder, pan_h: int, pan_w: int, ratio: int = 4, bands: int = 8):
    """An MS + PAN pair whose PAN is ``pan_h x pan_w``; the MS covers it (ceil(size / ratio))."""
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    mh, mw = math.ceil(pan_h / ratio), math.ceil(pan_w / ratio)
    y, x = np.mgrid[0:mh, 0:mw]
    ms = np.stack([600 + 400 * np.sin(x / 37.0 + b) * np.cos(y / 23.0) + 20 * b for b in range(bands)])
    yy, xx = np.mgrid[0:pan_h, 0:pan_w]
    pan = (600 + 400 * np.sin(xx / (37.0 * ratio) + 0.5) * np.cos(yy / (23.0 * ratio)))[None]
    paths = folder / "s_MS.tif", folder / "s_PAN.tif"
    for path, arr, res in ((paths[0], ms, ratio * PAN_RES), (paths[1], pan, PAN_RES)):
        with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype="uint16", crs=CRS, transform=from_origin(*ORIGIN, res, res), nodata=0,
                           tiled=True, blockxsize=256, blockysize=256) as dst:
            dst.write(np.rint(arr).astype(np.uint16))
    return paths


class ZeroResidual:
    """The real backend's interface and facts, with a zero residual instead of the network."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def sample_tiles(self, lms, pan, noise, generators=None):
        import torch

        return torch.zeros_like(lms)


@pytest.mark.parametrize("pan_h, pan_w, network", [(64, 15361, True), (32, 40000, False), (40000, 32, False)])
def test_full_size_products_are_written(tmp_path, pan_h, pan_w, network):
    from ddif.station import run_scene
    from ddif.station.io import overview_factors, overview_sizes

    ms, pan = strip_pair(tmp_path / "in", pan_h, pan_w)
    out = tmp_path / "out.tif"
    cfg = small_config(metric_tiles=0, batch_size=64, block_size=256, quicklook_size=256)
    backend = shared_backend() if network else ZeroResidual(shared_backend())
    report = run_scene(ms, pan, out, backend, cfg)
    assert report["tiles"]["fused"] == report["tiles"]["total"]
    with rasterio.open(out) as src:
        assert (src.height, src.width, src.count) == (pan_h, pan_w, 8)
        factors = overview_factors(pan_h, pan_w, cfg.overview_min_size)
        assert len(src.overviews(1)) == len(factors) >= 7
        for level, (h, w) in enumerate(overview_sizes(pan_h, pan_w, factors)):
            with rasterio.open(out, overview_level=level) as ov:
                assert (ov.height, ov.width) == (h, w)
        last = src.read(window=((pan_h - 16, pan_h), (pan_w - 16, pan_w)))
    assert (last > 0).all() and 300 < last.mean() < 1100          # fused values, no nodata hole at the end
    assert (tmp_path / "out_quicklook.png").is_file()
