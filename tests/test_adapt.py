"""Scene adaptation (ddif adapt, ddif fuse --adapt): fine-tuning on the scene's own reduced-
resolution version within a time budget, on the real Landsat-8 pair shipped for the demo."""

from __future__ import annotations

import json
import time

import pytest
import torch

pytest.importorskip("rasterio")

from ddif.cli.common import ASSETS  # noqa: E402
from ddif.training import adapt as adapt_module  # noqa: E402
from ddif.training.adapt import AdaptConfig, adapt, adaptation_set  # noqa: E402

MS = ASSETS / "landsat8_oli_demo_MS.tif"
PAN = ASSETS / "landsat8_oli_demo_PAN.tif"


@pytest.fixture(scope="module")
def model():
    from ddif.models import load_model
    from ddif.models.cards import resolve_model

    return load_model(str(resolve_model("landsat8")[0]))


def test_adaptation_set_is_the_scenes_reduced_version(model):
    cfg = AdaptConfig(windows=4, window_size=64, patch_size=32)
    data = adaptation_set(MS, PAN, model.preset, cfg)
    assert len(data.train) > 0 and data.report["windows"] >= 2
    item = data.train.items[0]
    r = model.preset.data.ratio
    assert item["gt"].shape == (3, 32, 32) and item["ms"].shape == (3, 32 // r, 32 // r)
    assert item["pan"].shape == (1, 32, 32)
    # the reference is the scene's own MS (DN / max DN), not anything finer
    assert 0.05 < float(item["gt"].mean()) < 0.5
    assert data.report["degradation"]["ratio"] == r


def test_adapt_respects_the_budget_and_changes_the_weights(model):
    cfg = AdaptConfig(budget_s=3.0, windows=4, window_size=64, patch_size=32, batch_size=4)
    data = adaptation_set(MS, PAN, model.preset, cfg)
    t0 = time.perf_counter()
    adapted, report = adapt(model, data, cfg, progress=False)
    elapsed = time.perf_counter() - t0
    assert report["iterations"] >= 1 and report["seconds"] < 3.0 + 5.0 and elapsed < 30
    if report["kept"]:
        changed = any(not torch.equal(a, b) for a, b in zip(adapted.state_dict().values(), model.state_dict().values()))
        assert changed and adapted is not model
    else:
        assert adapted is model


def test_worse_held_back_patches_keep_the_original(model, monkeypatch):
    cfg = AdaptConfig(budget_s=1.0, windows=4, window_size=64, patch_size=32, batch_size=4)
    data = adaptation_set(MS, PAN, model.preset, cfg)
    scores = iter([1.0, 2.0])  # before, after: the adaptation made it worse
    monkeypatch.setattr(adapt_module, "_ergas", lambda *a, **k: next(scores))
    adapted, report = adapt(model, data, cfg, progress=False)
    assert adapted is model and report["kept"] is False and "unchanged" in report["note"]


def test_cli_adapt_writes_a_checkpoint_with_its_report_and_card(tmp_path, capsys):
    from ddif.cli.main import main
    from ddif.models.cards import read_card
    from ddif.models.checkpoint import read_contents

    out = tmp_path / "landsat8_demo.pt"
    rc = main(["adapt", "--ms", str(MS), "--pan", str(PAN), "--model", "landsat8", "--out", str(out),
               "--budget", "2", "-q"])
    assert rc == 0
    meta = read_contents(out).metadata
    assert meta["kind"] == "adapted" and meta["adaptation"]["iterations"] >= 1
    assert meta["adaptation"]["scene"][0].startswith(str(MS))
    card = read_card(out.with_name("landsat8_demo.card.json"))
    assert card.checkpoint == out.name and "adapted" in card.title
    assert "adapted for" in capsys.readouterr().out
    assert main(["adapt", "--ms", str(MS), "--pan", str(PAN), "--model", "landsat8", "--out", str(out), "-q"]) == 2


def test_fuse_adapt_reuses_the_adapted_model_of_an_earlier_run(tmp_path, capsys):
    from ddif.cli.main import main

    out = tmp_path / "fused.tif"
    args = ["fuse", str(MS), str(PAN), str(out), "--adapt", "--budget", "1", "--backend", "pytorch"]
    assert main(args) == 0
    assert out.is_file() and (tmp_path / "fused_adapted.pt").is_file()
    report = json.loads((tmp_path / "fused_report.json").read_text())
    assert report["model"]["name"] == "fused_adapted.pt"  # the product records the model that made it
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0
    assert "reusing" in capsys.readouterr().err
