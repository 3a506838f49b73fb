"""Faults of the ground station found in operation, each with the case that showed it:
products of any size (overview read-back), manifests that point outside the inbox, disk full
anywhere, re-delivered scenes, two services on one inbox, a kill between archive moves, stale
temp files, and expected refusals of the command line. A do-nothing backend (returns lms) keeps
these tests fast; the real model is exercised in test_station.py."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from ddif.station.errors import OutputWriteError  # noqa: E402
from ddif.station.io import overview_factors, product_profile, verify_product  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CRS = "EPSG:32632"


# ------------------------------------------------------------------------------------------ 1. any size
def _write_strip(path: Path, width: int, height: int, *, block: int = 256, min_size: int = 64,
                 value: int = 7) -> list[int]:
    """A product-like GeoTIFF (the station's ``product_profile``: tiled, deflate, predictor 2),
    constant pixels, average overviews with the station's factors. Returns the factors."""
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    grid = SimpleNamespace(ms=SimpleNamespace(dtype="uint16"), bands=1,
                           pan=SimpleNamespace(width=width, height=height, crs=CRS,
                                               transform=from_origin(500000.0, 4200000.0, 2.0, 2.0)))
    profile = product_profile(grid, 0.0, block, "deflate", 1)
    factors = overview_factors(height, width, min_size)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, height, width), value, np.uint16))
        if factors:
            dst.build_overviews(factors, Resampling.average)
    return factors


def _verify(path: Path, width: int, height: int, factors: list[int]) -> None:
    verify_product(path, bands=1, height=height, width=width, dtype="uint16", overviews=factors)


@pytest.mark.parametrize("width,height", [(15361, 16), (40000, 8), (8, 40000)])
def test_verify_product_thin_strips(tmp_path, width, height):
    """15,361 px: GDAL lists the x128 overview as 127 (round(15361 / 121)); 8 x 40,000: GDAL's
    list is taken from the x axis, which stops shrinking at 1 px ([2, 4, 8, 8, 8, ...]). The check
    compares the level count and each level's size, which are right."""
    path = tmp_path / f"p_{width}x{height}.tif"
    factors = _write_strip(path, width, height)
    with rasterio.open(path) as src:
        listed = src.overviews(1)
    assert len(listed) == len(factors) and listed != factors          # GDAL's rounded list differs
    _verify(path, width, height, factors)                              # and the product is accepted
    for level, f in enumerate(factors):
        with rasterio.open(path, overview_level=level) as ov:
            assert (ov.height, ov.width) == (math.ceil(height / f), math.ceil(width / f))


def test_verify_product_width_sweep(tmp_path):
    """Every width class that failed (10,000, 15,000, 17,000-40,000) and the edges of every power
    of two up to 40,000, as 2-px strips."""
    widths = {64, 65, 127, 128, 129, 10000, 15000, 15361, 17000, 23456, 33333, 40000}
    widths |= {2 ** k + d for k in range(7, 16) for d in (-1, 0, 1)}
    widths |= set(range(17000, 40001, 1500))
    failures = []
    for w in sorted(widths):
        path = tmp_path / f"w{w}.tif"
        factors = _write_strip(path, w, 2, block=64)
        try:
            _verify(path, w, 2, factors)
        except OutputWriteError as exc:
            failures.append((w, str(exc)))
        path.unlink()
    assert not failures, f"{len(failures)} of {len(widths)} widths refused, e.g. {failures[:3]}"


def test_verify_product_still_refuses_a_bad_product(tmp_path):
    path = tmp_path / "p.tif"
    factors = _write_strip(path, 4000, 16)
    with pytest.raises(OutputWriteError, match="overview levels"):
        _verify(path, 4000, 16, factors + [2 * factors[-1]])
    with pytest.raises(OutputWriteError, match=r"expected \(1, 16, 4001, 'uint16'\)"):
        _verify(path, 4001, 16, factors)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])                       # truncated: the last blocks are gone
    with pytest.raises(OutputWriteError, match="cannot be read back"):
        _verify(path, 4000, 16, factors)


def test_verify_product_reads_a_bounded_amount(tmp_path, monkeypatch):
    """The read-back reads one block per band / overview level, whatever the scene size: every
    read is a window of at most one block, and numpy's traced peak is the same at 512 and 4096 px
    (the old full-band overview reads held a 2048 x 2048 array at 4096 px)."""
    import tracemalloc

    import rasterio.io

    calls = []
    real_read = rasterio.io.DatasetReader.read

    def read(self, *args, **kwargs):
        calls.append((args, kwargs))
        return real_read(self, *args, **kwargs)

    peaks = {}
    for size in (512, 4096):
        path = tmp_path / f"sq{size}.tif"
        factors = _write_strip(path, size, size)
        monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
        calls.clear()
        tracemalloc.start()
        _verify(path, size, size, factors)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        monkeypatch.undo()
        assert calls, "verify_product read nothing back"
        for args, kwargs in calls:
            assert "out_shape" not in kwargs, "a decimated full-band read"
            win = kwargs.get("window")
            assert win is not None and win.width <= 256 and win.height <= 256, (args, kwargs)
    assert peaks[4096] < 2 * peaks[512] + 2 ** 20, peaks
