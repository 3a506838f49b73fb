"""Ground-station pipeline: one scene end to end, dry run, the CLI, the watch service with every
bad-scene case, and a real Landsat-8 PAN + MS pair (see also test_station_resume.py for kill -9
and test_station_seams.py for blending and the memory bound)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from test_station_support import journal_tiles, station_backend  # noqa: F401  (fixture)
from test_station_support import (CRS, backend_for, read, save_station_model, small_config, station_model,
                                  station_preset, synthetic_scene)

from ddif.station import SceneError, StationService, WatchConfig, plan_scene, run_scene
from ddif.station.events import EventLog


SHARED = Path(os.environ.get("DDIF_SHARED", Path(__file__).resolve().parents[2] / "shared"))


# ------------------------------------------------------------------------------------------ one scene
@pytest.fixture(scope="module")
def one_scene(tmp_path_factory, station_backend):
    folder = tmp_path_factory.mktemp("one")
    ms, pan = synthetic_scene(folder / "in", "s1")
    out = folder / "out" / "s1_fused.tif"
    log = EventLog(stream=None)
    report = run_scene(ms, pan, out, station_backend, small_config(), log=log)
    return {"ms": ms, "pan": pan, "out": out, "report": report, "log": log, "folder": folder}


def test_product_georeferencing_dtype_and_format(one_scene):
    data, profile, _ = read(one_scene["out"])
    _, pan_profile, _ = read(one_scene["pan"])
    _, ms_profile, _ = read(one_scene["ms"])
    assert profile["crs"] == pan_profile["crs"] and profile["crs"].to_string() == CRS
    assert profile["transform"] == pan_profile["transform"]
    assert (profile["height"], profile["width"]) == (pan_profile["height"], pan_profile["width"]) == (256, 256)
    assert profile["count"] == 8 and profile["dtype"] == ms_profile["dtype"] == "uint16"
    assert profile["nodata"] == 0
    assert profile["tiled"] and profile["blockxsize"] == 64 and profile["compress"] == "deflate"
    with rasterio.open(one_scene["out"]) as src:
        assert src.overviews(1) == [2, 4]
        assert src.descriptions[0] == "B1 (pansharpened)"
        assert "DATETIME" not in {k.upper() for k in src.tags()}
    valid = data[0] != 0
    assert data.max() <= 2047                                  # the input's DN range (max DN of the model)
    assert np.array_equal(valid[None].repeat(8, 0), data != 0)  # a pixel is nodata in all bands or none


def test_nodata_kept(one_scene):
    data, _, _ = read(one_scene["out"])
    nodata = data[0] == 0
    # MS nodata: 3 MS pixels top/left = 12 PAN pixels; PAN nodata: 12 bottom rows (test_station_support)
    expected = np.zeros((256, 256), bool)
    expected[:12, :] = expected[:, :12] = expected[-12:, :] = True
    assert np.array_equal(nodata, expected)


def test_product_is_a_fusion_close_to_the_interpolated_ms(one_scene, station_backend):
    """The product is rint((lms + the model's residual) x max DN) at every valid pixel, within
    1 DN, with lms computed here straight from the MS (23-tap interpolation of the whole MS) and
    the residual from ddif.Fuser on the whole scene (64 px tiles, 16 px overlap, seed 0): the
    windowed reading, journaling and block assembly add nothing. The residual is not zero (a
    fusion, not the interpolated MS) and small (a trained model's output stays near lms)."""
    import ddif
    from ddif.data.mtf import upsample
    from ddif.data.registration import shift_image
    from ddif.data.scene import read_scene

    ms, _, _ = read(one_scene["ms"])
    data, _, _ = read(one_scene["out"])
    _, lms, pan, valid = read_scene(one_scene["ms"], one_scene["pan"], preset=station_backend.preset)
    direct = upsample(torch.from_numpy(ms.astype(np.float32) / 2047)[None], 4, padding="symmetric")[0]
    # the grids share their top-left corner: MS pixel j's centre is PAN 4 j + 1.5, the 23-tap grid
    # puts it at 4 j + 2, so the scene layer resamples by half a PAN pixel (exact placement)
    direct = shift_image(direct.double(), 0.5, 0.5).float().numpy()
    # beyond the reach of the filled top / left MS nodata border (3 MS px + the 23-tap kernel's
    # 33 PAN px); the PAN's nodata rows do not enter lms
    inner = (slice(None), slice(48, None), slice(48, None))
    np.testing.assert_allclose(lms[inner], direct[inner], atol=1e-6)
    fuser = ddif.Fuser(station_backend.model, steps=1, tile_size=64, tile_overlap=16)
    residual = fuser.fuse(torch.from_numpy(lms), torch.from_numpy(pan), seed=0, return_residual=True).numpy()
    want = np.rint(np.clip(lms + residual, 0, 1) * 2047)
    assert np.abs(data[:, valid] - want[:, valid]).max() <= 1
    res_dn = np.abs(residual[:, valid]) * 2047
    assert 2 < res_dn.mean() < 0.05 * 2047 and res_dn.max() > 10


def test_quicklook_and_report(one_scene):
    from PIL import Image

    out = one_scene["out"]
    ql = out.with_name("s1_fused_quicklook.png")
    with Image.open(ql) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
        rgb = np.asarray(im)
    assert (rgb[:12] == 0).all() and rgb[100:140, 100:140].std() > 0     # nodata black, content stretched
    report = json.loads(out.with_name("s1_fused_report.json").read_text())
    assert report["backend"]["name"] == "pytorch" and report["backend"]["ratio"] == 4
    assert report["tiles"]["total"] == 25 and report["tiles"]["fused"] == 25 and report["tiles"]["batches"] == 7
    assert report["tiles"]["tiles_computed"] == 25
    for key in ("plan_s", "fuse_s", "write_s", "quality_s", "total_s"):
        assert report["timing_s"][key] >= 0
    q = report["quality"]
    assert len(q["tiles"]) == 2 and set(q["mean"]) == {"D_lambda", "D_s", "HQNR"}
    assert all(0 <= q["mean"][k] <= 1 for k in ("D_lambda", "D_s", "HQNR"))
    assert abs(q["mean"]["HQNR"] - np.mean([(1 - t["D_lambda"]) * (1 - t["D_s"]) for t in q["tiles"]])) < 1e-9
    assert report["quicklook"]["bands"] == [4, 2, 1]
    assert report["outputs"] == {"product": "s1_fused.tif", "quicklook": "s1_fused_quicklook.png",
                                 "report": "s1_fused_report.json", "stac_item": "s1_fused.json"}
    # nothing but the products and the STAC item is left beside them (no .partial, journal removed)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["s1_fused.tif", "s1_fused_quicklook.png", "s1_fused_report.json", "s1_fused.json"])
    events = [e["event"] for e in one_scene["log"].events]
    assert events[0] == "scene_plan" and events[-1] == "scene_written" and "tiles_progress" in events


def test_plan_and_memory_bound_text(one_scene, station_backend):
    plan = plan_scene(one_scene["ms"], one_scene["pan"], station_backend, small_config())
    text = plan.describe()
    assert "5x5 grid of 64x64" in text and "ratio 4" in text and "memory" in text
    assert plan.grid.shift == (0, 0) and plan.grid.subpixel == (-0.5, -0.5)   # shared corner: toolbox phase
    assert plan.memory_bound_bytes()["total"] < 64 * 2 ** 20


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_station_model(tmp_path_factory.mktemp("model") / "station_tiny.pt")


def test_cli_dry_run_writes_nothing(tmp_path, model_file, capsys):
    from ddif.cli.station import main

    ms, pan = synthetic_scene(tmp_path / "in", "d", ms_size=32)
    out = tmp_path / "out" / "d.tif"
    rc = main(["run", "--ms", str(ms), "--pan", str(pan), "--model", str(model_file), "--out", str(out),
               "--backend", "pytorch", "--tile-size", "64", "--overlap", "16", "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "dry run: nothing written" in text and "3x3 grid of 64x64" in text and "9 to fuse" in text
    assert not out.parent.exists()


def test_cli_run_and_ratio_refusal(tmp_path, model_file, capsys):
    from ddif.cli.station import main

    ms, pan = synthetic_scene(tmp_path / "in", "c", ms_size=16)
    out = tmp_path / "c.tif"
    rc = main(["run", "--ms", str(ms), "--pan", str(pan), "--model", str(model_file), "--out", str(out),
               "--backend", "pytorch", "--tile-size", "64", "--no-progress"])
    assert rc == 0 and out.is_file()
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tiles"] == 1 and summary["product"] == str(out)
    ms2, pan2 = synthetic_scene(tmp_path / "in2", "r", ms_size=16, ratio=2)
    rc = main(["run", "--ms", str(ms2), "--pan", str(pan2), "--model", str(model_file), "--out",
               str(tmp_path / "r.tif"), "--backend", "pytorch"])
    err = capsys.readouterr().err
    assert rc == 2 and "resolution ratio is 2" in err and "ratio 4" in err
    assert not (tmp_path / "r.tif").exists()


# ------------------------------------------------------------------------------------------ bad scenes
def _corrupt(path: Path) -> None:
    path.write_bytes(b"II*\x00" + os.urandom(2000))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_refusals(tmp_path, station_backend):
    cfg = small_config()
    cases = {}
    ms, pan = synthetic_scene(tmp_path / "ratio", "x", ms_size=16, ratio=2)
    cases["wrong_ratio"] = (ms, pan, "resolution ratio is 2")
    ms, pan = synthetic_scene(tmp_path / "frac", "x", ms_size=16, ms_res=5.0)
    cases["wrong_ratio "] = (ms, pan, "not a whole number")
    ms, pan = synthetic_scene(tmp_path / "far", "x", ms_size=16, pan_origin_shift=(5000.0, 0.0))
    cases["no_overlap"] = (ms, pan, "do not overlap")
    ms, pan = synthetic_scene(tmp_path / "bands", "x", ms_size=16, bands=4)
    cases["wrong_bands"] = (ms, pan, "has 4 bands, the model fuses 8")
    ms, pan = synthetic_scene(tmp_path / "crs", "x", ms_size=16)
    with rasterio.open(pan, "r+") as dst:
        dst.crs = "EPSG:32633"
    cases["bad_grid"] = (ms, pan, "different CRSs")
    for expected, (ms, pan, text) in cases.items():
        with pytest.raises(SceneError, match=text) as info:
            plan_scene(ms, pan, station_backend, cfg)
        assert info.value.category == expected.strip()


def test_watch_quarantines_every_bad_case_and_keeps_going(tmp_path, station_backend):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    synthetic_scene(inbox, "good", ms_size=16)
    p = synthetic_scene(inbox, "corrupt", ms_size=16)
    _corrupt(p[0])
    p = synthetic_scene(inbox, "truncated", ms_size=32)
    _truncate(p[1])
    p = synthetic_scene(inbox, "lone", ms_size=16)
    p[1].unlink()
    (inbox / "lone.ready").touch()
    synthetic_scene(inbox, "ratio", ms_size=16, ratio=2)
    synthetic_scene(inbox, "far", ms_size=16, pan_origin_shift=(0.0, 9000.0))
    synthetic_scene(inbox, "empty", ms_size=16, border=16)           # MS all nodata
    # a manifest scene with free file names, and a broken manifest
    synthetic_scene(inbox, "m", ms_size=16, ms_suffix="_multispectral.tif", pan_suffix="_panchromatic.tif")
    (inbox / "m.manifest.json").write_text(json.dumps({"ms": "m_multispectral.tif", "pan": "m_panchromatic.tif"}))
    (inbox / "broken.manifest.json").write_text("{not json")
    # arrival order: "m" arrived first, "good" second
    t = 1_700_000_000
    for i, name in enumerate(sorted(os.listdir(inbox))):
        os.utime(inbox / name, (t + 100 + i, t + 100 + i))
    for name in ("m_multispectral.tif", "m_panchromatic.tif", "m.manifest.json"):
        os.utime(inbox / name, (t, t))
    for name in ("good_MS.tif", "good_PAN.tif"):
        os.utime(inbox / name, (t + 1, t + 1))

    log = EventLog(stream=None)
    service = StationService(inbox, outbox, station_backend, small_config(metric_tiles=1),
                             WatchConfig(poll_interval_s=0.01, stable_polls=2), log=log)
    assert service.run(once=True) == 0

    expected = {"corrupt": "corrupt", "truncated": "corrupt", "lone": "missing_partner", "ratio": "wrong_ratio",
                "far": "no_overlap", "empty": "all_nodata", "broken": "bad_manifest"}
    for scene, category in expected.items():
        reason = json.loads((inbox / "quarantine" / scene / "reason.json").read_text())
        assert reason["category"] == category, (scene, reason)
        assert reason["reason"]
        assert not any(f.name.startswith(scene + "_") for f in inbox.iterdir()), scene
    assert sorted(service.quarantined) == sorted(expected)
    assert service.processed == ["m", "good"]                    # arrival order
    for scene in ("m", "good"):
        assert (outbox / scene / f"{scene}.tif").is_file() and (outbox / scene / f"{scene}_report.json").is_file()
        assert (inbox / "processed" / scene).is_dir()
        report = json.loads((outbox / scene / f"{scene}_report.json").read_text())
        assert report["outputs"]["product"] == f"{scene}.tif"
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".")) == ["collection.json", "good", "m"]
    assert not list(outbox.glob(".*.partial")) and not list((outbox / ".work").iterdir())
    events = [e["event"] for e in log.events]
    assert events[0] == "service_start" and events[-1] == "service_stop"
    assert events.count("scene_quarantined") == len(expected) and events.count("scene_done") == 2
    assert all(set(e) >= {"ts", "level", "event"} for e in log.events)


def test_watch_waits_for_stable_files_and_ignores_uploads(tmp_path, station_backend):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    ms, pan = synthetic_scene(inbox, "w", ms_size=16)
    (inbox / ".w2_MS.tif").write_bytes(b"uploading")      # hidden and .partial files are not scenes
    (inbox / "w3_PAN.tif.partial").write_bytes(b"uploading")
    log = EventLog(stream=None)
    service = StationService(inbox, outbox, station_backend, small_config(metric_tiles=0),
                             WatchConfig(poll_interval_s=0.01, stable_polls=3), log=log)
    worked, waiting = service.poll()
    assert not worked and waiting                           # seen once: not yet stable
    with open(pan, "ab") as f:                              # still growing: the count restarts
        f.write(b"\0")
    assert service.poll() == (False, True)
    assert service.poll() == (False, True)
    worked, _ = service.poll()
    assert worked and service.processed == ["w"]


def test_watch_orphan_timeout(tmp_path, station_backend):
    inbox = tmp_path / "inbox"
    ms, pan = synthetic_scene(inbox, "o", ms_size=16)
    pan.unlink()
    service = StationService(inbox, tmp_path / "out", station_backend, small_config(),
                             WatchConfig(poll_interval_s=0.01, orphan_timeout_s=3600), log=EventLog(stream=None))
    service.run(once=True)
    assert ms.exists() and not service.quarantined          # young orphan: wait for its partner
    service = StationService(inbox, tmp_path / "out", station_backend, small_config(),
                             WatchConfig(poll_interval_s=0.01, orphan_timeout_s=0), log=EventLog(stream=None))
    service.run(once=True)
    assert service.quarantined == ["o"] and (inbox / "quarantine" / "o" / "o_MS.tif").exists()


def test_second_service_on_same_outbox_refused(tmp_path, station_backend):
    import fcntl

    outbox = tmp_path / "out"
    outbox.mkdir()
    (tmp_path / "in").mkdir()
    fd = os.open(outbox / ".station.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        service = StationService(tmp_path / "in", outbox, station_backend, log=EventLog(stream=None))
        with pytest.raises(RuntimeError, match="already serving"):
            service.run(once=True)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------ real scene
LANDSAT = SHARED / "data" / "landsat8-pan-ms"
L8 = "LC08_L1TP_195025_20130707_20170503_01_T1_{}.TIF"


@pytest.fixture(scope="module")
def landsat_pair(tmp_path_factory):
    if not LANDSAT.is_dir():
        pytest.skip(f"{LANDSAT} not found (set DDIF_SHARED to the shared folder)")
    folder = tmp_path_factory.mktemp("landsat")
    bands = []
    for b in range(1, 8):
        with rasterio.open(LANDSAT / L8.format(f"B{b}")) as src:
            bands.append(src.read(1))
            profile = src.profile
    profile.update(count=7, tiled=False)
    ms = folder / "L8_MS.tif"
    with rasterio.open(ms, "w", **profile) as dst:
        dst.write(np.stack(bands))
        for i in range(7):
            dst.set_band_description(i + 1, f"B{i + 1}")
    return ms, LANDSAT / L8.format("B8")


def test_real_landsat8_pair(tmp_path, landsat_pair):
    """Real Landsat-8 OLI B1-B7 (30 m) + B8 PAN (15 m), int16, nodata -32768: the grid check finds
    ratio 2 and places the MS exactly (PAN pixel centres fall on MS pixel centres: no residual;
    the PAN grid starts half a PAN pixel west of and half a PAN pixel south of the MS corner);
    a ratio-4 model is refused; a small random 7-band ratio-2 model (no trained one exists) runs
    the whole pipeline on it."""
    ms, pan = landsat_pair
    wrong = backend_for(station_model(station_preset(bands=7, ratio=4)))
    with pytest.raises(SceneError, match="ratio is 2") as info:
        plan_scene(ms, pan, wrong)
    assert info.value.category == "wrong_ratio"

    backend = backend_for(station_model(station_preset(bands=7, ratio=2, max_dn=32767.0, sensor="landsat8")))
    plan = plan_scene(ms, pan, backend, small_config())
    assert plan.grid.ratio == 2 and plan.grid.shift == (-1, 0) and plan.grid.subpixel == (0.0, 0.0)
    out = tmp_path / "l8.tif"
    report = run_scene(ms, pan, out, backend, small_config(tile_size=48, overlap=8, metric_tiles=1, metric_block=16))
    data, profile, _ = read(out)
    _, pan_profile, _ = read(pan)
    assert profile["crs"] == pan_profile["crs"] and profile["transform"] == pan_profile["transform"]
    assert profile["dtype"] == "int16" and profile["nodata"] == -32768 and data.shape == (7, 82, 82)
    valid = data != -32768
    assert data[valid].min() >= 0 and data.max() <= 32767
    # MS row 0 is centred on PAN row 0 (y) and MS col 0 on PAN col 1 (x): the MS footprint ends
    # before the last PAN row, which is nodata; every other pixel is valid
    assert (data[:, -1] == -32768).all() and (data[:, :-1] != -32768).all()
    assert report["quality"]["tiles"] and 0 <= report["quality"]["mean"]["HQNR"] <= 1


# ------------------------------------------------------------------------------------------ other inputs
def test_float_scene_with_nan_nodata(tmp_path):
    backend = backend_for(station_model(station_preset(max_dn=1.0)))
    ms, pan = synthetic_scene(tmp_path, "f", ms_size=16, dtype="float32", nodata=float("nan"), max_dn=1.0, border=2)
    out = tmp_path / "f.tif"
    run_scene(ms, pan, out, backend, small_config(metric_tiles=0))
    data, profile, _ = read(out)
    assert profile["dtype"] == "float32" and np.isnan(profile["nodata"])
    nodata = np.isnan(data)
    assert nodata.all(axis=0).sum() == nodata.any(axis=0).sum() > 0
    assert nodata[0, :8].all() and nodata[0, -8:].all() and not nodata[0, 8:-8, 8:].any()
    assert 0 <= np.nanmin(data) and np.nanmax(data) <= 1.0


def test_non_power_of_two_ratio_uses_bicubic(tmp_path):
    backend = backend_for(station_model(station_preset(ratio=3)))
    ms, pan = synthetic_scene(tmp_path, "r3", ms_size=16, ratio=3)
    plan = plan_scene(ms, pan, backend, small_config())
    assert plan.grid.ratio == 3 and plan.grid.interpolation == "bicubic" and plan.grid.shift == (0, 0)


def test_ddif_cli_has_station_commands():
    from ddif.cli.main import build_parser

    args = build_parser().parse_args(["station", "watch", "--inbox", "i", "--outbox", "o", "--model", "m.pt",
                                      "--once", "--tile-size", "128", "--stable-polls", "3"])
    assert args._run.__name__ == "cmd_watch" and args.once


LANDSAT_RGB = SHARED / "data" / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"


def test_real_zero_filled_scene_with_input_nodata(tmp_path):
    """Semi-synthetic pair from the real Landsat-8 B2-B4 scene (uint16 counts, real CRS and
    transform, zero fill without a nodata tag): a 256 x 256 crop across the fill edge is the
    PAN-resolution truth; the PAN is its band mean (a synthesised stand-in, not a real PAN band),
    the MS its 2 x 2 box average (fill wherever a fill pixel is in the box). With
    ``input_nodata=0`` the fill stays nodata in the product, on the PAN grid of the crop."""
    if not LANDSAT_RGB.is_file():
        pytest.skip(f"{LANDSAT_RGB} not found (set DDIF_SHARED to the shared folder)")
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    with rasterio.open(LANDSAT_RGB) as src:
        win = Window(1000, 150, 256, 256)
        truth = src.read(window=win).astype(np.float64)
        pan_transform, crs = window_transform(win, src.transform), src.crs
    fill = (truth == 0).any(axis=0)
    assert 0.05 < fill.mean() < 0.95                        # the crop crosses the fill edge
    pan = np.where(fill, 0, np.rint(truth.mean(axis=0))).astype("uint16")[None]
    ms = truth.reshape(3, 128, 2, 128, 2).mean(axis=(2, 4))
    ms_fill = fill.reshape(128, 2, 128, 2).any(axis=(1, 3))
    ms = np.where(ms_fill[None], 0, np.rint(ms)).astype("uint16")
    ms_transform = pan_transform * rasterio.Affine.scale(2)
    paths = {}
    for name, arr, t in (("MS", ms, ms_transform), ("PAN", pan, pan_transform)):
        paths[name] = tmp_path / f"rgb_{name}.tif"
        with rasterio.open(paths[name], "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                           count=arr.shape[0], dtype="uint16", crs=crs, transform=t) as dst:   # no nodata tag
            dst.write(arr)
    backend = backend_for(station_model(station_preset(bands=3, ratio=2, max_dn=65535.0, sensor="landsat8")))
    out = tmp_path / "rgb.tif"
    run_scene(paths["MS"], paths["PAN"], out, backend, small_config(input_nodata=0, metric_tiles=0))
    data, profile, _ = read(out)
    assert profile["crs"] == crs and profile["transform"] == pan_transform and profile["nodata"] == 0
    nodata = (data == 0).all(axis=0)
    expected = fill | np.repeat(np.repeat(ms_fill, 2, 0), 2, 1)   # PAN fill or MS fill under the pixel
    assert np.array_equal(nodata, expected) and not (data[:, ~expected] == 0).any()
    valid = data[:, ~expected].astype(np.float64)
    assert abs(valid.mean() - truth[:, ~expected].mean()) < 0.05 * truth[:, ~expected].mean()


def test_watch_stops_between_batches_and_resumes(tmp_path, station_backend):
    """SIGTERM / SIGINT (request_stop) ends the service after the current batch; the journal
    keeps the finished tiles and the next start resumes from them."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    synthetic_scene(inbox, "s", ms_size=32)
    (inbox / "s.ready").touch()

    class StopAfterFirstBatch:          # the real backend; asks the service to stop after one call
        def __init__(self, backend):
            self.backend, self.service = backend, None

        def __getattr__(self, name):
            return getattr(self.backend, name)

        def sample_tiles(self, lms, pan, noise, generators=None):
            out = self.backend.sample_tiles(lms, pan, noise, generators)
            self.service.request_stop()
            return out

    wrapper = StopAfterFirstBatch(station_backend)
    log = EventLog(stream=None)
    service = StationService(inbox, outbox, wrapper, small_config(metric_tiles=0), WatchConfig(poll_interval_s=0.01),
                             log=log)
    wrapper.service = service
    assert service.run(once=True) == 0
    assert [e["event"] for e in log.events][-2:] == ["scene_interrupted", "service_stop"]
    assert journal_tiles(outbox / ".work" / "s") == 4 and not (outbox / "s").exists()
    assert not list(outbox.glob(".*.partial"))

    log = EventLog(stream=None)
    service = StationService(inbox, outbox, station_backend, small_config(metric_tiles=0),
                             WatchConfig(poll_interval_s=0.01), log=log)
    service.run(once=True)
    done = next(e for e in log.events if e["event"] == "scene_done")
    assert done["tiles"] == 9 and done["tiles_from_journal"] == 4 and (outbox / "s" / "s.tif").is_file()
