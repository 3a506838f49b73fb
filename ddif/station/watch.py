"""The unattended service: watch an inbox, fuse every complete scene, never stop on a bad one.

Inbox conventions (see :class:`~ddif.station.config.WatchConfig`):

- a pair ``<scene>_MS.tif`` + ``<scene>_PAN.tif`` (``.tif``/``.tiff``, any case), taken once a
  ``<scene>.ready`` marker exists or once both files kept their size and mtime over
  ``stable_polls`` polls; or
- a manifest ``<scene>.manifest.json`` = ``{"ms": "x.tif", "pan": "y.tif"}`` (relative to the
  inbox), written last by the producer: the scene is taken as soon as it is there. Its paths must
  stay inside the inbox: an absolute path, a ``..`` component, a symbolic link whose target leaves
  the inbox or a path into the service's own folders (processed/, quarantine/) is refused, and
  the manifest (with the files it names inside the inbox, never a file outside) is quarantined
  as ``bad_manifest``. A pair file that is a symbolic link leading out of the inbox is refused
  the same way (``outside_inbox``).
  Files whose name starts with ``.`` or ends with ``.partial`` / ``.tmp`` are ignored (uploads in progress).

Scenes are processed in arrival order (latest modification time of their files, then name).

One scene, one service: several services (each with its own outbox) may watch one inbox. A
service claims a scene with an exclusive ``flock`` on ``<inbox>/.<scene>.claim`` for the whole of
its processing and archiving (or quarantining), and checks after taking the claim that the scene's
files are still those it saw; the kernel drops the claim if the service dies.

Outputs (``outbox/<scene>/``: ``<scene>.tif`` (a COG), ``<scene>_quicklook.png``,
``<scene>_report.json``, ``<scene>.json`` (the STAC Item, linking to the archived inputs) and
``.inputs.json``, the SHA-256 and size of the MS and PAN that made them) are staged in
``outbox/.<scene>.partial/`` and the folder is renamed into place when complete, so a product
folder is always whole. A scene whose product exists is not fused again when its inputs have the
same content (a restart after the product was written, or the same bytes delivered again): its
inputs are archived. A scene re-delivered with other content is fused again; the new folder
takes the name and the previous one is kept as ``<scene>.1`` (``.2``, ...). Each product folder
put in place is added to ``outbox/collection.json`` (a STAC Collection, updated under a lock and
atomically).

Inputs then move to ``processed/<scene>/`` (``.1``, ... for later deliveries) and the journal
(``workdir/<scene>/``) is deleted. Archive and quarantine moves are atomic per scene: the files go
into ``<folder>/.<scene>.partial/`` with a record of where they came from, which is then renamed.
At start the service finishes such an interrupted move (an archive only when the scene's product
exists with the same inputs; a quarantine always) or puts the files back into the inbox, then
removes stale temp files of atomic writes (``.<name>.<random>.partial``) and staging folders in
the folders it owns (outbox, workdir, processed, quarantine; never the inbox itself, where an
upload may be named ``.partial``). After ``kill -9`` the next start resumes the scene from its
journal and writes a byte-identical product.

Failures: a bad scene (:class:`SceneError`) moves to ``quarantine/<scene>/`` with
``reason.json``; disk-full / quota / file-size / permission errors, wherever they happen
(journal, staging folder, product, report, archive), are logged, the scene stays (journal kept)
and is retried after ``retry_backoff_s``; other errors are retried up to ``max_attempts`` times,
then quarantined. Only one service may use an outbox at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ddif.station.config import StationConfig, WatchConfig
from ddif.station.errors import (
    BAD_MANIFEST,
    BAD_NAME,
    MISSING_PARTNER,
    OUTSIDE_INBOX,
    PROCESSING_ERROR,
    Refused,
    SceneError,
    StopRequested,
    environment_error_kind,
)
from ddif.station.events import EventLog
from ddif.station.inbox import (
    CLAIM_SUFFIX,
    INPUTS_FILE,
    SceneFiles,
    is_inside,
    read_inputs_marker,
    safe_scene_name,
    scan_inbox,
)
from ddif.station.journal import content_identity, same_content
from ddif.station.products import update_collection
from ddif.station.quarantine import (
    archive,
    finish_move,
    pending_moves,
    quarantine,
    read_record,
    rollback_move,
    staged_scene,
    staging_dir,
    unique_dir,
)
from ddif.station.run import StationBackend, run_scene
from ddif.utils.io import atomic_write_text, exchange_paths, fsync_dir, is_atomic_temp

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _check_folders(inbox: Path, outbox: Path) -> None:
    """The inbox and the outbox must be apart: products are folders named by scenes, and the
    inbox's processed/ and quarantine/ folders, manifests and the collection would collide."""
    a, b = os.path.realpath(inbox), os.path.realpath(outbox)
    if a == b:
        raise ValueError(f"--inbox and --outbox are the same folder {a}; give the products their own folder")
    if is_inside(b, a):
        raise ValueError(f"--outbox {b} lies inside --inbox {a}; give the products a folder outside the inbox")
    if is_inside(a, b):
        raise ValueError(f"--inbox {a} lies inside --outbox {b}; give the inbox a folder outside the products")


def _serialised(method: Callable[Concatenate[StationService, _P], _R]) -> Callable[Concatenate[StationService, _P], _R]:
    """Run ``method`` under the service's bookkeeping lock: with ``scenes_in_flight`` > 1 several
    scenes finish, fail or are quarantined from their own threads."""

    @functools.wraps(method)
    def locked(self: StationService, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._book:
            return method(self, *args, **kwargs)

    return locked


class StationService:
    """``ddif station watch``: see the module docstring."""

    def __init__(
        self,
        inbox: str | os.PathLike,
        outbox: str | os.PathLike,
        backend: StationBackend,
        config: StationConfig | None = None,
        watch: WatchConfig | None = None,
        *,
        quarantine_dir: str | os.PathLike | None = None,
        processed_dir: str | os.PathLike | None = None,
        workdir: str | os.PathLike | None = None,
        log: EventLog | None = None,
        model_id: dict[str, Any] | None = None,
    ):
        self.inbox = Path(inbox)
        self.outbox = Path(outbox)
        self.backend = backend
        self.config = config or StationConfig()
        self.watch = watch or WatchConfig()
        self.quarantine_dir = Path(quarantine_dir) if quarantine_dir else self.inbox / "quarantine"
        self.processed_dir = Path(processed_dir) if processed_dir else self.inbox / "processed"
        self.workdir = Path(workdir) if workdir else self.outbox / ".work"
        _check_folders(self.inbox, self.outbox)
        self.log = log or EventLog()
        self.model_id = model_id
        self._stop = False
        self._seen: dict[str, tuple[tuple, int]] = {}  # scene -> (signature, polls unchanged)
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._once = False
        self._failed_this_run: set[str] = set()  # --once: a failed scene is not retried
        self._claims: dict[str, int] = {}  # scene -> fd of its flock'ed claim file
        self._quarantine_retry_at: dict[str, float] = {}  # scene -> when a failed quarantine move is retried
        self._recovery_errors: dict[str, str] = {}  # staging folder -> last recovery error logged
        self._busy_logged: set[str] = set()
        self._collection_behind = True  # checked (and repaired) at start
        self.failures = 0
        self.processed: list[str] = []
        self.quarantined: list[str] = []
        self._book = threading.RLock()  # the bookkeeping above, shared by the scene threads
        if self.watch.scenes_in_flight > 1 and not getattr(backend, "concurrent_scenes", False):
            raise ValueError(
                f"scenes_in_flight = {self.watch.scenes_in_flight} needs a backend that fuses several scenes "
                f"at once (a Ray cluster: --ray-address); {getattr(backend, 'name', type(backend).__name__)} "
                "takes one scene at a time: use scenes_in_flight = 1"
            )

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, *_args: object) -> None:
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
                raise Refused(
                    f"another 'ddif station watch' is already serving {self.outbox} "
                    f"(lock {self.outbox / '.station.lock'} is held)"
                ) from None
            yield
        finally:
            os.close(fd)

    def _reserved(self) -> list[Path]:
        """The service's folders that manifests may not point into (those holding the inbox aside)."""
        inbox = os.path.realpath(self.inbox)
        return [
            p
            for p in (self.processed_dir, self.quarantine_dir, self.outbox, self.workdir)
            if not is_inside(inbox, os.path.realpath(p))
        ]

    # ------------------------------------------------------------------ claims (one scene, one service)
    def _try_claim(self, scene: str) -> bool:
        import fcntl

        if scene in self._claims:
            return True
        path = self.inbox / f".{safe_scene_name(scene)}{CLAIM_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the previous holder unlinks the file before it lets go: a lock on an unlinked
            # (or since re-created) file claims nothing
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._claims[scene] = fd
        return True

    def _release_claim(self, scene: str) -> None:
        fd = self._claims.pop(scene, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.inbox / f".{safe_scene_name(scene)}{CLAIM_SUFFIX}")  # while still holding the lock
        os.close(fd)

    @contextlib.contextmanager
    def _claim(self, scene: str) -> Iterator[bool]:
        """Hold ``scene``'s claim (re-entrant) for the block; yields False when another service has it."""
        if scene in self._claims:
            yield True
            return
        if not self._try_claim(scene):
            if scene not in self._busy_logged:
                self._busy_logged.add(scene)
                self.log.info("scene_claimed_elsewhere", scene=scene, note="another service is working on it; skipped")
            yield False
            return
        self._busy_logged.discard(scene)
        try:
            yield True
        finally:
            self._release_claim(scene)

    # ------------------------------------------------------------------ start-up recovery
    def _product_matches(self, record: dict[str, Any]) -> bool:
        product, inputs = record.get("product"), record.get("inputs")
        if not product or not inputs:
            return False
        marker = read_inputs_marker(Path(product))
        return marker is not None and same_content(marker, inputs)

    def _recover_move(self, staging: Path) -> str:
        """Finish or undo one interrupted archive / quarantine move: 'done', 'busy' (another
        service holds the scene) or 'failed' (logged; tried again at the next poll)."""
        scene = staged_scene(staging)
        with self._claim(scene) as mine:
            if not mine:
                return "busy"
            if not staging.exists():
                return "done"
            record = read_record(staging) or {}
            kind = record.get("kind")
            try:
                if kind == "quarantine" or (kind == "archive" and self._product_matches(record)):
                    dest = finish_move(staging)
                    if kind == "archive" and record.get("journal"):
                        shutil.rmtree(record["journal"], ignore_errors=True)
                    self.log.warning("move_recovered", scene=scene, kind=kind, action="finished", folder=str(dest))
                else:
                    restored = rollback_move(staging)
                    self.log.warning(
                        "move_recovered",
                        scene=scene,
                        kind=kind,
                        action="moved back to the inbox",
                        files=restored,
                        why="no product with the same inputs" if kind == "archive" else "no record",
                    )
            except (OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if self._recovery_errors.get(str(staging)) != error:  # once per error, not every poll
                    self._recovery_errors[str(staging)] = error
                    self.failures += 1
                    self.log.error(
                        "move_recovery_failed",
                        scene=scene,
                        staging=str(staging),
                        error=error,
                        error_kind=environment_error_kind(exc),
                        note="tried again at every poll",
                    )
                return "failed"
        self._recovery_errors.pop(str(staging), None)
        return "done"

    def _recover_moves(self) -> None:
        for parent in dict.fromkeys((self.processed_dir, self.quarantine_dir)):
            for staging in pending_moves(parent):
                self._recover_move(staging)

    def _remove_stale(self, path: Path, what: str) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            self.log.warning("stale_partial_kept", path=str(path), what=what, error=f"{type(exc).__name__}: {exc}")
            return
        self.log.info("stale_partial_removed", path=str(path), what=what)

    def _clean_stale(self) -> None:
        """Remove what a killed service leaves behind in the folders this service owns: product
        staging folders (``outbox/.<scene>.partial/``) and temp files of atomic writes
        (``.<name>.<random>.partial``) anywhere under the outbox, the workdir, processed/ and
        quarantine/ (but not inside pending move folders, and never in the inbox itself)."""
        if self.outbox.is_dir():
            for p in sorted(self.outbox.glob(".*.partial")):
                self._remove_stale(p, "staging folder" if p.is_dir() else "temp file")
        inbox_real = os.path.realpath(self.inbox)
        move_roots = {os.path.realpath(p) for p in (self.processed_dir, self.quarantine_dir)}
        for root in dict.fromkeys((self.outbox, self.workdir, self.processed_dir, self.quarantine_dir)):
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                here = os.path.realpath(dirpath)
                keep = []
                for d in dirnames:
                    real = os.path.join(here, d)
                    if real == inbox_real:  # an inbox nested in the outbox: not ours
                        continue
                    if here in move_roots and d.startswith(".") and d.endswith(".partial"):
                        continue  # a pending move of another service
                    keep.append(d)
                dirnames[:] = keep
                for fn in filenames:
                    if is_atomic_temp(fn):
                        self._remove_stale(Path(dirpath) / fn, "temp file")

    def run(self, once: bool = False) -> int:
        """Serve until stopped (SIGTERM / SIGINT), or with ``once`` until nothing more can be done
        now. Returns the number of scenes that failed (not counting quarantined bad scenes)."""
        if not self.inbox.is_dir():
            raise FileNotFoundError(f"inbox {self.inbox} is not a folder")
        self._once = once
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                old[sig] = signal.signal(sig, self.request_stop)
        try:
            with self._lock():
                self._recover_moves()
                self._clean_stale()
                self.log.info(
                    "service_start",
                    inbox=str(self.inbox),
                    outbox=str(self.outbox),
                    quarantine=str(self.quarantine_dir),
                    processed=str(self.processed_dir),
                    backend=getattr(self.backend, "name", "?"),
                    once=once,
                    config=self.config.to_dict(),
                    watch=vars(self.watch),
                )
                while not self._stop:
                    try:
                        worked, waiting = self.poll()
                    except OSError as exc:  # inbox unmounted / unreadable: report, keep serving
                        self.failures += 1
                        self.log.error(
                            "inbox_error", error=f"{type(exc).__name__}: {exc}", error_kind=environment_error_kind(exc)
                        )
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
            for scene in list(self._claims):
                self._release_claim(scene)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        self.log.info(
            "service_stop",
            processed=len(self.processed),
            quarantined=len(self.quarantined),
            failures=self.failures,
            stopped=self._stop,
        )
        return self.failures

    # ------------------------------------------------------------------ polling
    def _pending_move(self, name: str) -> str | None:
        """None when ``name`` has no unfinished archive / quarantine move. Otherwise the move is
        resolved if possible and the scene left alone for this poll (its files were half moved,
        what the inbox showed is stale): 'done' (look again next poll), 'busy' (another service
        holds the scene) or 'failed'."""
        state = None
        for parent in dict.fromkeys((self.processed_dir, self.quarantine_dir)):
            staging = staging_dir(parent, safe_scene_name(name))
            if staging.is_dir():
                result = self._recover_move(staging)
                state = result if state in (None, "done") else state
        return state

    def poll(self) -> tuple[bool, bool]:
        """One look at the inbox; process every scene that is ready. Returns (did any work,
        whether some scene may become ready by polling again)."""
        if self._collection_behind or not self._collection_is_current():
            self._catalogue()
        scenes = scan_inbox(self.inbox, self._reserved())
        for gone in set(self._seen) - set(scenes):
            self._seen.pop(gone, None)
        ready, waiting = [], False
        now = time.time()
        for name, sf in scenes.items():
            pending = self._pending_move(name)
            if pending is not None:
                waiting = waiting or pending in ("busy", "done")
                continue
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
        lanes = min(self.watch.scenes_in_flight, len(ready))
        if lanes <= 1:
            outcomes = [self._take(sf) for sf in ready]
        else:
            # several scenes at once, in arrival order; every lane is joined before the poll ends
            with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="ddif-scene") as pool:
                futures = [pool.submit(self._take, sf) for sf in ready]
            outcomes, errors = [], []
            for f in futures:
                exc = f.exception()
                if exc is None:
                    outcomes.append(f.result())
                else:
                    errors.append(exc)
            if errors:  # a stop request (or an inbox error) seen by any lane ends the poll as it would alone
                raise next((e for e in errors if isinstance(e, StopRequested)), errors[0])
        worked = any(w for w, _ in outcomes)
        return worked, waiting or any(wt for _, wt in outcomes)

    def _take(self, sf: SceneFiles) -> tuple[bool, bool]:
        """Claim and process one ready scene: (processed it, may be ready at a later poll)."""
        if self._stop:
            return False, False
        with self._claim(sf.name) as mine:
            if not mine:
                return False, True  # another service has it: look again later
            # another service may have taken (and archived) the scene between our look and the claim
            if sf.signature() != self._seen.get(sf.name, ((), 0))[0] or len(sf.existing()) != len(sf.files):
                return False, True
            self._process(sf)
            return True, False

    def _state(self, sf: SceneFiles, polls: int, now: float) -> str:
        """'ready', 'wait' (may become ready), 'bad' (quarantined now) or 'idle' (orphan, waiting
        for its timeout)."""
        stable = polls >= self.watch.stable_polls
        if sf.name_error:
            return self._quarantine(sf, BAD_NAME, sf.name_error) if stable else "wait"
        if sf.manifest is not None:
            if sf.manifest_error:
                if stable:
                    return self._quarantine(sf, BAD_MANIFEST, sf.manifest_error)
                return "wait"
            assert sf.ms is not None and sf.pan is not None  # a manifest without error names both
            missing = [p.name for p in (sf.ms, sf.pan) if not p.exists()]
            if missing:
                if stable:
                    return self._quarantine(
                        sf, MISSING_PARTNER, f"manifest {sf.manifest.name} names missing file(s) {missing}"
                    )
                return "wait"
            if sf.outside_error:  # a named file that references data outside the inbox
                return self._quarantine(sf, OUTSIDE_INBOX, sf.outside_error) if stable else "wait"
            return "ready"
        if sf.outside_error:
            if stable:
                return self._quarantine(sf, OUTSIDE_INBOX, sf.outside_error)
            return "wait"
        both = sf.ms is not None and sf.pan is not None
        if sf.marker is not None:
            if both:
                return "ready"
            if stable:
                have = sf.ms or sf.pan
                return self._quarantine(
                    sf,
                    MISSING_PARTNER,
                    f"ready marker {sf.marker.name} present but "
                    f"{'no files' if have is None else 'only ' + have.name}: "
                    f"expected {sf.name}_MS.tif and {sf.name}_PAN.tif",
                )
            return "wait"
        if both:
            return "ready" if stable else "wait"
        # a lone MS or PAN: wait for the partner up to orphan_timeout_s after its arrival
        age = now - sf.arrival_ns() / 1e9
        if stable and age >= self.watch.orphan_timeout_s:
            have = sf.ms or sf.pan
            assert have is not None  # without a manifest or a marker, a scene is one file of a pair
            return self._quarantine(
                sf,
                MISSING_PARTNER,
                f"{have.name} has had no partner for {age:.0f} s (orphan_timeout_s = {self.watch.orphan_timeout_s:g})",
            )
        return "wait" if not stable else "idle"

    # ------------------------------------------------------------------ one scene
    def _outputs(self, folder: Path, name: str) -> dict[str, Path]:
        return {
            "product": folder / f"{name}.tif",
            "quicklook": folder / f"{name}_quicklook.png",
            "report": folder / f"{name}_report.json",
        }

    def _process(self, sf: SceneFiles) -> None:
        """Fuse one claimed scene (unless its product exists with the same inputs), then archive it."""
        name = sf.name
        ms, pan = sf.ms, sf.pan
        assert ms is not None and pan is not None  # a ready scene has both (see _state)
        final = self.outbox / name
        journal_dir = self.workdir / name
        try:
            inputs = content_identity({"ms": ms, "pan": pan})
        except OSError as exc:
            self._failed(sf, exc, stage="read inputs")
            return
        done = read_inputs_marker(final)
        if done is not None and same_content(done, inputs) and self._outputs(final, name)["report"].exists():
            # a previous run finished the product but died before archiving the inputs, or the same
            # bytes were delivered again
            self.log.info(
                "scene_already_done",
                scene=name,
                product=str(final),
                note="product exists for inputs with the same content: not fused again",
            )
            self._catalogue(name)
            self._finish(sf, journal_dir, inputs)
            return
        staging = self.outbox / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        self.log.info(
            "scene_start",
            scene=name,
            ms=str(sf.ms),
            pan=str(sf.pan),
            attempt=self._attempts.get(name, 0) + 1,
            redelivered=final.exists() or None,
        )
        t0 = time.perf_counter()
        try:
            staging.mkdir(parents=True)
            out = self._outputs(staging, name)
            report = run_scene(
                ms,
                pan,
                out["product"],
                self.backend,
                self.config,
                quicklook_path=out["quicklook"],
                report_path=out["report"],
                journal_dir=journal_dir,
                log=self.log,
                should_stop=self._should_stop,
                model_id=self.model_id,
                # the inputs are archived once the product is in place: the item links to them there
                # (the scene is claimed, so the archive folder named now is the one it will get)
                input_links=[unique_dir(self.processed_dir, name) / p.name for p in (ms, pan)],
            )
            atomic_write_text(staging / INPUTS_FILE, json.dumps(inputs, indent=2, sort_keys=True) + "\n")
            if final.exists() or final.is_symlink():
                # a product of other inputs (a re-delivery with new content, or a folder from an older
                # version): kept under a new name, never destroyed or merged into. The new folder
                # goes to that name, then the two swap in one step (renameat2 RENAME_EXCHANGE), so
                # <scene>/ always holds a whole product; without it: two renames.
                previous = unique_dir(self.outbox, name)
                os.rename(staging, previous)
                if not exchange_paths(previous, final):
                    tmp = self.outbox / f".{name}.superseded"
                    os.rename(final, tmp)
                    os.rename(previous, final)
                    os.rename(tmp, previous)
                self.log.warning(
                    "product_superseded",
                    scene=name,
                    previous=str(previous),
                    note="the scene was fused again from inputs with other content",
                )
            else:
                os.rename(staging, final)
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
        self.log.info(
            "scene_done",
            scene=name,
            product=str(final / f"{name}.tif"),
            seconds=round(time.perf_counter() - t0, 3),
            tiles=report["tiles"]["fused"],
            tiles_from_journal=report["tiles"]["tiles_from_journal"],
            hqnr=report["quality"].get("mean", {}).get("HQNR"),
        )
        self._catalogue(name)
        self._finish(sf, journal_dir, inputs)

    @_serialised
    def _catalogue(self, name: str | None = None) -> None:
        """Bring ``outbox/collection.json`` up to the products on disk (after the scene ``name``'s
        product is in place, at start, and at the next poll after a failed update). The
        collection is an index of the products, rebuilt from their items: a failure to write it is
        logged, leaves the products as they are and is repaired by the next update."""
        from ddif.station.products import product_items

        try:
            if not (self.outbox / "collection.json").exists() and (
                not self.outbox.is_dir() or not product_items(self.outbox)
            ):
                self._collection_behind = False
                return  # no product yet: no collection
            update_collection(self.outbox)
        except (OSError, ValueError) as exc:
            self._collection_behind = True
            self.log.warning("collection_not_updated", scene=name, error=f"{type(exc).__name__}: {exc}")
        else:
            if self._collection_behind and name is None:
                self.log.info("collection_repaired", collection=str(self.outbox / "collection.json"))
            self._collection_behind = False

    def _collection_is_current(self) -> bool:
        """Whether collection.json lists exactly the products on disk (readable, not behind)."""
        from ddif.station.products import product_items

        try:
            data = json.loads((self.outbox / "collection.json").read_text())
            listed = {lk.get("href") for lk in data.get("links", []) if lk.get("rel") == "item"}
        except (OSError, ValueError, AttributeError):
            return not product_items(self.outbox) if self.outbox.is_dir() else True
        return listed == {os.path.relpath(p, self.outbox) for p in product_items(self.outbox)}

    @_serialised
    def _finish(self, sf: SceneFiles, journal_dir: Path, inputs: dict[str, Any]) -> None:
        record = {"product": str(self.outbox / sf.name), "inputs": inputs, "journal": str(journal_dir)}
        try:
            dest = archive(sf.existing(), self.processed_dir, sf.name, record)
        except (OSError, ValueError) as exc:
            self._undo_move(self.processed_dir, sf.name)
            self._failed(sf, exc, stage="archive")
            return
        shutil.rmtree(journal_dir, ignore_errors=True)
        self._seen.pop(sf.name, None)
        self._attempts.pop(sf.name, None)
        self.processed.append(sf.name)
        self.log.info("scene_archived", scene=sf.name, inputs=str(dest))

    def _undo_move(self, parent: Path, scene: str) -> None:
        """After a failed move: put the files already moved back into the inbox (a pending move
        that cannot be undone now is resolved by a later poll or start)."""
        staging = staging_dir(parent, scene)
        if not staging.exists():
            return
        try:
            rollback_move(staging)
        except OSError as exc:
            self.log.error(
                "move_rollback_failed",
                scene=scene,
                staging=str(staging),
                error=f"{type(exc).__name__}: {exc}",
                error_kind=environment_error_kind(exc),
                note="resolved at the next poll or start",
            )

    @_serialised
    def _failed(self, sf: SceneFiles, exc: BaseException, stage: str = "process") -> None:
        self.failures += 1
        self._failed_this_run.add(sf.name)
        kind = environment_error_kind(exc)
        name = sf.name
        if kind is not None:
            self._retry_at[name] = time.time() + self.watch.retry_backoff_s
            self.log.error(
                "scene_failed",
                scene=name,
                stage=stage,
                error_kind=kind,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=self.watch.retry_backoff_s,
                note="not the scene's fault: it stays in the inbox with its journal",
            )
            return
        attempts = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempts
        self.log.error(
            "scene_failed",
            scene=name,
            stage=stage,
            error_kind="processing",
            error=f"{type(exc).__name__}: {exc}",
            attempt=attempts,
            max_attempts=self.watch.max_attempts,
            traceback=traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:],
        )
        if attempts >= self.watch.max_attempts:
            shutil.rmtree(self.workdir / name, ignore_errors=True)
            self._quarantine(sf, PROCESSING_ERROR, f"failed {attempts} times, last: {type(exc).__name__}: {exc}")
        else:
            self._retry_at[name] = time.time() + self.watch.retry_backoff_s

    @_serialised
    def _quarantine(self, sf: SceneFiles, category: str, message: str) -> str:
        """Move a claimed scene's files to quarantine. Returns the scene's state for :meth:`_state`:
        'bad' once quarantined, 'wait' when another service holds the scene or its files changed."""
        if sf.name in self._quarantine_retry_at:
            if self._once or self._quarantine_retry_at[sf.name] > time.time():
                return "idle"  # a failed quarantine move is retried after the backoff
        with self._claim(sf.name) as mine:
            if not mine:
                return "wait"
            # the files may have changed (or been taken by another service) since the inbox was read
            now = scan_inbox(self.inbox, self._reserved()).get(sf.name)
            seen = self._seen.get(sf.name)
            if now is None or now.files != sf.files or (seen is not None and now.signature() != seen[0]):
                return "wait"
            try:
                dest = quarantine(
                    sf.existing(), self.quarantine_dir, safe_scene_name(sf.name), category, message, sf.name
                )
            except (OSError, ValueError) as exc:
                self._undo_move(self.quarantine_dir, safe_scene_name(sf.name))
                self.failures += 1
                self.log.error(
                    "quarantine_failed",
                    scene=sf.name,
                    category=category,
                    reason=message,
                    error=f"{type(exc).__name__}: {exc}",
                    error_kind=environment_error_kind(exc),
                    retry_in_s=self.watch.retry_backoff_s,
                )
                self._quarantine_retry_at[sf.name] = time.time() + self.watch.retry_backoff_s
                self._retry_at[sf.name] = time.time() + self.watch.retry_backoff_s
                return "idle"
        self._quarantine_retry_at.pop(sf.name, None)
        self._seen.pop(sf.name, None)
        self.quarantined.append(sf.name)
        self.log.warning("scene_quarantined", scene=sf.name, category=category, reason=message, folder=str(dest))
        return "bad"
