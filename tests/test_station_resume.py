"""Crash safety of ``ddif station watch``: a service killed with SIGKILL in the middle of a scene,
then restarted into a full disk (writes capped with RLIMIT_FSIZE), then restarted normally, writes
a product byte-identical to an uninterrupted run, and never leaves a half-written product."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rasterio")

from test_station_support import journal_tiles, save_station_model, synthetic_scene

REPO = Path(__file__).resolve().parents[1]
TILES = 16            # 192 x 192 PAN, 64-pixel tiles with 16 of overlap: 4 x 4


def watch_cmd(inbox: Path, outbox: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "ddif", "station", "watch", "--inbox", str(inbox), "--outbox", str(outbox),
            "--model", str(model), "--backend", "pytorch", "--once", "--tile-size", "64", "--overlap", "16",
            "--batch-size", "2", "--block-size", "64", "--metric-tiles", "0", "--poll-interval-s", "0.05",
            "--gdal-cache-mb", "16", "--retry-backoff-s", "0"]


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _cap_file_size(limit: int):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # writes past the cap fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_kill9_then_disk_full_then_resume_is_byte_identical(tmp_path):
    model = save_station_model(tmp_path / "model.pt")
    ref_in, ref_out = tmp_path / "ref_in", tmp_path / "ref_out"
    in_, out = tmp_path / "in", tmp_path / "out"
    synthetic_scene(ref_in, "k", ms_size=48)
    synthetic_scene(in_, "k", ms_size=48)
    # one torch thread per service: the reference and the victim run side by side on few cores
    env_kw = dict(cwd=REPO, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    # the uninterrupted reference runs alongside the victim
    ref = subprocess.Popen(watch_cmd(ref_in, ref_out, model), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           **env_kw)
    victim_log = open(tmp_path / "victim.log", "w")
    victim = subprocess.Popen(watch_cmd(in_, out, model), stdout=victim_log, stderr=subprocess.STDOUT, **env_kw)
    journal = out / ".work" / "k"
    deadline = time.monotonic() + 240
    while journal_tiles(journal) < 2:
        assert victim.poll() is None, "the victim finished before it could be killed"
        assert time.monotonic() < deadline, "no tile was journaled in time"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim_log.close()
    done_at_kill = journal_tiles(journal)
    assert 2 <= done_at_kill < TILES
    assert not (out / "k").exists()                                 # no product, not even a partial one
    assert (in_ / "k_MS.tif").exists() and (in_ / "k_PAN.tif").exists()

    # restart into a "full disk": the remaining tiles are journaled, the product write fails (the
    # cap, 300,000 bytes per file, sits between one journal batch file, 262 KB, and the product)
    full = subprocess.run(watch_cmd(in_, out, model), capture_output=True, preexec_fn=_cap_file_size(300_000),
                          **env_kw)
    log = events(full.stderr)
    assert full.returncode == 1, full.stderr[-2000:]
    opened = next(e for e in log if e["event"] == "journal_open")
    assert opened["resumed"] and opened["tiles_done"] >= done_at_kill
    failed = next(e for e in log if e["event"] == "scene_failed")
    assert failed["error_kind"] in ("disk_full", "write_error"), (failed.get("error"), failed.get("stage"))
    assert not (out / "k").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial") or p.suffix == ".tif"], \
        "a half-written file was left behind"
    assert journal_tiles(journal) == TILES and (in_ / "k_MS.tif").exists()

    # a normal restart writes the product from the journal
    final = subprocess.run(watch_cmd(in_, out, model), capture_output=True, **env_kw)
    assert final.returncode == 0, final.stderr[-2000:]
    log = events(final.stderr)
    done = next(e for e in log if e["event"] == "scene_done")
    assert done["tiles_from_journal"] == TILES

    ref_stdout, ref_stderr = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_stderr[-2000:]
    assert next(e for e in events(ref_stderr) if e["event"] == "scene_done")["tiles_from_journal"] == 0

    a, b = (ref_out / "k" / "k.tif").read_bytes(), (out / "k" / "k.tif").read_bytes()
    assert len(a) > 100_000 and a == b                                # byte-identical GeoTIFF
    assert (ref_out / "k" / "k_quicklook.png").read_bytes() == (out / "k" / "k_quicklook.png").read_bytes()
    assert (in_ / "processed" / "k" / "k_MS.tif").exists() and not journal.exists()


def test_journal_identity_of_a_vrt_follows_its_band_files(tmp_path):
    """A VRT's bytes stay the same when a band file it points to is replaced: the journal's
    identity of the input must change anyway (else a resumed run mixes tiles of two inputs)."""
    import rasterio

    from ddif.data.raster import write_band_stack
    from ddif.station.journal import file_identity

    ms, _ = synthetic_scene(tmp_path / "in", "v", bands=2, ms_size=16)
    with rasterio.open(ms) as src:
        profile, data = src.profile, src.read()
    bands = []
    for i in range(2):
        p = tmp_path / f"B{i + 1}.tif"
        with rasterio.open(p, "w", **dict(profile, count=1)) as dst:
            dst.write(data[i:i + 1])
        bands.append(p)
    vrt = write_band_stack(bands, tmp_path / "stack.vrt")
    before = file_identity(vrt)
    assert [Path(s["path"]).name for s in before["sources"]] == ["B1.tif", "B2.tif"]
    assert file_identity(vrt) == before                      # nothing changed: same identity (resume)
    vrt_bytes = vrt.read_bytes()
    with rasterio.open(bands[1], "w", **dict(profile, count=1)) as dst:   # band 2 re-delivered
        dst.write(data[:1])
    os.utime(bands[1], ns=(before["sources"][1]["mtime_ns"] + 10**9,) * 2)
    assert vrt.read_bytes() == vrt_bytes
    assert file_identity(vrt) != before
    assert "sources" not in file_identity(ms)                # a plain GeoTIFF: its own identity only
