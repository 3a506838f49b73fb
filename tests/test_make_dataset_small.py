"""``make-dataset`` with its default options on small real scenes: it either works or fails saying
which option to change and to what value, and the values it names work (issue #14 item 5)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest

from ddif.data.dataset_config import MakeDatasetConfig
from ddif.data.make_dataset import check_sensor, make_dataset
from ddif.data.splits import explain_failure, plan_splits, suggest_options

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDIF_SHARED", REPO.parent / "shared"))
PAN_MS = SHARED / "data" / "landsat8-pan-ms"
ETM = SHARED / "data" / "landsat7-etm" / "L7_ETMs.tif"
SCENE = SHARED / "data" / "landsat8-scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
ETM_WEIGHTS = "0,0.2963,0.2222,0.4815,0,0"   # ETM+ bands 1-5, 7 against the 520-900 nm PAN band


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (set DDIF_SHARED to the shared folder)")
    pytest.importorskip("rasterio")
    return path


def _suggestions(message: str) -> list[dict[str, typing.Any]]:
    """The option sets a failure message offers ("Pass --a 1 --b 2 (...); or --c 3 (...)"), as
    MakeDatasetConfig field values."""
    hints = typing.get_type_hints(MakeDatasetConfig)
    out = []
    for flags in re.findall(r"(?:Pass|; or) ((?:--[a-z-]+ [^\s(]+ ?)+) \(", message):
        change = {}
        for name, value in re.findall(r"--([a-z-]+) ([^\s(]+)", flags):
            field = name.replace("-", "_")
            change[field] = hints[field](value)
        out.append(change)
    return out


def _pan_ms_paths() -> tuple[tuple[str, ...], str]:
    _need(PAN_MS)
    return tuple(str(p) for p in sorted(PAN_MS.glob("*_B[2-4].TIF"))), str(next(PAN_MS.glob("*_B8.TIF")))


def test_landsat8_pan_ms_with_defaults(tmp_path):
    """The real ratio-2 pair (41 x 41 MS px) with every default: first the ratio is named, then,
    at ratio 2, the sizes; both suggestions it makes build a dataset with every split."""
    ms, pan = _pan_ms_paths()
    with pytest.raises(ValueError, match="these files have ratio 2: pass --ratio 2"):
        make_dataset(MakeDatasetConfig(ms=ms, pan=pan, out_dir=str(tmp_path / "r4")))
    cfg = MakeDatasetConfig(ms=ms, pan=pan, ratio=2, out_dir=str(tmp_path / "r2"), compression="")
    with pytest.raises(ValueError) as err:
        make_dataset(cfg)
    message = str(err.value)
    assert "remain for training" in message and "40 x 40 px on the MS grid (80 x 80 PAN px at ratio 2" in message
    options = _suggestions(message)
    assert len(options) == 2 and all("patch_size" in o and "test_size" in o for o in options)
    assert not list(tmp_path.rglob("*.h5")), "a refused build leaves nothing behind"
    for i, change in enumerate(options):
        summary = make_dataset(dataclasses.replace(cfg, out_dir=str(tmp_path / f"ok{i}"), sensor="landsat8", **change))
        assert summary["train_patches"] > 0 and summary["val_patches"] > 0 and summary["pan"] == "real"
        assert set(summary["files"]) == {"train", "val", "test", "test_full"}
        assert f"{summary['train_patches']} train, {summary['val_patches']} val patches" in message


def test_landsat7_etm_without_pan_with_defaults(tmp_path):
    """The 6-band ETM+ stack (352 x 349, no PAN): the defaults name the exact --pan-weights, then
    the sizes to change; through the CLI, as a user meets it."""
    from ddif.cli.main import main

    etm = str(_need(ETM))
    out = tmp_path / "etm"
    with pytest.raises(ValueError, match=f"6 here.*--pan-weights {ETM_WEIGHTS}"):
        make_dataset(MakeDatasetConfig(ms=(etm,), out_dir=str(out)))
    cfg = MakeDatasetConfig(ms=(etm,), out_dir=str(out), pan_weights=tuple(float(w) for w in ETM_WEIGHTS.split(",")))
    with pytest.raises(ValueError) as err:
        make_dataset(cfg)
    message = str(err.value)
    assert "352 x 348 px on the MS grid" in message and "64 + 2 x 16 = 96 px" in message
    options = _suggestions(message)
    assert options[0] == {"val_fraction": 0.3, "test_size": 128}        # patches untouched: only the split sizes
    base = ["make-dataset", "--ms", etm, "--pan-weights", ETM_WEIGHTS, "--sensor", "landsat7", "--compression", ""]
    for i, change in enumerate(options):
        flags = [x for k, v in change.items() for x in (f"--{k.replace('_', '-')}", f"{v:g}" if isinstance(v, float)
                                                       else str(v))]
        assert main([*base, *flags, "--out-dir", str(tmp_path / f"ok{i}")]) == 0
        summary = json.loads((tmp_path / f"ok{i}" / "dataset_summary.json").read_text())
        assert summary["pan"] == "synthesized" and summary["train_patches"] > 0 and summary["val_patches"] > 0
        assert summary["test_crop"][2] == change["test_size"]


def test_big_landsat8_scene_plans_with_defaults():
    """The 2041 x 1860 RGB scene plans every split with the default sizes (only the synthetic-PAN
    weights, which cannot have a default, are given), and the unmarked zero fill is pointed out."""
    from ddif.data.sources import prepare_scene

    scene_path = str(_need(SCENE))
    cfg = MakeDatasetConfig(ms=(scene_path,), pan_weights=(0.1, 0.6, 0.3))
    with pytest.warns(UserWarning, match=r"16\.5 % of the MS pixels are 0 .* pass --nodata 0"):
        scene = prepare_scene(cfg, cfg.ms, cfg.pan)
    plan = plan_splits(scene.fill, cfg)
    assert len(plan.patches["train"]) > 1000 and len(plan.patches["val"]) > 100 and plan.test_crop is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        marked = prepare_scene(dataclasses.replace(cfg, nodata=(0.0,)), cfg.ms, cfg.pan)
    assert 0.15 < marked.fill.mean() < 0.18
    assert len(plan_splits(marked.fill, dataclasses.replace(cfg, nodata=(0.0,))).patches["train"]) > 500


def test_suggestions_on_synthetic_fill_masks():
    """The search itself: cheapest first (split sizes before patch size before fill margin), each
    suggestion plans, fill is respected, and a scene too small for anything says so."""
    cfg = MakeDatasetConfig(ratio=4)
    fill = np.zeros((100, 300), dtype=bool)
    with pytest.raises(ValueError, match="remain for training"):
        plan_splits(fill, cfg)
    options = suggest_options(fill, cfg)
    assert options and "fill_margin" not in options[0][0]
    for change, plan in options:
        again = plan_splits(fill, dataclasses.replace(cfg, **change))
        assert {k: len(v) for k, v in again.patches.items()} == {k: len(v) for k, v in plan.patches.items()}
    # fill over the left 200 columns, where the test strip goes: the strips move to the right
    blocked = np.zeros((300, 1000), dtype=bool)
    blocked[:, :200] = True
    with pytest.raises(ValueError, match="no fill-free 256x256 test crop") as err:
        plan_splits(blocked, cfg)
    options = _suggestions(str(err.value))
    assert options[0] == {"holdout_side": "right"}
    for change in options:
        plan_splits(blocked, dataclasses.replace(cfg, **change))
    tiny = np.zeros((6, 6), dtype=bool)
    with pytest.raises(ValueError, match="use a bigger one"):
        plan_splits(tiny, MakeDatasetConfig(ratio=2, patch_size=8, stride=4))
    assert "Pass" not in explain_failure(tiny, MakeDatasetConfig(ratio=2, patch_size=8, stride=4), "x")


def test_sensor_names(tmp_path):
    for name in ("landsat7", "Landsat-8", "landsat9", "OLI-2", "etm+", "generic", "wv3"):
        assert check_sensor(name) == name
    with pytest.raises(ValueError, match="sensor 'landsat' has no MTF gains.*landsat7, landsat8, landsat9"):
        make_dataset(MakeDatasetConfig(ms=(str(tmp_path / "missing.tif"),), sensor="landsat"))
