"""ddif.data.make_dataset (Wald-protocol patch datasets from a scene), synthetic PAN, GeoTIFF I/O."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ddif.data import (MakeDatasetConfig, PanCollectionH5, bandpass_pan_weights, make_dataset, nodata_mask,
                       read_raster, synthesize_pan, write_raster)
from ddif.data.make_dataset import LANDSAT8_OLI_BANDPASS_NM, split_regions

SHARED = Path(os.environ.get("DDIF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LANDSAT_SCENE = SHARED / "data" / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
LANDSAT_PAN_MS = SHARED / "data" / "landsat8-pan-ms"

RATIO = 4
MAX_DN = 4095.0


def _smooth(rng, c, h, w, lo=500, hi=3500):
    """Spatially correlated positive DN images (random Fourier features)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.zeros((c, h, w))
    for b in range(c):
        for _ in range(6):
            fy, fx, ph = rng.uniform(0, 12), rng.uniform(0, 12), rng.uniform(0, 2 * np.pi)
            out[b] += np.cos(2 * np.pi * (fy * yy + fx * xx) + ph)
    out = (out - out.min()) / (out.max() - out.min())
    return (lo + (hi - lo) * out).astype(np.uint16)


@pytest.fixture(scope="module")
def scene():
    """A 4-band MS (96 x 128) with a fill block, and a PAN at ratio 4 (384 x 512), uint16 DN."""
    rng = np.random.default_rng(0)
    ms = _smooth(rng, 4, 96, 128)
    pan = _smooth(rng, 1, 96 * RATIO, 128 * RATIO)
    ms[:, :20, 40:70] = 0                                 # fill (zero, as in Landsat L1 scenes)
    return ms, pan


def _cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path), name="syn", ratio=RATIO, sensor="generic", max_dn=MAX_DN, nodata=(0.0,),
                patch_size=16, stride=8, fill_margin=4, holdout_side="right", val_fraction=0.25, test_size=32,
                compression="")
    base.update(kw)
    return MakeDatasetConfig(**base)


def test_make_dataset_from_arrays(tmp_path, scene):
    from ddif.data.mtf import simulate_reduced_resolution

    ms, pan = scene
    cfg = _cfg(tmp_path)
    summary = make_dataset(cfg, ms=ms, pan=pan)
    regions = summary["regions"]
    # holdout on the right: test strip 32 px, then 32 px of validation (0.25 * 128), train the rest
    assert regions == {"test": (0, 96, 96, 32), "val": (0, 64, 96, 32), "train": (0, 0, 96, 64)}
    assert set(summary["files"]) == {"train", "val", "test", "test_full"}
    assert json.loads((tmp_path / "syn_summary.json").read_text())["train_patches"] == summary["train_patches"]

    fill = (ms == 0).any(0)
    p, m = cfg.patch_size, cfg.margin
    for split in ("train", "val"):
        ds = PanCollectionH5(summary["files"][split], MAX_DN, bands=4, guide_bands=1, ratio=RATIO)
        assert len(ds) == summary[f"{split}_patches"] > 0
        with h5py.File(ds.path) as f:
            coords = f["coords"][...]
            assert "synthesized" not in f.attrs["pan_source"] and f.attrs["ratio"] == RATIO
        _, c0, _, cw = regions[split]
        for i, (y, x) in enumerate(coords):
            assert c0 + m <= x and x + p + m <= c0 + cw, "patch (with margin) leaves its region"
            assert not fill[max(y - m, 0):y + p + m, max(x - m, 0):x + p + m].any(), "patch near fill"
            item = ds[i]
            np.testing.assert_allclose(item["gt"].numpy(), ms[:, y:y + p, x:x + p] / MAX_DN, rtol=1e-6)
    # fill was really there and was avoided (not an empty test)
    assert summary["train_rejected_fill"] > 0

    # ms / lms / pan of a patch come from the Wald simulation of its region
    ds = PanCollectionH5(summary["files"]["train"], MAX_DN)
    with h5py.File(ds.path) as f:
        y, x = f["coords"][0]
    train = ms[:, :, :64].astype(np.float32) / MAX_DN
    train[:, fill[:, :64]] = np.median(train[:, ~fill[:, :64]], axis=1)[:, None]   # as the builder does
    rr = simulate_reduced_resolution(torch.from_numpy(train)[None],
                                     torch.from_numpy(pan[:, :, :64 * RATIO].astype(np.float32) / MAX_DN)[None],
                                     ratio=RATIO, sensor="generic", padding="symmetric")
    item = ds[0]
    torch.testing.assert_close(item["ms"], rr.ms[0, :, y // RATIO:(y + p) // RATIO, x // RATIO:(x + p) // RATIO])
    torch.testing.assert_close(item["lms"], rr.lms[0, :, y:y + p, x:x + p])
    torch.testing.assert_close(item["pan"], rr.pan[0, :, y:y + p, x:x + p])

    test = PanCollectionH5(summary["files"]["test"], MAX_DN)
    assert len(test) == 1 and test.size == (32, 32)
    row, col, h, w = summary["test_crop"]
    assert col >= 96 and not fill[row:row + h, col:col + w].any()
    np.testing.assert_allclose(test[0]["gt"].numpy(), ms[:, row:row + h, col:col + w] / MAX_DN, rtol=1e-6)
    full = PanCollectionH5(summary["files"]["test_full"], MAX_DN)
    assert not full.has_gt and full.size == (32 * RATIO, 32 * RATIO)
    item = full[0]
    np.testing.assert_allclose(item["ms"].numpy(), ms[:, row:row + h, col:col + w] / MAX_DN, rtol=1e-6)
    np.testing.assert_allclose(item["pan"].numpy(), pan[:, RATIO * row:RATIO * (row + h),
                                                        RATIO * col:RATIO * (col + w)] / MAX_DN, rtol=1e-6)


def test_validation_and_test_regions_never_reach_training(tmp_path, scene):
    ms, pan = scene
    first = make_dataset(_cfg(tmp_path / "a"), ms=ms, pan=pan)
    ms2, pan2 = ms.copy(), pan.copy()
    rng = np.random.default_rng(5)
    ms2[:, :, 64:] = rng.integers(1, 4000, ms2[:, :, 64:].shape)          # change every held-out pixel
    pan2[:, :, 64 * RATIO:] = rng.integers(1, 4000, pan2[:, :, 64 * RATIO:].shape)
    second = make_dataset(_cfg(tmp_path / "b"), ms=ms2, pan=pan2)
    with h5py.File(first["files"]["train"]) as f1, h5py.File(second["files"]["train"]) as f2:
        for key in ("gt", "ms", "lms", "pan", "coords"):
            np.testing.assert_array_equal(f1[key][...], f2[key][...])
    with h5py.File(first["files"]["val"]) as f1, h5py.File(second["files"]["val"]) as f2:
        assert not np.array_equal(f1["gt"][...], f2["gt"][...])


def test_synthesized_pan_and_training_shuffle(tmp_path, scene):
    ms, _ = scene
    weights = (0.1, 0.2, 0.3, 0.4)
    cfg = _cfg(tmp_path, pan_weights=weights, max_train_patches=10, seed=3, holdout_side="top",
               val_fraction=0.3, test_size=0)
    summary = make_dataset(cfg, ms=ms)
    assert summary["pan"] == "synthesized" and summary["train_patches"] == 10 and "test" not in summary["files"]
    ds = PanCollectionH5(summary["files"]["train"], MAX_DN)
    with h5py.File(ds.path) as f:
        assert "synthesized" in f.attrs["pan_source"] and "semi-synthetic" in f.attrs["pan_source"]
        rows = f["coords"][:, 0]
    assert rows.min() >= summary["regions"]["train"][0]                      # holdout strips are on top
    for i in range(len(ds)):
        item = ds[i]
        torch.testing.assert_close(item["pan"], synthesize_pan(item["gt"], weights))
    again = make_dataset(cfg, ms=ms)                                          # same seed, same subset + order
    with h5py.File(again["files"]["train"]) as f:
        np.testing.assert_array_equal(f["coords"][:, 0], rows)


def test_synthesize_pan_and_bandpass_weights():
    bands = [LANDSAT8_OLI_BANDPASS_NM[b] for b in ("B2", "B3", "B4")]
    np.testing.assert_allclose(bandpass_pan_weights(bands, LANDSAT8_OLI_BANDPASS_NM["B8"]), (0.1, 0.6, 0.3))
    ms = np.random.rand(3, 5, 6).astype(np.float32)
    pan = synthesize_pan(ms, (1.0, 6.0, 3.0))                                 # weights are normalised
    assert pan.shape == (1, 5, 6) and pan.dtype == np.float32
    np.testing.assert_allclose(pan[0], 0.1 * ms[0] + 0.6 * ms[1] + 0.3 * ms[2], rtol=1e-6)
    batch = torch.from_numpy(np.stack([ms, ms]))
    assert synthesize_pan(batch, (1, 6, 3)).shape == (2, 1, 5, 6)
    for bad in ((1.0, 2.0), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(ValueError, match="weight"):
            synthesize_pan(ms, bad)
    with pytest.raises(ValueError, match="no band pass overlaps"):
        bandpass_pan_weights([(800, 900)], (500, 680))


def test_make_dataset_from_geotiffs_checks_registration(tmp_path, scene):
    ms, pan = scene
    crs = "EPSG:32632"
    ms_path = write_raster(tmp_path / "ms.tif", ms, crs=crs, transform=(30, 0, 500000, 0, -30, 5600000), nodata=0)
    pan_path = write_raster(tmp_path / "pan.tif", pan, crs=crs, transform=(7.5, 0, 500000, 0, -7.5, 5600000))
    cfg = _cfg(tmp_path / "out", ms=(str(ms_path),), pan=str(pan_path), nodata=(), crop=(8, 8, 80, 112))
    summary = make_dataset(cfg)
    with h5py.File(summary["files"]["train"]) as f:
        assert "32632" in f.attrs["crs"]
        assert tuple(f.attrs["scene_crop"]) == (8, 8, 80, 112)
        np.testing.assert_allclose(f.attrs["transform"], (30, 0, 500000 + 8 * 30, 0, -30, 5600000 - 8 * 30))
        y, x = f["coords"][0]
        np.testing.assert_allclose(f["gt"][0], ms[:, y:y + 16, x:x + 16], rtol=1e-6)   # the file holds DN
        assert tuple(f.attrs["ms_shift_pan_px"]) == (0, 0)          # a shared corner: the toolbox's pairing
        np.testing.assert_allclose(f.attrs["subpixel_offset_pan_px"], (-0.5, -0.5))
    # A PAN whose grid starts 3 PAN pixels further east (the same ground, cropped): the placement
    # rule pairs every MS pixel with the same PAN pixels as before (MS column 0 has no PAN left of
    # it, so it is dropped), it is not refused nor misregistered.
    from ddif.data.make_dataset import register_pair

    shifted = write_raster(tmp_path / "pan_shift.tif", pan[:, :, 3:], crs=crs,
                            transform=(7.5, 0, 500000 + 3 * 7.5, 0, -7.5, 5600000))
    base_cfg = _cfg(tmp_path / "reg", ms=(str(ms_path),), pan=str(pan_path))
    ms_win, pan_win, info = register_pair(str(ms_path), str(shifted), base_cfg)
    assert info["ms_shift_pan_px"] == (0, -3) and ms_win == (0, 1, 96, 127)
    assert pan_win == (0, 4 - 3, 384, 4 * 127)       # MS col 1 -> PAN cols 4..7 of the full grid = 1..4 here
    np.testing.assert_array_equal(pan[:, :, 4:4 + 4 * 127], pan[:, :, 3:][:, :, pan_win[1]:pan_win[1] + pan_win[3]])
    summary = make_dataset(_cfg(tmp_path / "shifted", ms=(str(ms_path),), pan=str(shifted)))
    with h5py.File(summary["files"]["train"]) as f:
        assert tuple(f.attrs["ms_shift_pan_px"]) == (0, -3)
    far = write_raster(tmp_path / "pan_far.tif", pan, crs=crs, transform=(7.5, 0, 505000, 0, -7.5, 5600000))
    with pytest.raises(ValueError, match="do not overlap"):
        make_dataset(_cfg(tmp_path / "bad", ms=(str(ms_path),), pan=str(far)))
    other_crs = write_raster(tmp_path / "pan_4326.tif", pan, crs="EPSG:4326",
                              transform=(7.5, 0, 500000, 0, -7.5, 5600000))
    with pytest.raises(ValueError, match="different CRSs"):
        make_dataset(_cfg(tmp_path / "bad", ms=(str(ms_path),), pan=str(other_crs)))
    coarse = write_raster(tmp_path / "pan_coarse.tif", pan[:, ::2, ::2], crs=crs,
                           transform=(15, 0, 500000, 0, -15, 5600000))
    with pytest.raises(ValueError, match="trained for ratio 4"):
        make_dataset(_cfg(tmp_path / "bad", ms=(str(ms_path),), pan=str(coarse)))


@pytest.mark.parametrize("kw, message", [
    (dict(patch_size=18), "multiple of ratio"),
    (dict(stride=6), "multiple of ratio"),
    (dict(holdout_side="middle"), "holdout_side"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(ratio=3, patch_size=12, stride=6, test_size=0), "power-of-2"),
    (dict(crop=(0, 0, 10)), "crop"),
])
def test_config_validation(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, **kw)


def test_make_dataset_errors(tmp_path, scene):
    ms, pan = scene
    with pytest.raises(ValueError, match="no PAN given"):
        make_dataset(_cfg(tmp_path), ms=ms)
    with pytest.raises(ValueError, match="PAN is 384x256"):
        make_dataset(_cfg(tmp_path), ms=ms, pan=pan[:, :, :256])
    with pytest.raises(ValueError, match="remain for training"):
        make_dataset(_cfg(tmp_path, val_fraction=0.6, test_size=64), ms=ms, pan=pan)
    blocked = ms.copy()
    blocked[:, ::16, 96:] = 0                                     # fill stripes everywhere in the test strip
    with pytest.raises(ValueError, match="no fill-free 32x32 test crop"):
        make_dataset(_cfg(tmp_path), ms=blocked, pan=pan)
    with pytest.raises(ValueError, match="all fill"):
        make_dataset(_cfg(tmp_path), ms=np.zeros_like(ms), pan=pan)
    assert not list(tmp_path.glob("*.h5")), "a failed build must leave no dataset behind"


def test_split_regions_bottom_and_left():
    cfg = MakeDatasetConfig(ratio=4, patch_size=16, stride=8, holdout_side="bottom", val_fraction=0.25, test_size=16)
    r = split_regions(100, 50, cfg)
    assert (r["test"].row, r["test"].height) == (84, 16) and (r["val"].row, r["val"].height) == (60, 24)
    assert (r["train"].row, r["train"].height) == (0, 60) and r["train"].width == 48
    cfg.holdout_side = "left"
    r = split_regions(40, 100, cfg)
    assert (r["test"].col, r["val"].col, r["train"].col) == (0, 16, 40) and r["train"].width == 60


# --------------------------------------------------------------------------------------------
# GeoTIFF reader
# --------------------------------------------------------------------------------------------

def test_raster_roundtrip_window_stack_and_errors(tmp_path):
    """The one reader (ddif.data.raster.read_raster): header as RasterInfo (rasterio CRS, Affine;
    a window's own transform), the one nodata rule, one-band files stacked as a VRT, errors that
    name the file."""
    from rasterio.transform import Affine

    data = np.arange(2 * 6 * 8, dtype=np.int16).reshape(2, 6, 8)
    data[:, 0, 0] = -32768
    t = (15.0, 0.0, 400000.0, 0.0, -15.0, 5000000.0)
    path = write_raster(tmp_path / "a.tif", data, crs="EPSG:32632", transform=t, nodata=-32768)
    r = read_raster(path)
    np.testing.assert_array_equal(r.array, data)
    assert r.nodata == -32768 and r.info.crs.to_epsg() == 32632 and r.transform_tuple == t
    assert r.info.transform == Affine(*t) and "32632" in r.crs_wkt
    assert nodata_mask(r.array, [r.nodata])[0, 0] and nodata_mask(r.array, [r.nodata]).sum() == 1
    assert nodata_mask(r.array, [r.nodata, 1.0]).sum() == 2
    w = read_raster(path, window=(2, 3, 4, 5))
    np.testing.assert_array_equal(w.array, data[:, 2:6, 3:8])
    assert w.transform_tuple == (15.0, 0.0, 400000.0 + 45, 0.0, -15.0, 5000000.0 - 30) and w.info.shape == (4, 5)
    with pytest.raises(ValueError, match="not inside"):
        read_raster(path, window=(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"has 2 bands.*\[3\]"):
        read_raster(path, bands=[3])
    assert read_raster(path, bands=[2]).array.shape == (1, 6, 8)
    one = [write_raster(tmp_path / f"b{k}.tif", data[k], crs="EPSG:32632", transform=t, nodata=-32768) for k in (0, 1)]
    stack = read_raster(one)
    np.testing.assert_array_equal(stack.array, data)
    assert stack.nodata == -32768 and stack.transform_tuple == t and stack.info.count == 2
    with pytest.raises(ValueError, match="has 2 bands, expected 1"):      # stacks are one band per file
        read_raster([path, path])
    other = write_raster(tmp_path / "c.tif", data[0, :5], crs="EPSG:32632", transform=t, nodata=-32768)
    with pytest.raises(ValueError, match="c.tif: size"):
        read_raster([one[0], other])
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        read_raster(tmp_path / "missing.tif")
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match="garbage.tif: cannot open as a GeoTIFF"):
        read_raster(garbage)
    noise = np.random.default_rng(0).integers(0, 60000, (1, 256, 256), dtype=np.uint16)
    big = write_raster(tmp_path / "big.tif", noise, compress="deflate")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.tif: cannot"):
        read_raster(truncated)


def test_a_dataset_refuses_nan_that_is_not_its_nodata(tmp_path):
    """The one non-finite rule: NaN is nodata where the file (or --nodata) says so, refused otherwise."""
    from ddif.data.sources import load_image

    ms = np.full((3, 8, 8), 0.25, dtype=np.float32)
    ms[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"MS \(array\)|MS: 1 pixels hold NaN/Inf"):
        load_image(ms, "MS", [], [])
    loaded = load_image(ms, "MS", [], [float("nan")])
    assert loaded.fill[2, 3] and loaded.fill.sum() == 1


# --------------------------------------------------------------------------------------------
# real data (../shared)
# --------------------------------------------------------------------------------------------

def test_real_landsat8_rgb_crop_with_synthesized_pan(tmp_path):
    if not LANDSAT_SCENE.exists():
        pytest.skip(f"{LANDSAT_SCENE} not found (set DDIF_SHARED to the shared folder)")
    weights = bandpass_pan_weights([LANDSAT8_OLI_BANDPASS_NM[b] for b in ("B2", "B3", "B4")],
                                   LANDSAT8_OLI_BANDPASS_NM["B8"])
    # a crop across the scene's fill edge (zeros in the top-right of the scene)
    cfg = MakeDatasetConfig(ms=(str(LANDSAT_SCENE),), out_dir=str(tmp_path), name="l8", ratio=4, sensor="landsat8",
                            pan_weights=weights, nodata=(0.0,), crop=(300, 900, 256, 320), patch_size=32, stride=16,
                            val_fraction=0.25, test_size=64, compression="", max_dn=32767.0)
    summary = make_dataset(cfg)
    assert summary["train_patches"] > 20 and summary["val_patches"] > 5 and summary["train_rejected_fill"] > 0
    scene = read_raster(LANDSAT_SCENE, window=cfg.crop).array
    for split in ("train", "val", "test"):
        ds = PanCollectionH5(summary["files"][split], "landsat_small")     # 3 bands + 1 PAN, max DN 32767
        with h5py.File(ds.path) as f:
            coords, size = f["coords"][...], f["gt"].shape[-1]
            assert "semi-synthetic" in f.attrs["pan_source"]
        for i in range(0, len(ds), 7):
            y, x = coords[i] - np.array(cfg.crop[:2])
            window = scene[:, y:y + size, x:x + size]
            assert (window > 0).all(), "a patch contains Landsat fill"
            item = ds[i]
            np.testing.assert_allclose(item["gt"].numpy(), window / 32767.0, rtol=1e-6)
            assert 0.05 < float(item["lms"].mean()) < 0.5


def test_real_landsat8_pan_ms_pair(tmp_path):
    if not LANDSAT_PAN_MS.exists():
        pytest.skip(f"{LANDSAT_PAN_MS} not found (set DDIF_SHARED to the shared folder)")
    ms = tuple(str(p) for p in sorted(LANDSAT_PAN_MS.glob("*_B[1-7].TIF")))
    pan = str(next(LANDSAT_PAN_MS.glob("*_B8.TIF")))
    cfg = MakeDatasetConfig(ms=ms, pan=pan, out_dir=str(tmp_path), name="pm", ratio=2, sensor="landsat8",
                            patch_size=8, stride=4, fill_margin=0, val_fraction=0.3, test_size=8, compression="")
    summary = make_dataset(cfg)
    train = PanCollectionH5(summary["files"]["train"], 32767.0, bands=7, guide_bands=1, ratio=2)  # int16 data
    assert len(train) > 0 and train[0]["ms"].shape == (7, 4, 4)
    full = PanCollectionH5(summary["files"]["test_full"], summary["max_dn"], ratio=2)
    assert full[0]["pan"].shape == (1, 16, 16) and not full.has_gt
    with h5py.File(full.path) as f:
        # Landsat's PAN grid sits half a PAN pixel (7.5 m) off the MS grid, by design: one placement
        # rule (the station's) pairs upsampled MS row k with PAN row k - 1, exactly
        assert tuple(f.attrs["ms_shift_pan_px"]) == (-1, 0)
        np.testing.assert_allclose(f.attrs["subpixel_offset_pan_px"], (0.0, 0.0), atol=1e-9)


def _fit_r2(ms: np.ndarray, pan_lr: np.ndarray) -> float:
    """R^2 of the least-squares fit of a PAN (sampled on the MS grid) by the MS bands."""
    a = np.concatenate([ms.reshape(ms.shape[0], -1).T, np.ones((ms[0].size, 1))], axis=1)
    y = pan_lr.ravel()
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return 1 - float(((a @ coef - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_landsat_placement_registers_the_real_pan(tmp_path):
    """On the real Landsat-8 pair, the PAN smoothed to about the MS resolution ([1, 2, 1] / 4 per
    axis) and sampled where the placement rule puts each MS sample (upsampled pixel 2j + phase,
    plus the shift (-1, 0)) is explained by the MS bands far better than when sampled corner to
    corner (shift (0, 0): 15 m off) or one PAN pixel off in any direction: the rule is right,
    not only consistent."""
    if not LANDSAT_PAN_MS.exists():
        pytest.skip(f"{LANDSAT_PAN_MS} not found (set DDIF_SHARED to the shared folder)")
    from ddif.data.make_dataset import register_pair
    from ddif.data.scene import interpolation_geometry

    ms_paths = tuple(str(p) for p in sorted(LANDSAT_PAN_MS.glob("*_B[2-5].TIF")))
    pan_path = str(next(LANDSAT_PAN_MS.glob("*_B8.TIF")))
    cfg = MakeDatasetConfig(ms=ms_paths, pan=pan_path, out_dir=str(tmp_path), ratio=2, sensor="landsat8",
                            patch_size=8, stride=4)
    (j0, i0, h, w), (py, px, _, _), info = register_pair(ms_paths, pan_path, cfg)
    assert info["ms_shift_pan_px"] == (-1, 0) and (j0, i0) == (1, 0) and (py, px) == (1, 0)
    phase = interpolation_geometry(2, "interp23tap", "symmetric").phase
    ms = read_raster(ms_paths).array.astype(np.float64)
    pan = read_raster(pan_path).array[0].astype(np.float64)
    k = np.array([0.25, 0.5, 0.25])
    padded = np.pad(pan, 1, mode="edge")
    smooth = sum(k[a] * k[b] * padded[a:a + 82, b:b + 82] for a in range(3) for b in range(3))
    j, i = np.arange(1, 40), np.arange(1, 40)               # MS samples whose neighbourhood is inside

    def r2(sy, sx):
        return _fit_r2(ms[:, 1:40, 1:40], smooth[np.ix_(2 * j + phase + sy, 2 * i + phase + sx)])

    registered = r2(*info["ms_shift_pan_px"])
    others = {(dy, dx): r2(-1 + dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)}
    assert registered > 0.95 and registered > max(others.values()) + 0.1, (registered, others)
    assert r2(0, 0) < 0.85                                   # the corner-to-corner pairing
