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
