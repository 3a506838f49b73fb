"""Hostile inputs of the ground station and the CLI (issue 18): what a delivered file references,
manifests that name the same file twice or themselves, scene names that cannot name files or that
are the service's own, an outbox that is the inbox, outputs that would overwrite inputs or each
other. Each refusal is one clear line or a quarantine with a reason; nothing outside the inbox is
read. A do-nothing backend keeps them fast (tests/test_station_faults.py's helpers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

rasterio = pytest.importorskip("rasterio")

from test_station_faults import EchoBackend, _scene, _service, _tree_state  # noqa: E402


def _vrt_reading(path: Path, source: str, relative: bool = False) -> Path:
    """A one-band VRT named like a delivered file whose only source is ``source``."""
    with rasterio.open(source if not relative else path.parent / source) as src:
        w, h, t = src.width, src.height, src.transform
    path.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}'
        '</GeoTransform><VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename><SourceBand>1</SourceBand>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "vsicurl"])
def test_vrt_sources_outside_the_inbox_are_refused(tmp_path, kind):
    inbox, outbox, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    ms, pan = _scene(victim, "V", ready=False)
    before = _tree_state(victim)
    inbox.mkdir()
    if kind == "absolute":
        _vrt_reading(inbox / "V_MS.tif", str(ms))
    elif kind == "dotdot":
        _vrt_reading(inbox / "V_MS.tif", "../victim/V_MS.tif", relative=True)
    else:
        (inbox / "V_MS.tif").write_text(
            '<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
            '<SourceFilename relativeToVRT="0">/vsicurl/http://127.0.0.1:9/x.tif</SourceFilename>'
            "</SimpleSource></VRTRasterBand></VRTDataset>"
        )
    os.link(pan, inbox / "V_PAN.tif")
    (inbox / "V.ready").touch()
    backend = EchoBackend()
    _service(inbox, outbox, backend).run(once=True)
    assert backend.calls == 0 and _tree_state(victim) == before
    reason = json.loads((inbox / "quarantine" / "V" / "reason.json").read_text())
    assert reason["category"] == "outside_inbox", reason
    assert ("network" in reason["reason"]) if kind == "vsicurl" else ("outside" in reason["reason"])


def test_a_vrt_reading_inside_the_inbox_is_accepted(tmp_path):
    from ddif.data.raster import reference_problem

    inbox = tmp_path / "in"
    ms, _ = _scene(inbox, "W", ready=False)
    vrt = _vrt_reading(inbox / "W2_MS.tif", ms.name, relative=True)
    assert reference_problem(vrt, inbox) is None
    assert reference_problem(vrt, tmp_path / "elsewhere") is not None


@pytest.mark.parametrize("case", ["same file twice", "names itself"])
def test_manifests_naming_one_file_twice_or_themselves_are_quarantined_once(tmp_path, case):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    ms, _ = _scene(inbox, "M", ready=False)
    spec = {"ms": ms.name, "pan": ms.name} if case == "same file twice" else {"ms": "M.manifest.json", "pan": ms.name}
    (inbox / "M.manifest.json").write_text(json.dumps(spec))
    service = _service(inbox, outbox)
    service.run(once=True)
    reason = json.loads((inbox / "quarantine" / "M" / "reason.json").read_text())
    assert reason["category"] == "bad_manifest"
    assert not (inbox / "M.manifest.json").exists()
    service.run(once=True)  # nothing left to fail on the next poll
    assert [e for e in service.log.events if e["event"] == "quarantine_failed"] == []


@pytest.mark.parametrize("name", ["x" * 247, "two\nlines", "collection.json", "processed", "quarantine"])
def test_scene_names_that_cannot_name_files_are_quarantined_and_later_scenes_fused(tmp_path, name):
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    (inbox / "processed").mkdir(parents=True)
    _scene(inbox, name, ready=False)
    backend = EchoBackend()
    service = _service(inbox, outbox, backend)
    service.run(once=True)
    bad = [p for p in (inbox / "quarantine").iterdir()]
    assert len(bad) == 1, bad
    reason = json.loads((bad[0] / "reason.json").read_text())
    assert reason["category"] == "bad_name" and reason["scene"] == name
    assert not [p for p in inbox.iterdir() if p.is_file()]
    assert not (outbox / "collection.json").is_dir()
    _scene(inbox, "good", ready=True)  # delivered later: fused
    service.run(once=True)
    assert (outbox / "good" / "good.tif").is_file() and backend.calls >= 1


@pytest.mark.parametrize("layout", ["same", "outbox inside", "inbox inside"])
def test_inbox_and_outbox_must_be_apart(tmp_path, layout):
    inbox = tmp_path / "in"
    outbox = {"same": inbox, "outbox inside": inbox / "out", "inbox inside": tmp_path}[layout]
    with pytest.raises(ValueError, match="--inbox|--outbox"):
        _service(inbox, outbox)


def test_fuse_refuses_outputs_that_overwrite_inputs_or_each_other(tmp_path, capsys):
    from ddif.cli.main import main

    ms, pan = _scene(tmp_path, "F", ready=False)
    before = _tree_state(tmp_path)
    # the STAC item of S.json would be S.json itself
    assert main(["fuse", str(ms), str(pan), str(tmp_path / "S.json"), "--model", "landsat_small"]) == 2
    assert "must end in .tif" in capsys.readouterr().err
    # the report of F2.tif is F2_report.json: the MS given here
    report_named = tmp_path / "F2_report.json"
    os.link(ms, report_named)
    assert main(["fuse", str(report_named), str(pan), str(tmp_path / "F2.tif")]) == 2
    assert "would overwrite input" in capsys.readouterr().err
    # a folder as the output
    (tmp_path / "dir.tif").mkdir()
    assert main(["fuse", str(ms), str(pan), str(tmp_path / "dir.tif"), "--overwrite"]) == 2
    assert "is a folder" in capsys.readouterr().err
    # one band file three times
    assert main(["fuse", str(ms), str(ms), str(ms), str(pan), str(tmp_path / "T.tif")]) == 2
    assert "more than once" in capsys.readouterr().err
    assert {k: v for k, v in _tree_state(tmp_path).items() if "F2_report" not in k} == before
    assert sorted(p.name for p in (tmp_path / "dir.tif").iterdir()) == []


# ------------------------------------------------------------------------------------------ silent wrong products
def _pair(folder: Path, *, crs="EPSG:32632", ms_size=16, value=1000, dtype="uint16", pan_value=None):
    import numpy as np
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, size, res, count, v in (("S_MS.tif", ms_size, 40.0, 8, value),
                                      ("S_PAN.tif", 4 * ms_size, 10.0, 1, pan_value if pan_value is not None else value)):
        rng = np.random.default_rng(size)
        data = (v * (1 + 0.1 * rng.random((count, size, size)))).astype(dtype)
        kw = {} if crs is None else {"crs": crs}
        with rasterio.open(folder / name, "w", driver="GTiff", width=size, height=size, count=count, dtype=dtype,
                           transform=from_origin(500000.0, 4e6, res, res), **kw) as dst:
            dst.write(data)
        paths.append(folder / name)
    return paths


def _station_run(tmp_path, ms, pan, *extra):
    from test_station_support import save_station_model

    from ddif.cli.station import main

    model = save_station_model(tmp_path / "m.pt")
    return main(["run", "--ms", str(ms), "--pan", str(pan), "--model", str(model), "--out", str(tmp_path / "o.tif"),
                 *extra])


def test_a_pair_without_crs_is_refused(tmp_path, capsys):
    ms, pan = _pair(tmp_path / "in", crs=None)
    assert _station_run(tmp_path, ms, pan, "--dry-run") == 2
    assert "no CRS" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["inf", "nan", "0", "-1"])
def test_input_scale_must_be_finite_and_positive(tmp_path, capsys, scale):
    from ddif.cli.main import main

    ms, pan = _pair(tmp_path / "in")
    for cmd in (["station", "run", "--ms", str(ms), "--pan", str(pan), "--model", "x.pt", "--out", "o.tif"],
                ["sample", "--ckpt", "x.pt", "--ms", str(ms), "--pan", str(pan), "--out", "o.h5"],
                ["fuse", str(ms), str(pan), str(tmp_path / "o.tif")]):
        try:
            rc = main([*cmd, "--input-scale", scale])
        except SystemExit as exc:  # argparse refuses it: one line, exit 2
            rc = exc.code
        assert rc == 2, cmd
        err = capsys.readouterr().err
        assert "input" in err and "scale" in err and "Traceback" not in err, err


def test_an_input_scale_that_saturates_the_scene_is_refused(tmp_path, capsys):
    ms, pan = _pair(tmp_path / "in")
    assert _station_run(tmp_path, ms, pan, "--dry-run", "--input-scale", "1e300") == 2
    assert "saturate" in capsys.readouterr().err
    assert _station_run(tmp_path, ms, pan, "--dry-run", "--input-scale", "1e-6") == 2
    assert "near zero" in capsys.readouterr().err


def test_tile_size_beyond_memory_is_one_line(tmp_path, capsys):
    ms, pan = _pair(tmp_path / "in")
    assert _station_run(tmp_path, ms, pan, "--dry-run", "--tile-size", "100000") == 2
    assert "tile_size 100000" in capsys.readouterr().err


def test_a_huge_header_is_refused_in_seconds(tmp_path, capsys):
    import time

    from rasterio.transform import from_origin

    folder = tmp_path / "in"
    folder.mkdir()
    for name, size, res in (("H_MS.tif", 50_000, 40.0), ("H_PAN.tif", 200_000, 10.0)):
        with rasterio.open(folder / name, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                           crs="EPSG:32632", transform=from_origin(500000.0, 4e6, res, res), tiled=True,
                           blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True, BIGTIFF="YES"):
            pass
    from test_station_support import save_station_model

    from ddif.cli.station import main

    model = save_station_model(tmp_path / "m.pt", bands=1)
    t0 = time.perf_counter()
    rc = main(["run", "--ms", str(folder / "H_MS.tif"), "--pan", str(folder / "H_PAN.tif"), "--model", str(model),
               "--out", str(tmp_path / "o.tif"), "--dry-run"])
    assert rc == 2 and time.perf_counter() - t0 < 20
    assert "max_scene_pixels" in capsys.readouterr().err


def test_dry_run_of_an_all_nodata_scene_exits_like_the_run(tmp_path, capsys):
    import numpy as np

    ms, pan = _pair(tmp_path / "in")
    with rasterio.open(pan, "r+") as dst:
        dst.nodata = 0
        dst.write(np.zeros((1, dst.height, dst.width), np.uint16))
    assert _station_run(tmp_path, ms, pan, "--dry-run") == 2
    assert "no pixel is valid" in capsys.readouterr().err


def test_watch_on_a_read_only_outbox_is_an_environment_error(tmp_path, capsys, monkeypatch):
    import errno

    from ddif.cli.station import main

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    real_open = os.open

    def read_only(path, *a, **k):
        if str(path).endswith(".station.lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    from test_station_support import save_station_model

    model = save_station_model(tmp_path / "m.pt")
    rc = main(["watch", "--inbox", str(inbox), "--outbox", str(outbox), "--model", str(model), "--once",
               "--backend", "pytorch"])
    err = capsys.readouterr().err
    assert rc == 3 and "Read-only" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ collection
def test_collection_converges_after_a_failed_update_and_a_truncation(tmp_path, monkeypatch):
    import errno

    from ddif.station import products

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "a", ready=True)
    service = _service(inbox, outbox)
    real = products.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == "collection.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(products, "atomic_write_text", full_disk)
    service.run(once=True)
    assert (outbox / "a" / "a.tif").is_file() and not (outbox / "collection.json").exists()
    monkeypatch.setattr(products, "atomic_write_text", real)

    def listed():
        data = json.loads((outbox / "collection.json").read_text())
        return sorted(lk["href"] for lk in data["links"] if lk["rel"] == "item")

    # a restart (a new service) repairs it at its first poll, even with nothing new to fuse
    _service(inbox, outbox).run(once=True)
    assert listed() == ["a/a.json"]
    # someone truncates it: the next poll rebuilds it, and later items are added
    (outbox / "collection.json").write_text('{"type": "Coll')
    _scene(inbox, "b", ready=True)
    _service(inbox, outbox).run(once=True)
    assert listed() == ["a/a.json", "b/b.json"]


def test_a_read_only_export_cache_is_named_as_such(tmp_path, capsys, monkeypatch):
    import errno

    import ddif.cli.common as common
    from ddif.cli.main import main

    ms, pan = _pair(tmp_path / "in")
    from test_station_support import save_station_model

    model = save_station_model(tmp_path / "m.pt")

    def read_only_cache(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", "/root/.cache/ddif/onnx/x.onnx")

    monkeypatch.setattr(common, "build_station_backend", read_only_cache)
    import ddif.cli.fuse as fuse

    monkeypatch.setattr(fuse, "build_station_backend", read_only_cache)
    rc = main(["fuse", str(ms), str(pan), str(tmp_path / "o.tif"), "--model", str(model)])
    err = capsys.readouterr().err
    assert rc == 3 and "export cache" in err and "journal" not in err
    assert not (tmp_path / "o.tif").exists()
