"""``ddif fuse MS [MS ...] PAN OUT``: the one-shot front end of the station's single-scene path,
on the real Landsat-8 OLI pair in shared/data (B2, B3, B4 at 30 m, one file per band, and the real
PAN B8 at 15 m: ratio 2) with a tiny random 3-band ratio-2 model (no trained one exists for this
ratio). Products are compared byte for byte: a multi-band file, the same bands as separate files,
a VRT of them, and ``ddif station run`` on the multi-band file all give the same COG."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from test_station_support import save_station_model  # noqa: E402

from ddif.cli.main import main  # noqa: E402

SHARED = Path(os.environ.get("DDIF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LANDSAT = SHARED / "data" / "landsat8-pan-ms"
L8 = "LC08_L1TP_195025_20130707_20170503_01_T1_{}.TIF"
MS_BANDS = ("B2", "B3", "B4")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The band files, the PAN, the same bands stacked in one GeoTIFF (descriptions: the band
    files' stems, as the band stack names them) and a tiny model file."""
    if not LANDSAT.is_dir():
        pytest.skip(f"{LANDSAT} not found (set DDIF_SHARED to the shared folder)")
    folder = tmp_path_factory.mktemp("fuse")
    bands = [LANDSAT / L8.format(b) for b in MS_BANDS]
    arrays = []
    for path in bands:
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            profile = src.profile
    profile.update(count=3, tiled=False)
    stacked = folder / "L8_MS.tif"
    with rasterio.open(stacked, "w", **profile) as dst:
        dst.write(np.stack(arrays))
        for i, path in enumerate(bands):
            dst.set_band_description(i + 1, path.stem)
    model = save_station_model(folder / "tiny_l8.pt", bands=3, ratio=2, max_dn=32767.0, sensor="landsat8")
    return {"bands": bands, "pan": LANDSAT / L8.format("B8"), "stacked": stacked, "model": model, "folder": folder}


def _opts(scene, *extra: str) -> list[str]:
    return ["--model", str(scene["model"]), "--backend", "pytorch", "--tile-size", "48", "--overlap", "8",
            "--threads", "1", "-q", *extra]


def fuse(scene, ms, out, *extra: str) -> int:
    ms = [ms] if isinstance(ms, (str, Path)) else ms
    return main(["fuse", *map(str, ms), str(scene["pan"]), str(out), *_opts(scene, *extra)])


@pytest.fixture(scope="module")
def reference(scene):
    """``ddif fuse`` on the multi-band file: the product the other inputs must reproduce."""
    out = scene["folder"] / "ref" / "ref.tif"
    assert fuse(scene, scene["stacked"], out) == 0
    return out


def test_multiband_file_gives_the_station_product_and_sidecars(scene, reference, capsys):
    """The product is byte-identical to ``ddif station run`` on the same inputs and settings: one
    implementation behind both commands. The quicklook, report and STAC item sit beside it."""
    station_out = scene["folder"] / "station" / "ref.tif"
    rc = main(["station", "run", "--ms", str(scene["stacked"]), "--pan", str(scene["pan"]), "--out",
               str(station_out), "--model", str(scene["model"]), "--backend", "pytorch", "--tile-size", "48",
               "--overlap", "8", "--no-progress"])
    assert rc == 0
    capsys.readouterr()
    assert reference.read_bytes() == station_out.read_bytes()
    assert sorted(p.name for p in reference.parent.iterdir()) == ["ref.json", "ref.tif", "ref_quicklook.png",
                                                                  "ref_report.json"]
    with rasterio.open(reference) as src, rasterio.open(scene["pan"]) as pan:
        assert src.count == 3 and src.dtypes[0] == "int16" and src.nodata == -32768
        assert (src.crs, src.transform, src.shape) == (pan.crs, pan.transform, pan.shape)
        assert src.profile["compress"] == "deflate" and src.descriptions[0] == L8.format("B2")[:-4] + " (pansharpened)"


def test_band_files_give_the_same_product_as_the_stacked_file(scene, reference, tmp_path):
    out = tmp_path / "bands.tif"
    assert fuse(scene, scene["bands"], out) == 0
    assert out.read_bytes() == reference.read_bytes()
    stack = tmp_path / "bands_MS.vrt"   # the record of the bands used, kept beside the product
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bands.json", "bands.tif", "bands_MS.vrt",
                                                          "bands_quicklook.png", "bands_report.json"]
    with rasterio.open(stack) as src:
        assert src.files[1:] and all(Path(f).name in {p.name for p in scene["bands"]} | {L8.format("MTL")[:-4] + ".txt"}
                                     for f in src.files[1:])


def test_no_sidecars_writes_the_product_only(scene, reference, tmp_path):
    out = tmp_path / "only.tif"
    assert fuse(scene, scene["bands"], out, "--no-sidecars") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["only.tif"]
    assert out.read_bytes() == reference.read_bytes()


def test_vrt_input(scene, reference, tmp_path, capsys):
    """A GDAL VRT (relative source paths, as gdalbuildvrt -separate writes them) is read through
    the normal path; it is re-stacked beside the product so that the tile journal's identity of
    the MS covers its source files (touching a source changes the stack)."""
    from ddif.data.raster import band_stack_xml

    src_dir = tmp_path / "src"
    src_dir.mkdir()
    bands = [Path(shutil.copy2(p, src_dir / p.name)) for p in scene["bands"]]
    with rasterio.open(bands[0]) as src:
        t = src.transform
        header = (f'<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">\n'
                  f"  <SRS>{src.crs.to_wkt()}</SRS>\n"
                  f"  <GeoTransform>{t.c!r}, {t.a!r}, 0.0, {t.f!r}, 0.0, {t.e!r}</GeoTransform>\n")
    body = "".join(
        f'  <VRTRasterBand dataType="Int16" band="{i + 1}">\n'
        f"    <NoDataValue>-32768</NoDataValue>\n    <Description>{p.stem}</Description>\n"
        f'    <SimpleSource><SourceFilename relativeToVRT="1">src/{p.name}</SourceFilename>'
        f"<SourceBand>1</SourceBand></SimpleSource>\n  </VRTRasterBand>\n" for i, p in enumerate(bands))
    vrt = tmp_path / "L8.vrt"
    vrt.write_text(header + body + "</VRTDataset>\n")

    out = tmp_path / "out" / "vrt.tif"
    assert fuse(scene, vrt, out) == 0
    assert out.read_bytes() == reference.read_bytes()
    before = band_stack_xml([vrt])
    os.utime(bands[1], ns=(1, 1))
    assert band_stack_xml([vrt]) != before          # a changed source band changes the stack's identity

    bands[2].unlink()                               # a VRT whose source is gone: refused, naming the file
    assert fuse(scene, vrt, tmp_path / "gone.tif") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bands[2]}" in err and "does not exist" in err
    assert not (tmp_path / "gone_MS.vrt").exists()


def test_creation_options_change_the_product(scene, reference, tmp_path):
    out = tmp_path / "co.tif"
    assert fuse(scene, scene["bands"], out, "-co", "COMPRESS=ZSTD", "-co", "level=9", "-co", "BLOCKSIZE=128",
                "-co", "OVERVIEW_RESAMPLING=NEAREST", "-co", "NUM_THREADS=1") == 0
    with rasterio.open(out) as src, rasterio.open(reference) as ref:
        assert src.profile["compress"] == "zstd" and src.profile["blockxsize"] == 128
        assert ref.profile["compress"] == "deflate" and ref.profile["blockxsize"] == 256
        assert np.array_equal(src.read(), ref.read())    # same pixels, other encoding
    config = json.loads((tmp_path / "co_report.json").read_text())["config"]
    assert (config["compress"], config["zlevel"], config["block_size"], config["overview_resampling"]) == (
        "zstd", 9, 128, "nearest")   # an 82 px product has no overviews to resample: the setting is recorded


def test_bad_creation_options_are_refused_clearly(scene, tmp_path, capsys):
    from ddif.cli.fuse import creation_option_fields

    assert creation_option_fields(["compress=lzw", "BLOCKSIZE=512", "BIGTIFF=if_safer"]) == (
        {"compress": "lzw", "block_size": 512}, {"BIGTIFF": "IF_SAFER"})
    for bad, text in (("QUALITY=90", "-co QUALITY: not a creation option ddif fuse sets; accepted: COMPRESS"),
                      ("COMPRESS=JPEG", "expected DEFLATE, LZW, ZSTD or NONE"),
                      ("BLOCKSIZE=100", "expected a multiple of 16"),
                      ("LEVEL=12", "expected an integer in 1..9"),
                      ("NUM_THREADS=ALL_CPUS", "ddif fixes NUM_THREADS=1"),
                      ("ZSTD", "expected NAME=VALUE")):
        with pytest.raises(ValueError, match=text):
            creation_option_fields([bad])
    out = tmp_path / "bad.tif"
    assert fuse(scene, scene["bands"], out, "-co", "QUALITY=90") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ddif fuse: error: -co QUALITY") and "OVERVIEW_RESAMPLING" in err
    assert len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_mismatched_band_files_are_refused_naming_the_file(scene, tmp_path, capsys):
    b2, b3, b4 = scene["bands"]
    other = tmp_path / "B3_uint16.tif"
    with rasterio.open(b3) as src:
        profile = src.profile
        data = src.read()
    profile.update(dtype="uint16", nodata=0)
    with rasterio.open(other, "w", **profile) as dst:
        dst.write(np.clip(data, 0, None).astype("uint16"))
    cases = (([b2, scene["pan"], b4], f"MS band file {scene['pan']}: size (rows, cols) is (82, 82), expected (41, 41)"),
             ([b2, other, b4], f"MS band file {other}: dtype is uint16, expected int16"),
             ([b2, scene["stacked"]], f"MS band file {scene['stacked']}: has 3 bands, expected 1"),
             ([b2, tmp_path / "B9.TIF", b4], f"MS band file {tmp_path / 'B9.TIF'}: no such file"))
    for ms, text in cases:
        assert fuse(scene, ms, tmp_path / "out.tif") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["B3_uint16.tif"]   # nothing written, no stack left


def test_existing_output_needs_overwrite(scene, reference, tmp_path, capsys):
    out = tmp_path / "exists.tif"
    out.write_bytes(b"not a product")
    assert fuse(scene, scene["stacked"], out) == 2
    err = capsys.readouterr().err
    assert f"output {out} exists; give --overwrite" in err and out.read_bytes() == b"not a product"
    assert fuse(scene, scene["stacked"], scene["stacked"], "--overwrite") == 2
    assert "the product would overwrite input" in capsys.readouterr().err
    assert fuse(scene, scene["stacked"], out, "--overwrite") == 0
    assert out.read_bytes() == reference.read_bytes()
    from ddif.data.raster import write_band_stack

    stack = write_band_stack(scene["bands"], tmp_path / "again_MS.vrt")   # the stack "again.tif" would rewrite
    assert fuse(scene, stack, tmp_path / "again.tif") == 2
    assert "the MS band stack would overwrite input" in capsys.readouterr().err


def test_nodata_option_stands_in_for_a_missing_tag(scene, reference, tmp_path):
    """Band files without a nodata tag and ``--nodata -32768``: the same product as the tagged files."""
    untagged = []
    for path in [*scene["bands"], scene["pan"]]:
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
        profile.pop("nodata")
        untagged.append(tmp_path / path.name)
        with rasterio.open(untagged[-1], "w", **profile) as dst:
            dst.write(data)
    out = tmp_path / "out" / "nodata.tif"
    rc = main(["fuse", *map(str, untagged), str(out), *_opts(scene, "--nodata", "-32768", "--no-sidecars")])
    assert rc == 0 and out.read_bytes() == reference.read_bytes()


def test_without_model_the_shipped_model_that_fits_is_picked(scene, tmp_path, capsys):
    """Without --model, ddif fuse picks the shipped model that fits the inputs and says which:
    this real Landsat-8 ratio-2 pair (files named ..._B2.TIF ...) gets landsat8; a shipped model is
    also found by its name, and an unknown name lists the shipped ones."""
    from ddif.cli.common import SHIPPED_MODEL, resolve_model

    out = tmp_path / "default.tif"
    rc = main(["fuse", *map(str, scene["bands"]), str(scene["pan"]), str(out), "--backend", "pytorch"])
    err = capsys.readouterr().err
    assert rc == 0 and "model landsat8" in err and "sensor landsat8" in err and out.is_file()
    assert resolve_model(None) == SHIPPED_MODEL == resolve_model("landsat_small") and SHIPPED_MODEL.is_file()
    with pytest.raises(FileNotFoundError, match="shipped: landsat8, landsat_small"):
        resolve_model("no_such_model")
    assert main(["fuse", str(scene["pan"]), str(out)]) == 2
    assert "expected MS [MS ...] PAN OUT" in capsys.readouterr().err


def test_band_stack_keeps_its_time_stamp_while_the_sources_do_not_change(scene, tmp_path):
    """What makes a rerun after an interruption resume from the tile journal: an unchanged stack
    is not rewritten (same identity); a changed source rewrites it (new identity)."""
    from ddif.data.raster import write_band_stack
    from ddif.station.journal import file_identity

    bands = [Path(shutil.copy2(p, tmp_path / p.name)) for p in scene["bands"]]
    vrt = write_band_stack(bands, tmp_path / "s.vrt")
    first = file_identity(vrt)
    os.utime(vrt, ns=(10**18, 10**18))
    same = file_identity(vrt)
    assert write_band_stack(bands, vrt) == vrt and file_identity(vrt) == same
    with rasterio.open(bands[0], "r+") as dst:     # the band's pixels change (its size / mtime with them)
        dst.write(dst.read() + 1)
    write_band_stack(bands, vrt)
    assert file_identity(vrt) != same and first["name"] == "s.vrt"
