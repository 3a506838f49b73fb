"""Faults of the ground station found in operation, each with the case that showed it:
products of any size (overview read-back), manifests that point outside the inbox, disk full
anywhere, re-delivered scenes, two services on one inbox, a kill between archive moves, stale
temp files, and expected refusals of the command line. A do-nothing backend (returns lms) keeps
these tests fast; the real model is exercised in test_station.py."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ddif.station.errors import OutputWriteError
from ddif.station.io import overview_factors, product_profile, verify_product

rasterio = pytest.importorskip("rasterio")

REPO = Path(__file__).resolve().parents[1]
CRS = "EPSG:32632"


# ------------------------------------------------------------------------------------------ 1. any size
def _write_strip(path: Path, width: int, height: int, *, block: int = 256, min_size: int = 64,
                 value: int = 7) -> list[int]:
    """A product-like GeoTIFF (the station's ``product_profile``: tiled, deflate, predictor 2),
    constant pixels, average overviews with the station's factors. Returns the factors."""
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    grid = SimpleNamespace(ms=SimpleNamespace(dtype="uint16"), bands=1,
                           pan=SimpleNamespace(width=width, height=height, crs=CRS,
                                               transform=from_origin(500000.0, 4200000.0, 2.0, 2.0)))
    profile = product_profile(grid, 0.0, block, "deflate", 1)
    factors = overview_factors(height, width, min_size)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, height, width), value, np.uint16))
        if factors:
            dst.build_overviews(factors, Resampling.average)
    return factors


def _verify(path: Path, width: int, height: int, factors: list[int]) -> None:
    verify_product(path, bands=1, height=height, width=width, dtype="uint16", overviews=factors)


@pytest.mark.parametrize("width,height", [(15361, 16), (40000, 8), (8, 40000)])
def test_verify_product_thin_strips(tmp_path, width, height):
    """15,361 px: GDAL lists the x128 overview as 127 (round(15361 / 121)); 8 x 40,000: GDAL's
    list is taken from the x axis, which stops shrinking at 1 px ([2, 4, 8, 8, 8, ...]). The check
    compares the level count and each level's size, which are right."""
    path = tmp_path / f"p_{width}x{height}.tif"
    factors = _write_strip(path, width, height)
    with rasterio.open(path) as src:
        listed = src.overviews(1)
    assert len(listed) == len(factors) and listed != factors          # GDAL's rounded list differs
    _verify(path, width, height, factors)                              # and the product is accepted
    for level, f in enumerate(factors):
        with rasterio.open(path, overview_level=level) as ov:
            assert (ov.height, ov.width) == (math.ceil(height / f), math.ceil(width / f))


def test_verify_product_width_sweep(tmp_path):
    """Every width class that failed (10,000, 15,000, 17,000-40,000) and the edges of every power
    of two up to 40,000, as 2-px strips."""
    widths = {64, 65, 127, 128, 129, 10000, 15000, 15361, 17000, 23456, 33333, 40000}
    widths |= {2 ** k + d for k in range(7, 16) for d in (-1, 0, 1)}
    widths |= set(range(17000, 40001, 1500))
    failures = []
    for w in sorted(widths):
        path = tmp_path / f"w{w}.tif"
        factors = _write_strip(path, w, 2, block=64)
        try:
            _verify(path, w, 2, factors)
        except OutputWriteError as exc:
            failures.append((w, str(exc)))
        path.unlink()
    assert not failures, f"{len(failures)} of {len(widths)} widths refused, e.g. {failures[:3]}"


def test_verify_product_still_refuses_a_bad_product(tmp_path):
    path = tmp_path / "p.tif"
    factors = _write_strip(path, 4000, 16)
    with pytest.raises(OutputWriteError, match="overview levels"):
        _verify(path, 4000, 16, factors + [2 * factors[-1]])
    with pytest.raises(OutputWriteError, match=r"expected \(1, 16, 4001, 'uint16'\)"):
        _verify(path, 4001, 16, factors)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])                       # truncated: the last blocks are gone
    with pytest.raises(OutputWriteError, match="cannot be read back"):
        _verify(path, 4000, 16, factors)


def test_verify_product_reads_a_bounded_amount(tmp_path, monkeypatch):
    """The read-back reads one block per band / overview level, whatever the scene size: every
    read is a window of at most one block, and numpy's traced peak is the same at 512 and 4096 px
    (the old full-band overview reads held a 2048 x 2048 array at 4096 px)."""
    import tracemalloc

    import rasterio.io

    calls = []
    real_read = rasterio.io.DatasetReader.read

    def read(self, *args, **kwargs):
        calls.append((args, kwargs))
        return real_read(self, *args, **kwargs)

    peaks = {}
    for size in (512, 4096):
        path = tmp_path / f"sq{size}.tif"
        factors = _write_strip(path, size, size)
        monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
        calls.clear()
        tracemalloc.start()
        _verify(path, size, size, factors)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        monkeypatch.undo()
        assert calls, "verify_product read nothing back"
        for args, kwargs in calls:
            assert "out_shape" not in kwargs, "a decimated full-band read"
            win = kwargs.get("window")
            assert win is not None and win.width <= 256 and win.height <= 256, (args, kwargs)
    assert peaks[4096] < 2 * peaks[512] + 2 ** 20, peaks


# ------------------------------------------------------------------------------------------ service helpers
class EchoBackend:
    """A do-nothing backend with the ddif.runtime interface: ``fuse`` returns lms (the MS
    interpolated to the PAN grid) and ``sample_tiles`` a zero residual, optionally after a delay;
    counts its calls (thread-safe). Whole-image tiling: the station's config cuts the tiles."""

    name, bands, guide_bands, max_dn, rgb_bands, ratio, steps = "echo", 8, 1, 2047.0, (4, 2, 1), 4, None

    def __init__(self, delay: float = 0.0):
        import threading

        from test_station_support import station_preset

        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()
        self.preset = station_preset()
        try:
            from ddif.inference.tiling import Tiling
        except ImportError:             # an engine without the tiled-inference interface
            pass
        else:
            self.tiling = Tiling.for_preset(self.preset, 0, 0)

    def _call(self) -> None:
        import time

        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)

    def describe(self) -> str:
        return "echo (returns lms)"

    def fuse(self, lms, pan, seed=0, **kw):
        self._call()
        return lms

    def sample_tiles(self, lms, pan, noise, generators=None):
        import torch

        self._call()
        return torch.zeros_like(lms)


def _config(**kw):
    from ddif.station import StationConfig

    base = dict(tile_size=64, overlap=16, batch_size=4, block_size=64, metric_tiles=0, gdal_cache_mb=16)
    base.update(kw)
    return StationConfig(**base)


def _watch(**kw):
    from ddif.station import WatchConfig

    base = dict(poll_interval_s=0.01, stable_polls=1, retry_backoff_s=0.0, max_attempts=1)
    base.update(kw)
    return WatchConfig(**base)


def _scene(folder: Path, name: str, *, ready: bool = True, seed: int = 0, ms_size: int = 16):
    from test_station_support import synthetic_scene

    ms, pan = synthetic_scene(folder, name, ms_size=ms_size, seed=seed)
    if ready:
        (folder / f"{name}.ready").touch()
    return ms, pan


def _service(inbox, outbox, backend=None, *, log=None, config=None, **watch):
    from ddif.station import StationService
    from ddif.station.events import EventLog

    return StationService(inbox, outbox, backend or EchoBackend(), config or _config(), _watch(**watch),
                          log=log or EventLog(stream=None))


def _events(service, name):
    return [e for e in service.log.events if e["event"] == name]


# ------------------------------------------------------------------------------------------ 3. disk full
def test_environment_error_kind_recognises_errno_less_disk_full():
    import errno

    from ddif.station.errors import environment_error_kind

    assert environment_error_kind(OSError("524288 requested and 24968 written")) == "disk_full"   # numpy's tofile
    assert environment_error_kind(OSError("No space left on device")) == "disk_full"
    assert environment_error_kind(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk_full"
    assert environment_error_kind(OSError(errno.EFBIG, "File too large")) == "disk_full"
    assert environment_error_kind(OSError(errno.EACCES, "Permission denied")) == "permission"
    try:
        try:
            raise OSError("8388608 requested and 0 written")
        except OSError as inner:
            raise RuntimeError("tile journal: write failed for tile 3") from inner
    except RuntimeError as wrapped:
        assert environment_error_kind(wrapped) is not None
    assert environment_error_kind(ValueError("4 requested and 2 given")) is None
    assert environment_error_kind(RuntimeError("CUDA error: an illegal memory access")) is None


def _failing_atomic_path(message_or_errno, only_suffix: str = ""):
    """An atomic_path whose write (of files ending with ``only_suffix``) fails on exit like a full
    disk (the temp file is removed)."""
    import contextlib
    import errno as _errno

    from ddif.utils import io as uio

    real = uio.atomic_path

    @contextlib.contextmanager
    def failing(path, suffix=".partial"):
        with real(path, suffix) as tmp:
            yield tmp
            if not str(path).endswith(only_suffix):
                return
            if isinstance(message_or_errno, int):
                raise OSError(message_or_errno, _errno.errorcode[message_or_errno])
            raise OSError(message_or_errno)
    return failing


@pytest.mark.parametrize("stage", ["journal", "product", "report", "staging", "archive"])
def test_disk_full_anywhere_is_retried_not_quarantined(tmp_path, monkeypatch, stage):
    """Disk full (numpy's errno-less short write in the journal, ENOSPC / EDQUOT / EFBIG
    elsewhere) never quarantines a good scene, even with max_attempts=1: it stays in the inbox
    with its journal and is retried after retry_backoff_s."""
    import errno
    import pathlib
    import shutil
    import time

    import ddif.station.journal as journal_mod
    import ddif.utils.io as uio

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    ms, pan = _scene(inbox, "g")
    if stage == "journal":
        monkeypatch.setattr(journal_mod, "atomic_path", _failing_atomic_path("524288 requested and 24968 written"))
    elif stage == "product":
        monkeypatch.setattr(uio, "atomic_path", _failing_atomic_path(errno.ENOSPC, ".tif"))
    elif stage == "report":
        monkeypatch.setattr(uio, "atomic_write_text", lambda p, t: (_ for _ in ()).throw(
            OSError(errno.EDQUOT, "Disk quota exceeded")))
    elif stage == "staging":
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *a, **k):
            if self.name.endswith(".partial") and self.parent == outbox:
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real_mkdir(self, *a, **k)
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    elif stage == "archive":
        def move(src, dst, *a, **k):
            raise OSError("[Errno 28] No space left on device: " + str(dst))
        monkeypatch.setattr(shutil, "move", move)
    service = _service(inbox, outbox, retry_backoff_s=0.3)
    service.poll()
    monkeypatch.undo()
    failed = _events(service, "scene_failed")
    assert failed and failed[-1]["error_kind"] in ("disk_full", "write_error"), failed
    assert not service.quarantined and not (inbox / "quarantine").exists()
    assert ms.exists() and pan.exists() and (inbox / "g.ready").exists()
    if stage in ("journal", "product", "report"):
        assert (outbox / ".work" / "g" / "plan.json").exists()           # the journal is kept
    assert not [p for p in outbox.rglob("*") if p.name.endswith(".partial")]
    assert service.poll() == (False, True) or not service.processed    # not before the backoff
    time.sleep(0.35)
    service.poll()
    assert service.processed == ["g"] and (outbox / "g" / "g.tif").is_file()
    assert sorted(p.name for p in (inbox / "processed" / "g").iterdir() if not p.name.startswith(".")) == \
        ["g.ready", "g_MS.tif", "g_PAN.tif"]


def test_disk_full_in_journal_real_file_size_limit(tmp_path):
    """The real thing: a service whose files may not grow past 100 kB (RLIMIT_FSIZE, EFBIG) fails
    writing its first 128 kB journal tile. The scene is not quarantined (max_attempts 1)."""
    import json
    import os
    import resource
    import signal
    import subprocess
    import sys

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "big")
    script = ("import sys, json; sys.path.insert(0, 'tests');"
              "from test_station_faults import _service, EchoBackend;"
              "from ddif.station.events import EventLog;"
              f"s = _service({str(inbox)!r}, {str(outbox)!r}, log=EventLog(stream=sys.stdout), retry_backoff_s=60);"
              "s.run(once=True)")

    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=cap, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "scene_failed"]
    assert failed and failed[0]["error_kind"] == "disk_full", failed
    assert not [e for e in events if e["event"] == "scene_quarantined"]
    assert (inbox / "big_MS.tif").exists() and (outbox / ".work" / "big" / "plan.json").exists()


def test_station_run_disk_full_is_one_line_exit_3(tmp_path, monkeypatch, capsys):
    """``ddif station run`` into a full disk (journal write): exit code 3 and one line, no traceback."""
    import ddif.cli.station as cli_station
    import ddif.station.journal as journal_mod
    from test_station_support import save_station_model

    ms, pan = _scene(tmp_path / "in", "r", ready=False)
    model = save_station_model(tmp_path / "model.pt")
    monkeypatch.setattr(journal_mod, "atomic_path", _failing_atomic_path("131072 requested and 0 written"))
    rc = cli_station.main(["run", "--ms", str(ms), "--pan", str(pan), "--model", str(model), "--backend", "pytorch",
                           "--out", str(tmp_path / "r.tif"), "--tile-size", "64", "--overlap", "16",
                           "--metric-tiles", "0", "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert rc == 3 and len(err) == 1 and err[0].startswith("ddif station run: disk_full:"), err
    assert not (tmp_path / "r.tif").exists()


# ------------------------------------------------------------------------------------------ 2. manifests
def _tree_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_manifest_paths_outside_the_inbox_are_refused(tmp_path):
    """``..``, absolute paths and symbolic links leaving the inbox: the manifest (and only files
    inside the inbox) is quarantined as bad_manifest, naming the path; the outside files are not
    read, moved or changed."""
    import json
    import os

    inbox, outbox, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    _scene(victim, "B", ready=False)
    _scene(victim, "C", ready=False)
    before = _tree_state(victim)
    inbox.mkdir()
    (inbox / "B.manifest.json").write_text(json.dumps({"ms": "../victim/B_MS.tif",
                                                       "pan": str(victim / "B_PAN.tif")}))
    # C: the MS is a real file in the inbox, the PAN a symbolic link to a file outside
    _scene(inbox, "Cin", ready=False)
    os.rename(inbox / "Cin_MS.tif", inbox / "c_ms.tif")
    (inbox / "Cin_PAN.tif").unlink()
    os.symlink(victim / "C_PAN.tif", inbox / "c_pan.tif")
    (inbox / "C.manifest.json").write_text(json.dumps({"ms": "c_ms.tif", "pan": "c_pan.tif"}))
    # D: a path into the service's own folders
    (inbox / "processed" / "old").mkdir(parents=True)
    (inbox / "D.manifest.json").write_text(json.dumps({"ms": "processed/old/x_MS.tif", "pan": "c_ms.tif"}))
    backend = EchoBackend()
    service = _service(inbox, outbox, backend)
    service.run(once=True)

    assert backend.calls == 0 and not list(outbox.glob("[!.]*"))
    assert _tree_state(victim) == before                               # outside files untouched
    reasons = {}
    for scene in ("B", "C", "D"):
        reason = json.loads((inbox / "quarantine" / scene / "reason.json").read_text())
        assert reason["category"] == "bad_manifest", reason
        reasons[scene] = reason
    assert "'../victim/B_MS.tif'" in reasons["B"]["reason"] and "absolute" in reasons["B"]["reason"]
    assert str(victim / "B_PAN.tif") in reasons["B"]["reason"]
    assert "'c_pan.tif'" in reasons["C"]["reason"] and "outside the inbox" in reasons["C"]["reason"]
    assert "processed/old/x_MS.tif" in reasons["D"]["reason"]
    assert sorted(p.name for p in (inbox / "quarantine" / "B").iterdir()) == ["B.manifest.json", "reason.json"]
    assert sorted(p.name for p in (inbox / "quarantine" / "C").iterdir()) == \
        ["C.manifest.json", "c_ms.tif", "reason.json"]                 # the inside file goes with it
    # the refused link itself (named like a lone PAN of scene "c") is quarantined as a link
    assert (inbox / "quarantine" / "c" / "c_pan.tif").is_symlink()
    assert json.loads((inbox / "quarantine" / "c" / "reason.json").read_text())["category"] == "outside_inbox"
    assert not [p for p in inbox.iterdir() if p.is_file() or p.is_symlink()]


def test_pair_file_linked_outside_the_inbox_is_refused(tmp_path):
    import json
    import os

    inbox, victim = tmp_path / "in", tmp_path / "victim"
    ms, pan = _scene(victim, "L", ready=False)
    before = _tree_state(victim)
    inbox.mkdir()
    os.symlink(ms, inbox / "L_MS.tif")
    os.symlink(pan, inbox / "L_PAN.tif")
    (inbox / "L.ready").touch()
    backend = EchoBackend()
    _service(inbox, tmp_path / "out", backend).run(once=True)
    assert backend.calls == 0 and _tree_state(victim) == before
    reason = json.loads((inbox / "quarantine" / "L" / "reason.json").read_text())
    assert reason["category"] == "outside_inbox" and str(victim) in reason["reason"]
    assert (inbox / "quarantine" / "L" / "L_MS.tif").is_symlink()      # the link moved, not its target


# ------------------------------------------------------------------------------------------ 4. re-delivery
@pytest.mark.parametrize("swap", ["renameat2", "two renames"])
def test_redelivered_scene_with_new_content_is_fused_again(tmp_path, monkeypatch, swap):
    """Inputs are identified by SHA-256 + size (``.inputs.json`` in the product folder): new
    pixels under an old name are fused again (the old folder kept as A.1), the same bytes
    delivered again are archived without fusing."""
    import os
    import shutil

    import ddif.station.catalogue as catalogue_mod

    if swap == "two renames":
        monkeypatch.setattr(catalogue_mod, "exchange_paths", lambda a, b: False)
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    backend = EchoBackend()
    _scene(inbox, "A", seed=0)
    _service(inbox, outbox, backend).run(once=True)
    first = (outbox / "A" / "A.tif").read_bytes()
    calls = backend.calls
    assert calls > 0 and (inbox / "processed" / "A" / "A_MS.tif").exists()

    _scene(inbox, "A", seed=1)                                          # same name, other pixels
    _service(inbox, outbox, backend).run(once=True)
    second = (outbox / "A" / "A.tif").read_bytes()
    assert backend.calls == 2 * calls, "the re-delivered scene was not fused"
    assert second != first
    with rasterio.open(outbox / "A" / "A.tif") as a, rasterio.open(outbox / "A.1" / "A.tif") as b:
        assert not np.array_equal(a.read(), b.read())                  # the product reflects the new pixels
    assert (outbox / "A.1" / "A.tif").read_bytes() == first            # the old product is kept, whole
    assert (inbox / "processed" / "A.1" / "A_MS.tif").exists()

    # the same bytes again (copied: new mtime): archived without fusing
    shutil.copy(inbox / "processed" / "A.1" / "A_MS.tif", inbox / "A_MS.tif")
    shutil.copy(inbox / "processed" / "A.1" / "A_PAN.tif", inbox / "A_PAN.tif")
    (inbox / "A.ready").touch()
    service = _service(inbox, outbox, backend)
    service.run(once=True)
    assert backend.calls == 2 * calls and service.processed == ["A"]
    assert _events(service, "scene_already_done") and not (outbox / "A.2").exists()
    assert (outbox / "A" / "A.tif").read_bytes() == second
    assert (inbox / "processed" / "A.2" / "A_MS.tif").exists() and not (inbox / "A_MS.tif").exists()
    assert not os.path.exists(outbox / ".work" / "A")
    assert sorted(p.name for p in outbox.iterdir()) == [".collection.lock", ".station.lock", ".work", "A", "A.1", "collection.json"]


# ------------------------------------------------------------------------------------------ 5. one scene, one service
def test_two_services_on_one_inbox_fuse_each_scene_once(tmp_path):
    """Two services (own outboxes) poll one inbox at the same time: every scene is fused by
    exactly one of them (products and backend calls counted), and archived once."""
    import threading

    inbox = tmp_path / "in"
    names = [f"s{i}" for i in range(8)]
    for i, name in enumerate(names):
        _scene(inbox, name, seed=i, ms_size=8)                          # 32 x 32 PAN: one tile, one call
    backends = [EchoBackend(delay=0.15), EchoBackend(delay=0.15)]
    services = [_service(inbox, tmp_path / f"out{k}", backends[k], poll_interval_s=0.02) for k in range(2)]
    errors = []

    def serve(service):
        try:
            service.run(once=True)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    products = sorted(p.parent.name for k in range(2) for p in (tmp_path / f"out{k}").glob("*/*.tif"))
    assert products == names, products                                 # each scene once, in one outbox
    assert sum(b.calls for b in backends) == len(names)
    assert sorted(services[0].processed + services[1].processed) == names
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == names
    assert not services[0].quarantined and not services[1].quarantined
    assert not [p for p in inbox.iterdir() if p.is_file()]            # no claim file left behind


# ------------------------------------------------------------------------------------------ 6. atomic moves
class Crash(BaseException):
    """Stands in for kill -9 (not an Exception: nothing in the service catches it)."""


def _crash_after_moves(monkeypatch, n: int):
    import shutil

    real = shutil.move
    count = {"n": 0}

    def move(src, dst, *a, **k):
        if count["n"] >= n:
            raise Crash(f"killed after {n} file move(s)")
        count["n"] += 1
        return real(src, dst, *a, **k)
    monkeypatch.setattr(shutil, "move", move)


def test_kill_between_archive_moves_then_restart_archives_whole(tmp_path, monkeypatch):
    import json

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "k")
    backend = EchoBackend()
    _crash_after_moves(monkeypatch, 1)
    with pytest.raises(Crash):
        _service(inbox, outbox, backend).run(once=True)
    monkeypatch.undo()
    assert (outbox / "k" / "k.tif").is_file()
    calls = backend.calls
    service = _service(inbox, outbox, backend)
    service.run(once=True)
    assert not service.quarantined and not (inbox / "quarantine").exists()
    assert backend.calls == calls                                       # not fused again
    assert sorted(p.name for p in (inbox / "processed" / "k").iterdir()) == ["k.ready", "k_MS.tif", "k_PAN.tif"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["k"]
    assert not [p for p in inbox.iterdir() if p.is_file()]
    recovered = _events(service, "move_recovered")
    assert recovered and recovered[0]["action"] == "finished", recovered
    assert not json.dumps(service.log.events).count("missing_partner")


def test_kill_between_archive_moves_without_product_moves_files_back(tmp_path, monkeypatch):
    import shutil

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "k")
    _crash_after_moves(monkeypatch, 2)
    with pytest.raises(Crash):
        _service(inbox, outbox).run(once=True)
    monkeypatch.undo()
    shutil.rmtree(outbox / "k")                                         # the product is gone (by hand)
    service = _service(inbox, outbox)
    service.run(once=True)
    back = _events(service, "move_recovered")
    assert back and back[0]["action"] == "moved back to the inbox" and len(back[0]["files"]) == 2, back
    assert not service.quarantined and not (inbox / "quarantine").exists()
    assert service.processed == ["k"] and (outbox / "k" / "k.tif").is_file()     # fused again, archived whole
    assert sorted(p.name for p in (inbox / "processed" / "k").iterdir()) == ["k.ready", "k_MS.tif", "k_PAN.tif"]


def test_kill_between_quarantine_moves_then_restart_quarantines_whole(tmp_path, monkeypatch):
    import json

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "bad")
    (inbox / "bad_MS.tif").write_bytes(b"II*\x00" + b"\x01" * 2000)     # corrupt MS
    _crash_after_moves(monkeypatch, 1)
    with pytest.raises(Crash):
        _service(inbox, outbox).run(once=True)
    monkeypatch.undo()
    service = _service(inbox, outbox)
    service.run(once=True)
    folders = sorted(p.name for p in (inbox / "quarantine").iterdir())
    assert folders == ["bad"], folders
    reason = json.loads((inbox / "quarantine" / "bad" / "reason.json").read_text())
    assert reason["category"] == "corrupt"
    assert sorted(p.name for p in (inbox / "quarantine" / "bad").iterdir()) == \
        ["bad.ready", "bad_MS.tif", "bad_PAN.tif", "reason.json"]
    assert not [p for p in inbox.iterdir() if p.is_file()]


# ------------------------------------------------------------------------------------------ 7. stale temp files
def test_stale_partial_files_are_removed_at_start_but_not_in_the_inbox(tmp_path):
    inbox, outbox, workdir = tmp_path / "in", tmp_path / "out", tmp_path / "work"
    _scene(inbox, "done")
    _service(inbox, outbox).run(once=True)
    stale = [outbox / ".x.tif.a1b2c3d4.partial", outbox / "done" / ".done.tif.k3j4h5g6.partial",
             outbox / ".work" / "z" / ".batch_000001.npy.qwertyui.partial",
             workdir / "y" / ".batch_000002.npy.asdfghjk.partial",
             inbox / "processed" / "done" / ".reason.json.zxcvbnm1.partial",
             inbox / "quarantine" / "q" / ".reason.json.poiuytre.partial",
             outbox / ".s.partial" / "s.tif"]
    uploads = [inbox / ".upload_MS.tif.partial", inbox / "x_PAN.tif.partial", inbox / ".hidden.tmp"]
    for p in stale + uploads:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    service = _service(inbox, outbox)
    service.workdir = workdir
    service.run(once=True)
    assert not [p for p in stale if p.exists()], [str(p) for p in stale if p.exists()]
    assert not (outbox / ".s.partial").exists()
    assert all(p.exists() for p in uploads)                             # uploads in progress are not touched
    assert (outbox / "done" / "done.tif").exists() and (outbox / ".work" / "z").is_dir()
    removed = {e["path"] for e in _events(service, "stale_partial_removed")}
    assert {str(p) for p in stale[:-1]} | {str(outbox / ".s.partial")} == removed


# ------------------------------------------------------------------------------------------ 8. refusals
def _ddif(*argv: str, cwd: Path):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ddif.cli.main", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})


def _one_error_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("ddif station: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_expected_refusals_are_one_line_exit_2(tmp_path):
    """Through the ``ddif`` entry point (ddif.cli.main:main): another service holds the outbox
    lock; the inbox is missing; the model is missing; bad arguments."""
    import fcntl
    import os

    from test_station_support import save_station_model

    model = save_station_model(tmp_path / "model.pt")
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    base = ["station", "watch", "--outbox", str(outbox), "--model", str(model), "--backend", "pytorch", "--once"]
    fd = os.open(outbox / ".station.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        _one_error_line(_ddif(*base, "--inbox", str(inbox), cwd=tmp_path), "already serving", str(outbox))
    finally:
        os.close(fd)
    _one_error_line(_ddif(*base, "--inbox", str(tmp_path / "nope"), cwd=tmp_path), str(tmp_path / "nope"))
    _one_error_line(_ddif("station", "watch", "--inbox", str(inbox), "--outbox", str(outbox), "--model",
                          str(tmp_path / "missing.pt"), cwd=tmp_path), "model not found")
    _one_error_line(_ddif(*base, "--inbox", str(inbox), "--tile-size", "8", cwd=tmp_path), "tile_size")
    _one_error_line(_ddif("station", "watch", "--inbox", str(inbox), cwd=tmp_path), "--outbox")


# ------------------------------------------------------------------------------------------ guards
def test_processing_error_still_quarantines_and_failed_quarantine_move_keeps_scene_whole(tmp_path, monkeypatch):
    """A backend failure (not the environment) is quarantined after max_attempts as before; a
    quarantine move that fails midway (disk full) puts the moved files back: the scene stays
    whole in the inbox and --once ends."""
    import errno
    import json
    import shutil

    class Broken(EchoBackend):
        def _call(self):
            raise RuntimeError("backend exploded")

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "p")
    service = _service(inbox, outbox, Broken())
    service.run(once=True)
    assert service.quarantined == ["p"]
    assert json.loads((inbox / "quarantine" / "p" / "reason.json").read_text())["category"] == "processing_error"

    _scene(inbox, "q")
    real = shutil.move
    calls = {"n": 0}

    def move(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **k)
    monkeypatch.setattr(shutil, "move", move)
    service = _service(inbox, outbox, Broken())
    service.run(once=True)
    monkeypatch.undo()
    failed = _events(service, "quarantine_failed")
    assert failed and failed[0]["error_kind"] == "disk_full" and not service.quarantined
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["q.ready", "q_MS.tif", "q_PAN.tif"]
    assert sorted(p.name for p in (inbox / "quarantine").iterdir()) == ["p"]


def test_lost_compute_is_retried_not_quarantined(tmp_path):
    """Every Ray actor lost (ComputeUnavailable) is the environment's fault, like a full disk: the
    scene stays in the inbox with its journal however many times it fails; a plain backend error
    is quarantined after max_attempts (previous test)."""
    from ddif.station.errors import ComputeUnavailable, environment_error_kind

    class NoWorkers(EchoBackend):
        def _call(self):
            raise ComputeUnavailable("no Ray actor left (2 lost) and no replacement started within 120 s")

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    _scene(inbox, "p")
    for _ in range(4):  # more runs than max_attempts
        service = _service(inbox, outbox, NoWorkers())
        service.run(once=True)
        assert not service.quarantined
        failed = _events(service, "scene_failed")
        assert failed and failed[-1]["error_kind"] == "compute_unavailable", failed
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["p.ready", "p_MS.tif", "p_PAN.tif"]
    assert environment_error_kind(RuntimeError("wrapped")) is None
