"""Station products as operators' tools expect them: every product is a valid Cloud-Optimized
GeoTIFF (rio-cogeo's validator) with nodata carried into the overviews, the chosen overview
resampling and compression; a STAC Item per product read back with pystac (offline) whose
projection, raster statistics and provenance match the product; the outbox's STAC Collection."""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pystac = pytest.importorskip("pystac")
pytest.importorskip("rio_cogeo")

from test_station_support import station_backend  # noqa: F401  (fixture)
from test_station_support import save_station_model, small_config, synthetic_scene

from ddif.station import StationService, WatchConfig, run_scene
from ddif.station.events import EventLog
from ddif.station.journal import model_identity
from ddif.station.products import update_collection, validate_cog


@pytest.fixture(scope="module")
def product(tmp_path_factory, station_backend):
    folder = tmp_path_factory.mktemp("products")
    model = save_station_model(folder / "model.pt")
    ms, pan = synthetic_scene(folder / "in", "p1", ms_size=(64, 56))
    out = folder / "out" / "p1.tif"
    report = run_scene(ms, pan, out, station_backend, small_config(), log=EventLog(stream=None),
                       model_id=model_identity(model))
    return {"ms": ms, "pan": pan, "out": out, "report": report, "model": model}


def _block_all(mask: np.ndarray, f: int) -> np.ndarray:
    h, w = mask.shape[0] // f * f, mask.shape[1] // f * f
    return mask[:h, :w].reshape(h // f, f, w // f, f).all(axis=(1, 3))


def test_product_is_a_valid_cog_with_nodata_in_its_overviews(product):
    result = validate_cog(product["out"])
    assert result["valid"], result
    assert result["errors"] == []
    assert product["report"]["product"]["cog_validation"]["valid"]
    with rasterio.open(product["out"]) as src, rasterio.open(product["pan"]) as pan:
        assert src.crs == pan.crs and src.transform == pan.transform and src.shape == pan.shape
        assert src.profile["tiled"] and src.block_shapes[0] == (64, 64)
        assert src.compression.name.lower() == "deflate"
        factors = src.overviews(1)
        assert factors == [2, 4], factors
        full = src.read(1)
        nodata_full = full == src.nodata
        assert nodata_full.any() and not nodata_full.all()
        for f in factors:
            ov = src.read(1, out_shape=(src.height // f, src.width // f))
            # nodata-aware averaging: an overview pixel is nodata exactly where all its pixels are
            expected = _block_all(nodata_full, f)
            assert np.array_equal(ov == src.nodata, expected), f
            # and a mean of the valid pixels only (no fill value averaged in)
            sums = np.where(nodata_full, 0, full.astype(np.float64))
            h, w = ov.shape
            sums = sums[: h * f, : w * f].reshape(h, f, w, f).sum(axis=(1, 3))
            counts = (~nodata_full[: h * f, : w * f]).reshape(h, f, w, f).sum(axis=(1, 3))
            full_blocks = counts == f * f
            np.testing.assert_allclose(ov[full_blocks], sums[full_blocks] / (f * f), atol=1.0)


@pytest.mark.parametrize("compress,resampling", [("zstd", "nearest"), ("lzw", "bilinear")])
def test_compression_and_overview_resampling_options(tmp_path, station_backend, product, compress, resampling):
    out = tmp_path / "p1.tif"
    run_scene(product["ms"], product["pan"], out, station_backend,
              small_config(compress=compress, overview_resampling=resampling, block_size=128),
              log=EventLog(stream=None), write_stac=False)
    assert validate_cog(out)["valid"]
    assert not out.with_suffix(".json").exists()
    with rasterio.open(out) as src, rasterio.open(product["out"]) as ref:
        assert src.compression.name.lower() == compress
        assert src.block_shapes[0] == (128, 128)
        assert np.array_equal(src.read(), ref.read())  # same fusion, other container settings
        ov, ov_ref = (d.read(1, out_shape=(d.height // 2, d.width // 2)) for d in (src, ref))
        assert not np.array_equal(ov, ov_ref)  # the resampling is applied, not ignored
        if resampling == "nearest":  # decimation: every overview value is a full-resolution value
            assert np.isin(ov, src.read(1)).all()


def test_band_statistics_match_the_product(product):
    stats = product["report"]["product"]["band_statistics"]
    with rasterio.open(product["out"]) as src:
        data, nodata = src.read(), src.nodata
    assert len(stats) == data.shape[0]
    for band, s in zip(data, stats):
        valid = band[band != nodata].astype(np.float64)
        assert s["minimum"] == valid.min() and s["maximum"] == valid.max()
        assert s["mean"] == pytest.approx(valid.mean(), rel=1e-9)
        assert s["stddev"] == pytest.approx(valid.std(), rel=1e-9)
        assert s["valid_percent"] == pytest.approx(100.0 * valid.size / band.size, rel=1e-9)


def test_stac_item_reads_back_with_pystac(product):
    item_path = product["out"].with_suffix(".json")
    item = pystac.Item.from_file(str(item_path))  # offline: no schema validation
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    with rasterio.open(product["out"]) as src:
        crs, transform, shape, nodata = src.crs, src.transform, [src.height, src.width], src.nodata
        bounds = src.bounds
    proj = ProjectionExtension.ext(item)
    assert proj.epsg == crs.to_epsg()
    assert proj.shape == shape and proj.transform == list(transform)[:6]
    assert proj.bbox == [bounds.left, bounds.bottom, bounds.right, bounds.top]
    west, south, east, north = item.bbox
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    # assets resolve beside the item
    for key in ("product", "quicklook", "report"):
        assert (item_path.parent / item.assets[key].href).is_file(), key
    assert item.assets["product"].media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    bands = RasterExtension.ext(item.assets["product"]).bands
    stats = product["report"]["product"]["band_statistics"]
    assert len(bands) == len(stats)
    for band, s in zip(bands, stats):
        assert band.nodata == nodata and band.data_type == "uint16"
        assert band.statistics.minimum == s["minimum"] and band.statistics.maximum == s["maximum"]
        assert band.statistics.mean == pytest.approx(s["mean"])
    # provenance
    props = item.properties
    sha = hashlib.sha256(product["model"].read_bytes()).hexdigest()
    assert props["ddif:model_sha256"] == sha and props["ddif:model"] == "model.pt"
    assert props["processing:software"]["ddif"]
    assert props["ddif:seed"] == small_config().seed
    assert props["ddif:steps"] == product["report"]["backend"]["steps"]
    links = [lk for lk in item.links if lk.rel == "derived_from"]
    derived = sorted((item_path.parent / lk.href).resolve() for lk in links)
    assert derived == sorted(p.resolve() for p in (product["ms"], product["pan"]))
    # the inputs are plain GeoTIFFs: their links must not claim the cloud-optimized profile
    assert {lk.media_type for lk in links} == {"image/tiff; application=geotiff"}
    assert item.assets["product"].media_type == "image/tiff; application=geotiff; profile=cloud-optimized"


def test_watch_builds_the_outbox_collection(tmp_path, station_backend):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    synthetic_scene(inbox, "a", ms_size=16)
    synthetic_scene(inbox, "b", ms_size=16, pan_origin_shift=(0.0, 0.0), seed=1)
    service = StationService(inbox, outbox, station_backend, small_config(metric_tiles=1),
                             WatchConfig(poll_interval_s=0.01, stable_polls=2), log=EventLog(stream=None))
    assert service.run(once=True) == 0
    assert sorted(service.processed) == ["a", "b"]
    collection = pystac.Collection.from_file(str(outbox / "collection.json"))
    hrefs = sorted(lk.href for lk in collection.links if lk.rel == "item")
    assert hrefs == ["a/a.json", "b/b.json"]
    boxes = []
    for href in hrefs:
        item = pystac.Item.from_file(str(outbox / href))
        boxes.append(item.bbox)
        assert validate_cog(outbox / href.split("/")[0] / item.assets["product"].href)["valid"]
        # the inputs were archived: the item's links point to where they are now
        for lk in item.links:
            if lk.rel == "derived_from":
                target = (outbox / href).parent / lk.href
                assert target.is_file() and "processed" in target.parts, lk.href
    (extent,) = collection.extent.spatial.bboxes
    assert extent[0] <= min(b[0] for b in boxes) and extent[2] >= max(b[2] for b in boxes)
    assert extent[1] <= min(b[1] for b in boxes) and extent[3] >= max(b[3] for b in boxes)


def test_collection_updates_from_concurrent_writers_keep_every_item(tmp_path, product):
    outbox = tmp_path / "outbox"
    items = []
    base = json.loads(product["out"].with_suffix(".json").read_text())
    for i in range(12):
        folder = outbox / f"s{i}"
        folder.mkdir(parents=True)
        data = dict(base, id=f"s{i}")
        x = float(i)
        data["bbox"] = [x, 0.0, x + 0.5, 0.5]
        (folder / f"s{i}.json").write_text(json.dumps(data))
        items.append(folder / f"s{i}.json")
    threads = [threading.Thread(target=update_collection, args=(outbox, p)) for p in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads((outbox / "collection.json").read_text())
    assert sorted(lk["href"] for lk in data["links"] if lk["rel"] == "item") == sorted(
        f"s{i}/s{i}.json" for i in range(12))
    assert data["extent"]["spatial"]["bbox"] == [[0.0, 0.0, 11.5, 0.5]]
    # re-adding an item replaces its link, it does not duplicate it
    update_collection(outbox, items[3])
    data = json.loads((outbox / "collection.json").read_text())
    assert sum(lk["href"] == "s3/s3.json" for lk in data["links"]) == 1
    assert not list(outbox.glob(".collection.json.*"))  # no temp file left behind
