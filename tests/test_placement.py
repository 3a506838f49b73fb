"""Exact sub-pixel placement of the MS on the PAN grid, and MS-to-PAN registration.

A smooth field f(x, y) is sampled at the MS pixel centres (the MS raster) and at the PAN pixel
centres (the truth on the PAN grid); the interpolated MS the scene layer places on the PAN grid
must match f there for a corner-aligned ratio-4 pair (the usual VHR layout, residual -0.5 PAN px)
and for a Landsat ratio-2 pair (PAN grid offset by half a PAN pixel: residual 0). Placing the MS
at the nearest integer shift (the old rule) leaves the half-pixel error, which the tolerance
catches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from ddif.data.raster import Preprocessing, open_pair  # noqa: E402
from ddif.data.registration import (  # noqa: E402
    estimate_misregistration,
    ms_centre_in_pan,
    sample_axis,
    shift_image,
)
from ddif.data.scene import SceneReader  # noqa: E402


SCALE = {"m": 1.0}


def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth, band-limited field (periods of 47 / SCALE m and more, above the MS Nyquist), in DN."""
    x, y = x / SCALE["m"], y / SCALE["m"]
    return 1000 + 300 * np.sin(2 * np.pi * x / 61.0) * np.cos(2 * np.pi * y / 47.0) + 200 * np.sin(2 * np.pi * (x + y) / 83.0)


def write(path, data, transform):
    data = np.asarray(data)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=data.shape[0],
        dtype="float32", crs="EPSG:32631", transform=transform,
    ) as dst:
        dst.write(data.astype(np.float32))


def make_pair(tmp_path, ratio, pan_res, ms_origin, pan_origin, ms_size=40):
    ms_res = ratio * pan_res
    SCALE["m"] = ms_res / 2.0
    xm = ms_origin[0] + ms_res * (np.arange(ms_size) + 0.5)
    ym = ms_origin[1] - ms_res * (np.arange(ms_size) + 0.5)
    ms = field(xm[None, :], ym[:, None])[None].repeat(2, 0)
    n = ratio * ms_size + 2
    xp = pan_origin[0] + pan_res * (np.arange(n) + 0.5)
    yp = pan_origin[1] - pan_res * (np.arange(n) + 0.5)
    truth = field(xp[None, :], yp[:, None])
    write(tmp_path / "ms.tif", ms, from_origin(ms_origin[0], ms_origin[1], ms_res, ms_res))
    write(tmp_path / "pan.tif", truth[None], from_origin(pan_origin[0], pan_origin[1], pan_res, pan_res))
    return tmp_path / "ms.tif", tmp_path / "pan.tif", truth


def placed_lms(ms, pan, ratio, interpolation="bicubic"):
    pre = Preprocessing(4000.0, interpolation, "symmetric", 0)
    grid = open_pair(ms, pan, bands=None, guide_bands=None, ratio=ratio, preprocessing=pre)
    with SceneReader(grid, pre) as reader:
        h, w = grid.shape
        return grid, reader.ms_upsampled(0, 0, h, w)[0] * 4000.0


@pytest.mark.parametrize("interpolation", ["bicubic", "interp23tap"])
def test_corner_aligned_ratio4_is_placed_exactly(tmp_path, interpolation):
    ms, pan, truth = make_pair(tmp_path, 4, 0.5, (593000.0, 5747000.0), (593000.0, 5747000.0))
    grid, lms = placed_lms(ms, pan, 4, interpolation)
    assert grid.shift == (0, 0) and grid.subpixel == (-0.5, -0.5)
    inner = (slice(12, -12), slice(12, -12))
    err = np.abs(lms[inner] - truth[: lms.shape[0], : lms.shape[1]][inner])
    # what the old rule (integer shift, residual left) gives: the field half a PAN px away
    xs = 593000.0 + 0.5 * (np.arange(lms.shape[1]) + 0.5 + 0.5)
    ys = 5747000.0 - 0.5 * (np.arange(lms.shape[0]) + 0.5 + 0.5)
    old_err = np.abs(field(xs[None, :], ys[:, None])[inner] - truth[: lms.shape[0], : lms.shape[1]][inner])
    assert old_err.max() > 10.0  # the half-pixel error the tolerance below must catch
    assert err.max() < 2.0, err.max()
    assert np.abs(err).mean() < 0.3


def test_landsat_half_pixel_layout_needs_no_resampling(tmp_path):
    # Landsat: the 15 m PAN grid starts half a PAN pixel up-left of the 30 m MS grid
    ms, pan, truth = make_pair(tmp_path, 2, 15.0, (452475.0, 3408645.0), (452467.5, 3408652.5))
    grid, lms = placed_lms(ms, pan, 2)
    assert grid.subpixel == (0.0, 0.0)
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(lms[inner] - truth[: lms.shape[0], : lms.shape[1]][inner])
    assert err.max() < 3.0, err.max()


def test_windows_equal_the_whole_scene_with_a_residual(tmp_path):
    ms, pan, _ = make_pair(tmp_path, 4, 0.5, (593000.0, 5747000.0), (593000.0, 5747000.0))
    pre = Preprocessing(4000.0, "interp23tap", "symmetric", 0)
    grid = open_pair(ms, pan, bands=None, guide_bands=None, ratio=4, preprocessing=pre)
    with SceneReader(grid, pre) as reader:
        whole = reader.ms_upsampled(0, 0, *grid.shape)
        for y0, x0, h, w in ((0, 0, 37, 41), (33, 57, 50, 29), (100, 120, 62, 42)):
            part = reader.ms_upsampled(y0, x0, h, w)
            np.testing.assert_allclose(part, whole[:, y0 : y0 + h, x0 : x0 + w], atol=2e-6)


def test_sample_axis_is_exact_at_integers_and_cubic_between():
    x = torch.arange(10, dtype=torch.float64).pow(2)[None]
    np.testing.assert_array_equal(sample_axis(x, torch.arange(10.0), 1).numpy(), x.numpy())
    # Keys' kernel reproduces quadratics exactly inside the support
    mid = sample_axis(x, torch.tensor([3.5, 4.25]), 1)[0].numpy()
    np.testing.assert_allclose(mid, [3.5**2, 4.25**2], atol=1e-12)
    y = shift_image(torch.arange(20.0).view(1, 1, 4, 5), 0.0, 1.0)
    np.testing.assert_allclose(y[0, 0, :, :4].numpy(), torch.arange(20.0).view(4, 5)[:, 1:].numpy())


def test_ms_centre_in_pan_from_geotransforms():
    ms_t = from_origin(452475.0, 3408645.0, 30.0, 30.0)
    pan_t = from_origin(452467.5, 3408652.5, 15.0, 15.0)
    assert ms_centre_in_pan(ms_t, pan_t) == (1.0, 1.0)
    assert ms_centre_in_pan(from_origin(0, 0, 2.0, 2.0), from_origin(0, 0, 0.5, 0.5)) == (1.5, 1.5)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (-0.6, 1.3), (0.9, -0.25)])
def test_misregistration_is_measured(shift):
    """A PAN made from the MS bands' mixture, displaced by a known shift, is found again."""
    rng = np.random.default_rng(0)
    ratio, h, w = 4, 48, 52
    # band-limited random texture at PAN resolution
    base = torch.from_numpy(rng.normal(size=(3, ratio * h + 16, ratio * w + 16)))
    k = torch.tensor([1.0, 4, 6, 4, 1], dtype=torch.float64) / 16
    for _ in range(3):
        base = torch.nn.functional.conv2d(base[:, None], k.view(1, 1, 5, 1), padding=(2, 0))[:, 0]
        base = torch.nn.functional.conv2d(base[:, None], k.view(1, 1, 1, 5), padding=(0, 2))[:, 0]
    mix = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).view(3, 1, 1)
    pan_true = (base * mix).sum(0)
    # the PAN is seen displaced: pan(m) = true(m - shift)
    pan = shift_image(pan_true, -shift[0], -shift[1])[8:-8, 8:-8]
    centre = (1.5, 1.5)
    ys = ratio * torch.arange(h, dtype=torch.float64) + centre[0] + 8
    xs = ratio * torch.arange(w, dtype=torch.float64) + centre[1] + 8
    ms = sample_axis(sample_axis(base, ys, 1), xs, 2).numpy()
    found = estimate_misregistration(ms, pan.numpy(), ratio, centre, pan_gain=0.9)
    np.testing.assert_allclose(found.shift_pan_px, shift, atol=0.08)
    assert found.r2 > 0.9


def test_station_plan_checks_and_corrects_a_misregistered_pair(tmp_path):
    """An MS displaced by (+0.7, -0.4) PAN px from where its geotransform says: the plan measures
    it on several windows ("check": reported, a warning, nothing changed), and "measure" places the
    MS there (the plan's residual moves by the shift)."""
    from test_station_support import save_station_model

    from ddif.station import StationConfig
    from ddif.station.events import EventLog
    from ddif.station.plan import plan_scene

    rng = np.random.default_rng(3)
    ratio, pan_res, ms_size = 4, 0.5, 96
    n = ratio * ms_size
    base = torch.from_numpy(rng.normal(size=(3, n + 16, n + 16)))
    k = torch.tensor([1.0, 4, 6, 4, 1], dtype=torch.float64) / 16
    for _ in range(3):
        base = torch.nn.functional.conv2d(base[:, None], k.view(1, 1, 5, 1), padding=(2, 0))[:, 0]
        base = torch.nn.functional.conv2d(base[:, None], k.view(1, 1, 1, 5), padding=(0, 2))[:, 0]
    pan = (base * torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).view(3, 1, 1)).sum(0)[8:-8, 8:-8]
    shift = (0.7, -0.4)
    ys = ratio * torch.arange(ms_size, dtype=torch.float64) + 1.5 + 8 + shift[0]
    xs = ratio * torch.arange(ms_size, dtype=torch.float64) + 1.5 + 8 + shift[1]
    ms = sample_axis(sample_axis(base, ys, 1), xs, 2)
    # 8 bands for the station's test model: the three bands and five mixtures of them
    ms8 = torch.cat([ms, (ms[:1] + ms[1:2]) / 2, (ms[1:2] + ms[2:]) / 2, ms.mean(0, keepdim=True), ms[:1], ms[2:]])
    scale = lambda t: (800 + 150 * t).numpy()  # noqa: E731
    write(tmp_path / "ms.tif", scale(ms8), from_origin(593000.0, 5747000.0, ratio * pan_res, ratio * pan_res))
    write(tmp_path / "pan.tif", scale(pan)[None], from_origin(593000.0, 5747000.0, pan_res, pan_res))
    preset_model = save_station_model(tmp_path / "m.pt")
    from ddif.models import load_model

    preset = load_model(str(preset_model)).preset
    log = EventLog(stream=None)
    checked = plan_scene(tmp_path / "ms.tif", tmp_path / "pan.tif", preset, StationConfig(), log=log)
    rec = checked.registration
    assert rec["consistent"] and rec["applied_pan_px"] is None
    np.testing.assert_allclose(rec["shift_pan_px"], shift, atol=0.1)
    assert checked.grid.subpixel == (-0.5, -0.5)
    assert any(e["event"] == "misregistration" for e in log.events)
    corrected = plan_scene(tmp_path / "ms.tif", tmp_path / "pan.tif", preset, StationConfig(registration="measure"))
    np.testing.assert_allclose(
        np.add(corrected.grid.shift, corrected.grid.subpixel), np.add((-0.5, -0.5), rec["shift_pan_px"]), atol=1e-9
    )
    off = plan_scene(tmp_path / "ms.tif", tmp_path / "pan.tif", preset, StationConfig(registration="off"))
    assert off.registration == {"mode": "off"}


def test_the_gdal_block_cache_holds_the_configured_megabytes():
    """rasterio hands an integer GDAL_CACHEMAX to GDAL in bytes: the scene readers' 64 MB cache
    must reach GDAL as 64 MiB, not as a 64-byte cache that decompresses every block per read."""
    from ddif.data.raster import gdal_env

    with gdal_env(64):
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == 64 * 2**20
