"""The unattended service: watch an inbox, fuse every complete scene, never stop on a bad one.

Inbox conventions (see :class:`~ddif.station.config.WatchConfig`):

- a pair ``<scene>_MS.tif`` + ``<scene>_PAN.tif`` (``.tif``/``.tiff``, any case), taken once a
  ``<scene>.ready`` marker exists or once both files kept their size and mtime over
  ``stable_polls`` polls; or
- a manifest ``<scene>.manifest.json`` = ``{"ms": "x.tif", "pan": "y.tif"}`` (relative to the
  inbox), written last by the producer: the scene is taken as soon as it is there.
  Files whose name starts with ``.`` or ends with ``.partial`` / ``.tmp`` are ignored (uploads in progress).

Scenes are processed in arrival order (latest modification time of their files, then name).

Outputs (``outbox/<scene>/``: ``<scene>.tif``, ``<scene>_quicklook.png``, ``<scene>_report.json``)
are staged in ``outbox/.<scene>.partial/`` and the folder is renamed into place when complete, so
a product folder is always whole. Inputs then move to ``processed/<scene>/`` and the journal
(``workdir/<scene>/``) is deleted. After ``kill -9`` the next start removes stale staging folders,
resumes the scene from its journal and writes a byte-identical product.

Failures: a bad scene (:class:`SceneError`) moves to ``quarantine/<scene>/`` with
``reason.json``; disk-full / permission errors are logged, the scene stays (journal kept) and is
retried after ``retry_backoff_s``; other errors are retried up to ``max_attempts`` times, then
quarantined. Only one service may watch an outbox at a time (a lock file).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddif.station.config import StationConfig, WatchConfig
from ddif.station.errors import (BAD_MANIFEST, MISSING_PARTNER, PROCESSING_ERROR, SceneError, StopRequested,
                                 environment_error_kind)
from ddif.station.events import EventLog
from ddif.station.quarantine import archive, quarantine
from ddif.station.run import run_scene
from ddif.utils.io import fsync_dir

PAIR_RE = re.compile(r"^(?P<scene>.+)_(?P<kind>MS|PAN)\.tiff?$", re.IGNORECASE)
MANIFEST_SUFFIX = ".manifest.json"
READY_SUFFIX = ".ready"
IGNORED_SUFFIXES = (".partial", ".tmp")


@dataclass
class SceneFiles:
    name: str
    ms: Path | None = None
    pan: Path | None = None
    manifest: Path | None = None
    marker: Path | None = None
    manifest_error: str | None = None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.ms, self.pan, self.manifest, self.marker) if p is not None]

    def existing(self) -> list[Path]:
        return [p for p in self.files if p.exists()]

    def signature(self) -> tuple:
        sig = []
        for p in self.files:
            try:
                st = p.stat()
                sig.append((p.name, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                sig.append((p.name, None, None))
        return tuple(sig)

    def arrival_ns(self) -> int:
        return max((s[2] or 0) for s in self.signature()) if self.files else 0


def scan_inbox(inbox: Path) -> dict[str, SceneFiles]:
    """The scenes in the inbox (top level only: processed/ and quarantine/ folders are skipped)."""
    scenes: dict[str, SceneFiles] = {}
    names = sorted(e.name for e in os.scandir(inbox) if e.is_file() and not e.name.startswith("."))
    names = [n for n in names if not n.lower().endswith(IGNORED_SUFFIXES)]
    claimed: set[str] = set()
    for n in names:
        if n.endswith(MANIFEST_SUFFIX):
            scene = n[:-len(MANIFEST_SUFFIX)]
            sf = scenes.setdefault(scene, SceneFiles(scene))
            sf.manifest = inbox / n
            try:
                spec = json.loads((inbox / n).read_text())
                if not isinstance(spec, dict) or not all(isinstance(spec.get(k), str) and spec.get(k)
                                                         for k in ("ms", "pan")):
                    raise ValueError('expected {"ms": "<file>", "pan": "<file>"}')
                sf.ms, sf.pan = inbox / spec["ms"], inbox / spec["pan"]
                claimed.update((spec["ms"], spec["pan"]))
            except (ValueError, OSError) as exc:
                sf.manifest_error = f"manifest {n}: {exc}"
    for n in names:
        if n in claimed:
            continue
        m = PAIR_RE.match(n)
        if m:
            sf = scenes.setdefault(m["scene"], SceneFiles(m["scene"]))
            if sf.manifest is None:
                setattr(sf, m["kind"].lower(), inbox / n)
        elif n.endswith(READY_SUFFIX):
            scenes.setdefault(n[:-len(READY_SUFFIX)], SceneFiles(n[:-len(READY_SUFFIX)])).marker = inbox / n
    return scenes


class StationService:
    """``ddif station watch``: see the module docstring."""

    def __init__(self, inbox, outbox, backend, config: StationConfig | None = None,
                 watch: WatchConfig | None = None, *, quarantine_dir=None, processed_dir=None, workdir=None,
                 log: EventLog | None = None, model_id: dict[str, Any] | None = None):
        self.inbox = Path(inbox)
        self.outbox = Path(outbox)
        self.backend = backend
        self.config = config or StationConfig()
        self.watch = watch or WatchConfig()
        self.quarantine_dir = Path(quarantine_dir) if quarantine_dir else self.inbox / "quarantine"
        self.processed_dir = Path(processed_dir) if processed_dir else self.inbox / "processed"
        self.workdir = Path(workdir) if workdir else self.outbox / ".work"
        self.log = log or EventLog()
        self.model_id = model_id
        self._stop = False
        self._seen: dict[str, tuple[tuple, int]] = {}       # scene -> (signature, polls unchanged)
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._once = False
        self._failed_this_run: set[str] = set()          # --once: a failed scene is not retried
        self.failures = 0
        self.processed: list[str] = []
        self.quarantined: list[str] = []

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, *_args) -> None:
        self._stop = True

    def _should_stop(self) -> bool:
        return self._stop

    @contextlib.contextmanager
    def _lock(self):
        import fcntl

        self.outbox.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.outbox / ".station.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"another 'ddif station watch' is already serving {self.outbox}") from None
            yield
        finally:
            os.close(fd)

    def _clean_stale(self) -> None:
        for p in self.outbox.glob(".*.partial"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            self.log.info("stale_partial_removed", path=str(p))

    def run(self, once: bool = False) -> int:
        """Serve until stopped (SIGTERM / SIGINT), or with ``once`` until nothing more can be done
        now. Returns the number of scenes that failed (not counting quarantined bad scenes)."""
        if not self.inbox.is_dir():
            raise FileNotFoundError(f"inbox {self.inbox} is not a folder")
        self._once = once
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):           # not the main thread
                old[sig] = signal.signal(sig, self.request_stop)
        try:
            with self._lock():
                self._clean_stale()
                self.log.info("service_start", inbox=str(self.inbox), outbox=str(self.outbox),
                              quarantine=str(self.quarantine_dir), processed=str(self.processed_dir),
                              backend=getattr(self.backend, "name", "?"), once=once,
                              config=self.config.to_dict(), watch=vars(self.watch))
                while not self._stop:
                    try:
                        worked, waiting = self.poll()
                    except OSError as exc:          # inbox unmounted / unreadable: report, keep serving
                        self.failures += 1
                        self.log.error("inbox_error", error=f"{type(exc).__name__}: {exc}",
                                       error_kind=environment_error_kind(exc))
                        if once:
                            break
                        time.sleep(max(self.watch.poll_interval_s, 1.0))
                        continue
                    if once and not worked and not waiting:
                        break
                    if not worked:
                        time.sleep(self.watch.poll_interval_s)
        except StopRequested:
            pass
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        self.log.info("service_stop", processed=len(self.processed), quarantined=len(self.quarantined),
                      failures=self.failures, stopped=self._stop)
        return self.failures

    # ------------------------------------------------------------------ polling
    def poll(self) -> tuple[bool, bool]:
        """One look at the inbox; process every scene that is ready. Returns (did any work,
        whether some scene may become ready by polling again)."""
        scenes = scan_inbox(self.inbox)
        for gone in set(self._seen) - set(scenes):
            self._seen.pop(gone, None)
        ready, waiting = [], False
        now = time.time()
        for name, sf in scenes.items():
            sig = sf.signature()
            prev = self._seen.get(name)
            polls = prev[1] + 1 if prev and prev[0] == sig else 1
            if prev is None:
                self.log.info("scene_seen", scene=name, files=[p.name for p in sf.existing()])
            self._seen[name] = (sig, polls)
            state = self._state(sf, polls, now)
            if state == "ready":
                if self._retry_at.get(name, 0) > now or (self._once and name in self._failed_this_run):
                    continue
                ready.append(sf)
            elif state == "wait":
                waiting = True
        ready.sort(key=lambda sf: (sf.arrival_ns(), sf.name))
        worked = False
        for sf in ready:
            if self._stop:
                break
            self._process(sf)
            worked = True
        return worked, waiting

    def _state(self, sf: SceneFiles, polls: int, now: float) -> str:
        """'ready', 'wait' (may become ready), 'bad' (quarantined now) or 'idle' (orphan, waiting
        for its timeout)."""
        stable = polls >= self.watch.stable_polls
        if sf.manifest is not None:
            if sf.manifest_error:
                if stable:
                    self._quarantine(sf, BAD_MANIFEST, sf.manifest_error)
                    return "bad"
                return "wait"
            missing = [p.name for p in (sf.ms, sf.pan) if not p.exists()]
            if missing:
                if stable:
                    self._quarantine(sf, MISSING_PARTNER, f"manifest {sf.manifest.name} names missing file(s) "
                                                          f"{missing}")
                    return "bad"
                return "wait"
            return "ready"
        both = sf.ms is not None and sf.pan is not None
        if sf.marker is not None:
            if both:
                return "ready"
            if stable:
                have = sf.ms or sf.pan
                self._quarantine(sf, MISSING_PARTNER, f"ready marker {sf.marker.name} present but "
                                                      f"{'no files' if have is None else 'only ' + have.name}: "
                                                      f"expected {sf.name}_MS.tif and {sf.name}_PAN.tif")
                return "bad"
            return "wait"
        if both:
            return "ready" if stable else "wait"
        # a lone MS or PAN: wait for the partner up to orphan_timeout_s after its arrival
        age = now - sf.arrival_ns() / 1e9
        if stable and age >= self.watch.orphan_timeout_s:
            have = sf.ms or sf.pan
            self._quarantine(sf, MISSING_PARTNER, f"{have.name} has had no partner for {age:.0f} s "
                                                  f"(orphan_timeout_s = {self.watch.orphan_timeout_s:g})")
            return "bad"
        return "wait" if not stable else "idle"

    # ------------------------------------------------------------------ one scene
    def _outputs(self, folder: Path, name: str) -> dict[str, Path]:
        return {"product": folder / f"{name}.tif", "quicklook": folder / f"{name}_quicklook.png",
                "report": folder / f"{name}_report.json"}

    def _process(self, sf: SceneFiles) -> None:
        name = sf.name
        final = self.outbox / name
        journal_dir = self.workdir / name
        if self._outputs(final, name)["report"].exists():
            # a previous run finished the product but died before archiving the inputs
            self.log.info("scene_already_done", scene=name, product=str(final))
            self._finish(sf, journal_dir)
            return
        staging = self.outbox / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        self.log.info("scene_start", scene=name, ms=str(sf.ms), pan=str(sf.pan),
                      attempt=self._attempts.get(name, 0) + 1)
        t0 = time.perf_counter()
        try:
            staging.mkdir(parents=True)
            out = self._outputs(staging, name)
            report = run_scene(sf.ms, sf.pan, out["product"], self.backend, self.config,
                               quicklook_path=out["quicklook"], report_path=out["report"], journal_dir=journal_dir,
                               log=self.log, should_stop=self._should_stop, model_id=self.model_id)
            if final.exists():          # an incomplete folder left by hand: never merge into it
                shutil.rmtree(final)
            os.replace(staging, final)
            fsync_dir(self.outbox)
        except SceneError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(journal_dir, ignore_errors=True)
            self._quarantine(sf, exc.category, str(exc))
            return
        except StopRequested:
            shutil.rmtree(staging, ignore_errors=True)
            self.log.info("scene_interrupted", scene=name, journal=str(journal_dir))
            raise
        except Exception as exc:  # noqa: BLE001 - the service must outlive any one scene
            shutil.rmtree(staging, ignore_errors=True)
            self._failed(sf, exc)
            return
        self.log.info("scene_done", scene=name, product=str(final / f"{name}.tif"),
                      seconds=round(time.perf_counter() - t0, 3), tiles=report["tiles"]["fused"],
                      tiles_from_journal=report["tiles"]["tiles_from_journal"],
                      hqnr=report["quality"].get("mean", {}).get("HQNR"))
        self._finish(sf, journal_dir)

    def _finish(self, sf: SceneFiles, journal_dir: Path) -> None:
        try:
            dest = archive(sf.existing(), self.processed_dir, sf.name)
        except OSError as exc:
            self._failed(sf, exc, stage="archive")
            return
        shutil.rmtree(journal_dir, ignore_errors=True)
        self._seen.pop(sf.name, None)
        self._attempts.pop(sf.name, None)
        self.processed.append(sf.name)
        self.log.info("scene_archived", scene=sf.name, inputs=str(dest))

    def _failed(self, sf: SceneFiles, exc: BaseException, stage: str = "process") -> None:
        self.failures += 1
        self._failed_this_run.add(sf.name)
        kind = environment_error_kind(exc)
        name = sf.name
        if kind is not None:
            self._retry_at[name] = time.time() + self.watch.retry_backoff_s
            self.log.error("scene_failed", scene=name, stage=stage, error_kind=kind,
                           error=f"{type(exc).__name__}: {exc}", retry_in_s=self.watch.retry_backoff_s,
                           note="not the scene's fault: it stays in the inbox with its journal")
            return
        attempts = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempts
        self.log.error("scene_failed", scene=name, stage=stage, error_kind="processing",
                       error=f"{type(exc).__name__}: {exc}", attempt=attempts, max_attempts=self.watch.max_attempts,
                       traceback=traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        if attempts >= self.watch.max_attempts:
            shutil.rmtree(self.workdir / name, ignore_errors=True)
            self._quarantine(sf, PROCESSING_ERROR, f"failed {attempts} times, last: {type(exc).__name__}: {exc}")
        else:
            self._retry_at[name] = time.time() + self.watch.retry_backoff_s

    def _quarantine(self, sf: SceneFiles, category: str, message: str) -> None:
        try:
            dest = quarantine(sf.existing(), self.quarantine_dir, sf.name, category, message)
        except OSError as exc:
            self.failures += 1
            self.log.error("quarantine_failed", scene=sf.name, category=category, reason=message,
                           error=f"{type(exc).__name__}: {exc}", error_kind=environment_error_kind(exc))
            self._retry_at[sf.name] = time.time() + self.watch.retry_backoff_s
            return
        self._seen.pop(sf.name, None)
        self.quarantined.append(sf.name)
        self.log.warning("scene_quarantined", scene=sf.name, category=category, reason=message, folder=str(dest))
