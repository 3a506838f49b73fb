"""Sentinel-2 20 m -> 10 m sharpening: finding the band files of a delivery (folder, .SAFE, VRT),
and ``ddif fuse DIR OUT.tif`` giving one COG on the 10 m grid with the ten bands in Sentinel-2
order, the 10 m bands passed through unchanged, each named, and its STAC item. A tiny random
model with the sentinel2 preset's band layout (6 bands, 4-band guide, ratio 2) on a small
synthetic delivery whose 20 m grid starts 10 m west of the 10 m grid (as the shared crop's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from conftest import condition_matters  # noqa: E402

from ddif.cli.main import main  # noqa: E402
from ddif.data.raster import SceneError  # noqa: E402
from ddif.data.sensors import SENTINEL2_10M, SENTINEL2_20M, SENTINEL2_PRODUCT_ORDER, product_band_layout  # noqa: E402
from ddif.data.sentinel2 import find_bands, is_sentinel2_input  # noqa: E402

X0, Y0 = 435730.0, 4179460.0
CRS = "EPSG:32618"


def _write(path: Path, data: np.ndarray, res: float, x0: float) -> None:
    from rasterio.transform import from_origin

    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint16",
        crs=CRS, transform=from_origin(x0, Y0, res, res),
    ) as dst:
        dst.write(data, 1)


def write_delivery(folder: Path, h10: int = 48, w10: int = 40, seed: int = 0, pattern: str = "T18SVG_20160112_{}.tif",
                   bands=(*SENTINEL2_10M, *SENTINEL2_20M)) -> Path:
    """Smooth random 10 m bands (h10 x w10) and 20 m bands (h10/2 x w10/2 + 1, starting 10 m west)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h10, 0:w10] / 10.0
    for k, band in enumerate(bands):
        base = 1500 + 600 * np.sin(xx * (1 + 0.1 * k)) * np.cos(yy * 0.7) + rng.normal(0, 30, (h10, w10))
        if band in SENTINEL2_10M:
            _write(folder / pattern.format(band), np.clip(base, 1, 60000).astype(np.uint16), 10.0, X0)
        else:
            padded = np.pad(base, ((0, 0), (1, 1)), mode="edge")  # one 10 m column west, one east
            coarse = padded[:, : 2 * (w10 // 2 + 1)].reshape(h10 // 2, 2, w10 // 2 + 1, 2).mean(axis=(1, 3))
            _write(folder / pattern.format(band), np.clip(coarse, 1, 60000).astype(np.uint16), 20.0, X0 - 10.0)
    return folder


@pytest.fixture(scope="module")
def tiny_s2_model(tmp_path_factory):
    from ddif.config import get_preset
    from ddif.models import DDIF

    preset = get_preset("sentinel2")
    preset.model.base_width, preset.model.channel_mults = 8, (1, 2)
    torch.manual_seed(0)
    model = condition_matters(DDIF(preset)).eval()
    path = tmp_path_factory.mktemp("s2model") / "tiny_sentinel2.pt"
    model.save(path)
    return path


# ------------------------------------------------------------------------------------ deliveries
def test_find_bands_in_a_folder_and_a_safe(tmp_path):
    folder = write_delivery(tmp_path / "plain")
    d = find_bands(folder)
    assert d.layout == "folder" and list(d.bands) == [*SENTINEL2_10M, *SENTINEL2_20M] and d.dn_offset == 0
    assert [p.name for p in d.guide_files] == [f"T18SVG_20160112_{b}.tif" for b in SENTINEL2_10M]
    # L2A .SAFE: native-resolution copies win over the resampled ones; the baseline offset is read
    safe = tmp_path / "S2B_MSIL2A_20230101T000000_N0509_R001_T18SVG_20230101T000000.SAFE"
    img = safe / "GRANULE" / "L2A_T18SVG_A000001_20230101T000000" / "IMG_DATA"
    write_delivery(img / "R10m", bands=SENTINEL2_10M, pattern="T18SVG_20230101T000000_{}_10m.jp2.tif")
    for p in (img / "R10m").iterdir():
        p.rename(p.with_name(p.name.replace(".jp2.tif", ".tif")))
    write_delivery(img / "R20m", bands=SENTINEL2_20M, pattern="T18SVG_20230101T000000_{}_20m.tif")
    write_delivery(img / "R60m", bands=("B05",), pattern="T18SVG_20230101T000000_{}_60m.tif")
    (safe / "MTD_MSIL2A.xml").write_text('<x><BOA_ADD_OFFSET band_id="0">-1000</BOA_ADD_OFFSET></x>')
    d = find_bands(safe)
    assert d.layout == "safe" and d.level == "L2A" and d.dn_offset == -1000.0
    assert d.bands["B05"].parent.name == "R20m" and d.bands["B02"].parent.name == "R10m"


def test_missing_bands_and_a_vrt_reaching_outside_are_refused(tmp_path):
    folder = write_delivery(tmp_path / "partial", bands=(*SENTINEL2_10M, "B05", "B06"))
    with pytest.raises(SceneError, match=r"bands B07, B8A, B11, B12 not found \(found: B02, B03, B04, B05, B06, B08\)"):
        find_bands(folder)
    assert not is_sentinel2_input(tmp_path / "nothing-here")
    full = write_delivery(tmp_path / "full")
    inside = tmp_path / "full" / "scene.vrt"
    sources = "".join(f'<SourceFilename relativeToVRT="1">T18SVG_20160112_{b}.tif</SourceFilename>'
                      for b in SENTINEL2_PRODUCT_ORDER)
    inside.write_text(f"<VRTDataset>{sources}</VRTDataset>")
    assert find_bands(inside).layout == "vrt" and len(find_bands(inside).bands) == 10
    outside = tmp_path / "elsewhere" / "scene.vrt"
    outside.parent.mkdir()
    outside.write_text(f'<VRTDataset><SourceFilename relativeToVRT="1">../full/T18SVG_20160112_B02.tif'
                       f"</SourceFilename>{sources}</VRTDataset>")
    with pytest.raises(SceneError, match="outside the VRT's folder"):
        find_bands(outside)
    assert full.is_dir()


def test_product_layout_is_the_sensor_order():
    layout = product_band_layout("sentinel2", SENTINEL2_20M, SENTINEL2_10M)
    assert [n for _, _, n in layout] == list(SENTINEL2_PRODUCT_ORDER)
    assert [(k, i) for k, i, _ in layout][:4] == [("guide", 0), ("guide", 1), ("guide", 2), ("fused", 0)]
    assert product_band_layout("sentinel2", SENTINEL2_20M, ()) is None  # no guide names: fused bands only
    assert product_band_layout("landsat8", ("B2", "B3", "B4"), ("B8",)) is None  # B8 is not an MS band there


# ------------------------------------------------------------------------------------ ddif fuse
def test_fuse_a_delivery_folder_gives_the_ten_band_product(tmp_path, tiny_s2_model, capsys):
    folder = write_delivery(tmp_path / "delivery")
    out = tmp_path / "out" / "S2_10m.tif"
    rc = main(["fuse", str(folder), str(out), "--model", str(tiny_s2_model), "--backend", "pytorch", "--threads", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "sharpening B05, B06, B07, B8A, B11, B12 to 10 m with B02, B03, B04, B08" in err
    with rasterio.open(out) as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (10, 48, 40, "uint16")
        assert src.descriptions == SENTINEL2_PRODUCT_ORDER
        assert src.tags()["DDIF_PASSED_THROUGH_BANDS"] == "B02,B03,B04,B08"
        product = src.read()
        assert src.transform.c == X0 and src.transform.a == 10.0
    for k, band in enumerate(SENTINEL2_PRODUCT_ORDER):
        with rasterio.open(folder / f"T18SVG_20160112_{band}.tif") as src:
            original = src.read(1)
        if band in SENTINEL2_10M:
            assert np.array_equal(product[k], original), band  # passed through unchanged
    # the delivery route is the generic one: the 20 m files and the guide stack given explicitly
    # give the same product, byte for byte (the layout comes from the model, not the route)
    files = [str(folder / f"T18SVG_20160112_{b}.tif") for b in SENTINEL2_20M]
    explicit = tmp_path / "explicit" / "S2_10m.tif"
    guide = out.with_name("S2_10m_guide10m.vrt")
    args = ["fuse", *files, str(guide), str(explicit), "--model", str(tiny_s2_model), "--backend", "pytorch"]
    assert main([*args, "--threads", "1", "--no-sidecars"]) == 0
    assert explicit.read_bytes() == out.read_bytes()
    item = json.loads(out.with_suffix(".json").read_text())
    assert item["assets"]["product"]["ddif:band_names"] == list(SENTINEL2_PRODUCT_ORDER)
    assert len(item["assets"]["product"]["raster:bands"]) == 10
    assert out.with_name("S2_10m_guide10m.vrt").is_file()


def test_a_delivery_with_the_baseline_offset_gives_the_same_reflectances(tmp_path, tiny_s2_model, capsys):
    """Processing baseline 04.00+: every DN is reflectance x 10000 + 1000 (RADIO_ADD_OFFSET -1000 in
    the MTD file). The same scene delivered that way is read as the same reflectances and written
    back in its own convention: sharpened bands +1000 DN (within 1 DN of rounding), 10 m bands as
    delivered."""
    plain = write_delivery(tmp_path / "plain")
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for f in plain.iterdir():
        with rasterio.open(f) as src:
            profile, data = src.profile, src.read()
        with rasterio.open(shifted / f.name, "w", **profile) as dst:
            dst.write((data.astype(np.int64) + 1000).astype(np.uint16))
    (shifted / "MTD_MSIL1C.xml").write_text("<x><RADIO_ADD_OFFSET band_id='1'>-1000</RADIO_ADD_OFFSET></x>")
    args = ["--model", str(tiny_s2_model), "--backend", "pytorch", "--threads", "1", "--no-sidecars"]
    assert main(["fuse", str(plain), str(tmp_path / "a.tif"), *args]) == 0
    assert main(["fuse", str(shifted), str(tmp_path / "b.tif"), *args]) == 0
    assert "DN offset -1000" in capsys.readouterr().err
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        pa, pb = a.read().astype(np.int64), b.read().astype(np.int64)
    # where the plain product is not clipped at reflectance 0 (the offset exists to keep negative
    # reflectances: the shifted product keeps them, down to -0.1)
    kept = pa > 1
    assert kept.mean() > 0.3 and np.abs(pb - 1000 - pa)[kept].max() <= 1
    assert np.array_equal(pb[:3] - 1000, pa[:3])  # B02, B03, B04 passed through as delivered


def test_station_run_and_ray_give_the_fuse_product(tmp_path, tiny_s2_model, monkeypatch):
    """``ddif station run`` on the delivery's 20 m stack and its guide stack, and the station on a
    local Ray (2 actors), write the same ten-band product as ``ddif fuse DIR``, byte for byte."""
    ray = pytest.importorskip("ray")
    import functools
    import tempfile

    from ddif.runtime import TorchBackend
    from ddif.station import run_scene
    from ddif.station.config import StationConfig
    from ddif.station.distributed import RayBackend
    from ddif.station.events import EventLog

    folder = write_delivery(tmp_path / "delivery")
    out = tmp_path / "fuse" / "S2.tif"
    common = ["--model", str(tiny_s2_model), "--backend", "pytorch"]
    assert main(["fuse", str(folder), str(out), *common]) == 0
    station_out = tmp_path / "station" / "S2.tif"
    ms_vrt, guide_vrt = out.with_name("S2_MS.vrt"), out.with_name("S2_guide10m.vrt")
    assert main(["station", "run", "--ms", str(ms_vrt), "--pan", str(guide_vrt), "--out", str(station_out),
                 *common, "--no-progress"]) == 0
    assert station_out.read_bytes() == out.read_bytes()

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ddif-ray-", dir="/tmp"))
    try:
        # what each actor builds: the engine on the checkpoint path, at the model's own tiling
        factory = functools.partial(TorchBackend)
        backend = RayBackend(tiny_s2_model, factory, threads=1, log=EventLog(stream=None))
        ray_out = tmp_path / "ray" / "S2.tif"
        ray_out.parent.mkdir()
        report = run_scene(ms_vrt, guide_vrt, ray_out, backend, StationConfig(), log=EventLog(stream=None))
        backend.close()
    finally:
        ray.shutdown()
    assert report["tiles"]["executor"]["executor"] == "ray"
    assert ray_out.read_bytes() == out.read_bytes()


def test_user_errors_are_named_before_anything_is_written(tmp_path, tiny_s2_model, capsys):
    """What a user gets wrong with a delivery: each is one line naming the problem, and no stray
    stack is left. A VRT next to symbolic links of the band files is read (the links are the
    user's; only the path text of a source must stay in the VRT's folder)."""
    plain = write_delivery(tmp_path / "plain")
    run = ["--model", str(tiny_s2_model), "--backend", "pytorch", "--threads", "1"]
    # an empty folder and a missing folder: find_bands' own messages (not "expected 3 paths")
    (tmp_path / "empty").mkdir()
    assert main(["fuse", str(tmp_path / "empty"), str(tmp_path / "o1.tif"), *run]) != 0
    assert "Sentinel-2 bands B02, B03" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "nope"), str(tmp_path / "o2.tif"), *run]) != 0
    assert "no such folder, .SAFE or VRT" in capsys.readouterr().err
    # a 20 m band delivered at 10 m: named as such, not as a wrong ratio
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for f in plain.iterdir():
        (wrong / f.name).symlink_to(f)
    (wrong / "T18SVG_20160112_B05.tif").unlink()
    (wrong / "T18SVG_20160112_B05.tif").symlink_to(plain / "T18SVG_20160112_B02.tif")
    assert main(["fuse", str(wrong), str(tmp_path / "o3.tif"), *run]) != 0
    err = capsys.readouterr().err
    assert "band B05 has 10 m pixels, expected 20 m" in err and not (tmp_path / "o3_guide10m.vrt").exists()
    # a VRT beside symbolic links of the band files
    links = tmp_path / "links"
    links.mkdir()
    for f in plain.iterdir():
        (links / f.name).symlink_to(f)
    sources = "".join(f'<SourceFilename relativeToVRT="1">T18SVG_20160112_{b}.tif</SourceFilename>'
                      for b in SENTINEL2_PRODUCT_ORDER)
    (links / "scene.vrt").write_text(f"<VRTDataset>{sources}</VRTDataset>")
    assert find_bands(links / "scene.vrt").bands["B05"] == links / "T18SVG_20160112_B05.tif"
    # an acquisition after processing baseline 04.00 without its MTD file: a warning naming the option
    late = tmp_path / "late"
    late.mkdir()
    for f in plain.iterdir():
        (late / f.name.replace("20160112", "20230112")).symlink_to(f)
    assert main(["fuse", str(late), str(tmp_path / "o4.tif"), *run, "--no-sidecars"]) == 0
    assert "--input-offset -1000" in capsys.readouterr().err


def test_a_truncated_band_file_is_named(tmp_path, tiny_s2_model, capsys):
    """A band file cut short: the read error names that band file, not only the stack VRT."""
    import os

    folder = write_delivery(tmp_path / "delivery", h10=256, w10=240)
    bad = folder / "T18SVG_20160112_B06.tif"
    os.truncate(bad, bad.stat().st_size // 2)
    rc = main(["fuse", str(folder), str(tmp_path / "o.tif"), "--model", str(tiny_s2_model), "--backend", "pytorch"])
    err = capsys.readouterr().err
    assert rc != 0 and f"(band file {bad})" in err, err
    assert "See previous exception" not in err
