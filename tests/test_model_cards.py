"""Models by name: the shipped cards agree with their checkpoints; a delivery picks the model that
fits it (band count and names, ratio, sensor) and bands delivered in another order are reordered
by name, never fused swapped; `ddif models` lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddif.data.sensors import band_from_file_name, delivery_facts, get_sensor, normalise_band_name
from ddif.models.cards import CARD_FORMAT, ModelCard, file_sha256, read_card, resolve_model, shipped_cards

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402


def test_every_shipped_card_matches_its_checkpoint():
    from ddif.models.checkpoint import read_contents

    cards = shipped_cards()
    assert {"landsat8", "worldview2"} <= {c.name for c in cards}
    for card in cards:
        assert card.checkpoint_path.is_file(), card.name
        assert card.sha256 == file_sha256(card.checkpoint_path), f"{card.name}: stale sha256"
        preset = read_contents(card.checkpoint_path).preset
        assert preset is not None
        assert preset.model.bands == len(card.bands) and preset.data.ratio == card.ratio, card.name
        assert preset.model.max_dn == card.dn["max_dn"], card.name
        assert tuple(preset.data.band_names) == card.bands, card.name
        for key in ("summary", "source", "licence"):
            assert card.training_data.get(key), f"{card.name}: training_data.{key} missing"
        assert card.licence and card.recipe and card.metrics, card.name
        sensor = get_sensor(card.sensor)
        assert sensor.canonical(list(card.bands)) == card.bands, card.name
        if card.default_steps:
            assert card.default_steps <= preset.diffusion.sample_steps or preset.diffusion.sample_timesteps


def test_band_names_are_normalised():
    assert normalise_band_name("B04") == normalise_band_name("band 4") == "b4"
    assert normalise_band_name("NIR-1") == "nir1"
    assert band_from_file_name("LC08_L1TP_195025_20130707_20170503_01_T1_B4.TIF") == "B4"
    assert band_from_file_name("S2_T18SVG_20160112_B8A.tif") == "B8A"
    assert band_from_file_name("ms1_2m.tif") is None
    oli = get_sensor("LC08")
    assert oli.key == "landsat8" and oli.canonical(["blue", "b03", "Red"]) == ("B2", "B3", "B4")
    assert get_sensor("worldview-2").canonical(["blue", "green", "red", "nir1"]) == ("blue", "green", "red", "nir1")


def _write(path, count, res, origin=(500000.0, 4000000.0), dtype="uint16", descriptions=None, value=1000):
    n = 16 if res > 1 else 32
    with rasterio.open(
        path, "w", driver="GTiff", width=n, height=n, count=count, dtype=dtype, crs="EPSG:32631",
        transform=from_origin(origin[0], origin[1], res, res),
    ) as dst:
        for k in range(count):
            dst.write((np.full((n, n), value + 100 * k)).astype(dtype), k + 1)
            if descriptions:
                dst.set_band_description(k + 1, descriptions[k])
    return path


def _cards(tmp_path):
    a = ModelCard("l8", "l8.pt", sensor="landsat8", sensors=("landsat8", "landsat9"), bands=("B2", "B3", "B4"),
                  pan="B8", ratio=2, dn={"max_dn": 65535.0}, path=str(tmp_path / "l8.card.json"))
    b = ModelCard("wv", "wv.pt", sensor="wv2", bands=("blue", "green", "red", "nir1"), pan="PAN", ratio=4,
                  dn={"max_dn": 2047.0}, path=str(tmp_path / "wv.card.json"))
    return [a, b]


def test_landsat_band_files_pick_the_landsat_model_and_are_reordered(tmp_path):
    from ddif.inference.selection import choose_model

    ms = [_write(tmp_path / f"LC08_L1TP_001002_20200101_20200101_01_T1_B{b}.TIF", 1, 30.0) for b in (4, 3, 2)]
    pan = _write(tmp_path / "LC08_L1TP_001002_20200101_20200101_01_T1_B8.TIF", 1, 15.0)
    chosen = choose_model(ms, pan, _cards(tmp_path))
    assert chosen.card.name == "l8"
    assert chosen.match.order == (2, 1, 0) and "reordered" in chosen.match.note
    assert "sensor landsat8" in chosen.reason and "ratio 2" in chosen.reason


def test_described_bands_in_another_order_are_taken_by_name(tmp_path):
    from ddif.inference.selection import choose_model

    ms = _write(tmp_path / "ms.tif", 5, 2.0, descriptions=["nir1", "red", "green", "blue", "yellow"])
    pan = _write(tmp_path / "pan.tif", 1, 0.5)
    chosen = choose_model([ms], pan, _cards(tmp_path))
    assert chosen.card.name == "wv" and chosen.match.order == (3, 2, 1, 0)


def test_no_model_fits_names_every_model_and_why(tmp_path):
    from ddif.inference.selection import choose_model

    ms = _write(tmp_path / "ms.tif", 5, 3.0)
    pan = _write(tmp_path / "pan.tif", 1, 1.0)
    with pytest.raises(ValueError) as err:
        choose_model([ms], pan, _cards(tmp_path))
    text = str(err.value)
    assert "no shipped model fits" in text and "ratio is 3" in text and "l8:" in text and "wv:" in text


def test_named_bands_that_are_not_the_models_are_refused(tmp_path):
    from ddif.inference.selection import check_card

    ms = [_write(tmp_path / f"LC08_X_B{b}.TIF", 1, 30.0) for b in (5, 6, 7)]
    pan = _write(tmp_path / "LC08_X_B8.TIF", 1, 15.0)
    with pytest.raises(ValueError, match="B2, B3, B4 are not among them"):
        check_card(_cards(tmp_path)[0], ms, pan)


def test_metadata_file_names_the_sensor(tmp_path):
    (tmp_path / "x_MTL.txt").write_text('GROUP = L1\n  SPACECRAFT_ID = "LANDSAT_9"\nEND_GROUP\n')
    ms = _write(tmp_path / "ms.tif", 3, 30.0)
    facts = delivery_facts([ms], tmp_path / "pan.tif")
    assert facts.sensor is not None and facts.sensor.key == "landsat9" and "x_MTL.txt" in facts.sensor_source


def test_cards_resolve_by_name_and_refuse_bad_files(tmp_path):
    path, card = resolve_model("landsat8")
    assert card is not None and path == card.checkpoint_path
    with pytest.raises(FileNotFoundError, match="shipped: "):
        resolve_model("no_such_model")
    bad = tmp_path / "x.card.json"
    bad.write_text(json.dumps({"format": CARD_FORMAT, "name": "x", "checkpoint": "../x.pt"}))
    with pytest.raises(ValueError, match="file name beside the card"):
        read_card(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        read_card(bad)


def test_ddif_models_lists_the_shipped_models(capsys):
    from ddif.cli.main import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for card in shipped_cards():
        assert card.name in out
    assert main(["models", "landsat8"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "landsat8"
