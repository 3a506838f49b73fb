"""The station checks a scene against the model before anything expensive, and refuses data whose
scale does not fit the model's DN convention: ratio / band mismatches are reported before any
ONNX export (``--dry-run`` and real runs), float reflectance and 8-bit scenes are refused (one
line naming the file, what was expected, what came; quarantined by ``watch`` with a reason),
``--input-scale`` states the conversion. Memory with the ONNX Runtime backend is bounded by the
batch of tiles, not by the scene."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from test_inference_path import SHIPPED, landsat_pair  # noqa: E402
from test_station_support import synthetic_scene  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning", "ignore::PendingDeprecationWarning")


def _run(argv, env_cache: Path, **kw):
    import os

    env = dict(os.environ, DDIF_CACHE_DIR=str(env_cache), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ddif.cli.main", "station", "run", *argv], capture_output=True,
                          text=True, env=env, timeout=600, **kw)


def test_ratio_mismatch_is_refused_before_any_export(tmp_path):
    """The shipped checkpoint is ratio 4; a ratio-2 pair is refused in seconds with one line,
    by --dry-run and by a real run with the auto backend (ONNX Runtime here), and nothing is
    exported (the export cache stays empty)."""
    ms, pan = synthetic_scene(tmp_path / "in", "r", bands=3, ms_size=16, ratio=2, max_dn=32767.0)
    cache = tmp_path / "cache"
    for extra in (["--dry-run"], []):
        proc = _run(["--ms", str(ms), "--pan", str(pan), "--model", str(SHIPPED), "--out", str(tmp_path / "o.tif"),
                     *extra], cache)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "resolution ratio is 2" in lines[0] and "ratio 4" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not cache.exists() or not any(cache.rglob("*.onnx"))
    assert not (tmp_path / "o.tif").exists()


def test_dry_run_prints_the_plan_with_the_models_tiling(tmp_path):
    ms, pan = landsat_pair(tmp_path / "in", 96, 128)
    proc = _run(["--ms", str(ms), "--pan", str(pan), "--model", str(SHIPPED), "--out", str(tmp_path / "o.tif"),
                 "--dry-run"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    assert "32x32 (overlap 8; the model samples 32 px tiles, 8 px overlap)" in proc.stdout
    assert "values MS" in proc.stdout and "uint16" in proc.stdout
    assert not (tmp_path / "o.tif").exists() and not any((tmp_path / "cache").rglob("*.onnx"))


def _write(path: Path, arr: np.ndarray, like: Path) -> Path:
    with rasterio.open(like) as src:
        profile = dict(src.profile, dtype=arr.dtype.name, nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


@pytest.mark.parametrize("kind", ["reflectance", "uint8", "full_range_16bit"])
def test_mis_scaled_scenes_are_refused_and_input_scale_states_the_conversion(tmp_path, kind):
    from ddif.station import SceneError, StationConfig, plan_scene
    from ddif.models import DDIF

    preset = DDIF.load(SHIPPED).preset                     # DN up to 32767 (Landsat-8 L1, 16-bit)
    ms, pan = landsat_pair(tmp_path / "in", 64, 64)
    with rasterio.open(ms) as a, rasterio.open(pan) as b:
        ms_dn, pan_dn = a.read().astype(np.float64), b.read().astype(np.float64)
    if kind == "reflectance":
        scale, ms_v, pan_v = 32767.0, (ms_dn / 32767).astype(np.float32), (pan_dn / 32767).astype(np.float32)
        expect = r"largest valid value is 0\.2\d+, under 2% of the model's max DN 32767"
    elif kind == "uint8":
        scale, ms_v, pan_v = 128.0, np.rint(ms_dn / 128).astype(np.uint8), np.rint(pan_dn / 128).astype(np.uint8)
        expect = "dtype uint8 holds at most 255"
    else:
        scale, ms_v, pan_v = 1 / 6, (ms_dn * 6).astype(np.uint16), (pan_dn * 6).astype(np.uint16)
        expect = "100.0% of the valid pixels exceed the model's max DN 32767"
    ms_x, pan_x = _write(tmp_path / "x_MS.tif", ms_v, ms), _write(tmp_path / "x_PAN.tif", pan_v, pan)
    with pytest.raises(SceneError, match=expect) as info:
        plan_scene(ms_x, pan_x, preset, StationConfig())
    assert info.value.category == "bad_scale" and "x_MS.tif" in str(info.value) and "--input-scale" in str(info.value)
    plan = plan_scene(ms_x, pan_x, preset, StationConfig(input_scale=scale))      # stated: accepted
    assert plan.valid_pixels == 64 * 64


def test_watch_quarantines_a_reflectance_scene_with_the_reason(tmp_path):
    from ddif.runtime import TorchBackend
    from ddif.station import StationService, WatchConfig
    from ddif.station.events import EventLog

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ms, pan = landsat_pair(tmp_path / "src", 32, 32)
    for src, name in ((ms, "refl_MS.tif"), (pan, "refl_PAN.tif")):
        with rasterio.open(src) as s:
            _write(inbox / name, (s.read() / 32767).astype(np.float32), src)
    (inbox / "refl.ready").touch()
    service = StationService(inbox, tmp_path / "outbox", TorchBackend(SHIPPED), watch=WatchConfig(poll_interval_s=0),
                             log=EventLog(stream=None))
    service.run(once=True)
    reason = json.loads((inbox / "quarantine" / "refl" / "reason.json").read_text())
    assert reason["category"] == "bad_scale" and "refl_MS.tif" in reason["reason"]
    assert "largest valid value" in reason["reason"]


_RSS_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from ddif.runtime import OnnxRuntimeBackend
from ddif.station import StationConfig, run_scene
backend = OnnxRuntimeBackend(sys.argv[1], intra_op_threads=1, batch_size=8)
cfg = StationConfig(metric_tiles=0, batch_size=8)
run_scene(sys.argv[2], sys.argv[3], sys.argv[4] + "_warm.tif", backend, cfg)     # first calls, allocator pools
run_scene(sys.argv[5], sys.argv[6], sys.argv[4] + ".tif", backend, cfg)
print(json.dumps({"rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_onnxruntime_station_memory_is_bounded_by_the_batch(tmp_path):
    """Peak RSS of a station process with the ONNX Runtime backend (shipped checkpoint, station
    batches and backend runs of 8 tiles, which the 9 tiles of the small scene fill) on a 64 x 64
    vs a 256 x 256 scene (16x the pixels): the same within 25 MiB."""
    from ddif.export import ensure_onnx

    onnx_path = ensure_onnx(SHIPPED, cache_dir=tmp_path / "cache")
    warm = landsat_pair(tmp_path / "warm", 40, 40)
    rss = {}
    for size in (64, 256):
        ms, pan = landsat_pair(tmp_path / f"s{size}", size, size)
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(onnx_path), str(warm[0]), str(warm[1]),
                               str(tmp_path / f"o{size}"), str(ms), str(pan)], capture_output=True, text=True,
                              timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        rss[size] = json.loads(proc.stdout.strip().splitlines()[-1])["rss_kib"] / 1024
    print(f"\npeak RSS, ONNX Runtime station: 64^2 {rss[64]:.0f} MiB, 256^2 {rss[256]:.0f} MiB")
    assert rss[256] - rss[64] < 25, rss


def test_band_order_is_checked_against_the_model(tmp_path):
    """A model that knows its bands by name (B2, B3, B4) refuses an MS whose band descriptions
    name the same bands in another order (colours would swap silently); the right order, and
    descriptions that are not band names, pass. make-dataset records the names and training
    carries them into the checkpoint."""
    from ddif.cli.train import adopt_preprocessing
    from ddif.data import MakeDatasetConfig, make_dataset
    from ddif.models import DDIF
    from ddif.station import SceneError, StationConfig, plan_scene

    preset = DDIF.load(SHIPPED).preset
    preset.data.band_names = ("B2", "B3", "B4")
    ms, pan = landsat_pair(tmp_path / "in", 64, 64)
    for names, ok in ((("B4", "B3", "B2"), False), (("B2", "B3", "B4"), True), (("blue", "green", "red"), True)):
        with rasterio.open(ms, "r+") as dst:
            for i, n in enumerate(names, start=1):
                dst.set_band_description(i, n)
        if ok:
            assert plan_scene(ms, pan, preset, StationConfig()).valid_pixels == 64 * 64
        else:
            with pytest.raises(SceneError, match=r"bands are \['B4', 'B3', 'B2'\], the model fuses \['B2', 'B3', 'B4'\]"):
                plan_scene(ms, pan, preset, StationConfig())
    # make-dataset -> training file attribute -> the checkpoint's preset
    with rasterio.open(ms, "r+") as dst:
        for i, n in enumerate(("B2", "B3", "B4"), start=1):
            dst.set_band_description(i, n)
    summary = make_dataset(MakeDatasetConfig(ms=(str(ms),), pan=str(pan), out_dir=str(tmp_path / "ds"), ratio=4,
                                             sensor="landsat8", patch_size=8, stride=8, test_size=0,
                                             val_fraction=0.0, max_dn=32767.0, fill_margin=0))
    from ddif.data import PanCollectionH5

    train = PanCollectionH5(summary["files"]["train"], preset)
    fresh = DDIF.load(SHIPPED).preset
    adopt_preprocessing(fresh, train.info.attrs)
    assert fresh.data.band_names == ("B2", "B3", "B4")
