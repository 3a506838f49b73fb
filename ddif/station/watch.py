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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ddif.station.catalogue import Catalogue, place_product
from ddif.station.claims import SceneClaims, outbox_lock
from ddif.station.config import StationConfig, WatchConfig
from ddif.station.errors import (
    PROCESSING_ERROR,
    SceneError,
    StopRequested,
    environment_error_kind,
)
from ddif.station.events import EventLog
from ddif.station.failures import FailurePolicy
from ddif.station.inbox import (
    INPUTS_FILE,
    SceneFiles,
    is_inside,
    read_inputs_marker,
    safe_scene_name,
    scan_inbox,
)
from ddif.station.journal import content_identity, same_content
from ddif.station.quarantine import (
    archive,
    quarantine,
    unique_dir,
)
from ddif.station.readiness import QuarantineNow, scene_readiness
from ddif.station.recovery import MoveLedger, clean_stale
from ddif.station.run import StationBackend, run_scene
from ddif.utils.io import atomic_write_text

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
        self._once = False
        self.claims = SceneClaims(self.inbox, self.log)
        self.policy = FailurePolicy(self.watch, self.log)
        self.ledger = MoveLedger(self.processed_dir, self.quarantine_dir, self.claims, self.log, self.policy.count)
        self.catalogue = Catalogue(self.outbox, self.log)
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

    def _reserved(self) -> list[Path]:
        """The service's folders that manifests may not point into (those holding the inbox aside)."""
        inbox = os.path.realpath(self.inbox)
        return [
            p
            for p in (self.processed_dir, self.quarantine_dir, self.outbox, self.workdir)
            if not is_inside(inbox, os.path.realpath(p))
        ]

    def run(self, once: bool = False) -> int:
        """Serve until stopped (SIGTERM / SIGINT), or with ``once`` until nothing more can be done
        now. Returns the number of scenes that failed (not counting quarantined bad scenes)."""
        if not self.inbox.is_dir():
            raise FileNotFoundError(f"inbox {self.inbox} is not a folder")
        self._once = self.policy.once = once
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                old[sig] = signal.signal(sig, self.request_stop)
        try:
            with outbox_lock(self.outbox):
                self.ledger.recover_all()
                clean_stale(self.inbox, self.outbox, self.workdir, self.processed_dir, self.quarantine_dir, self.log)
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
                        self.policy.count()
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
            self.claims.release_all()
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
    @property
    def failures(self) -> int:
        """Failures so far (scenes, moves, inbox errors; bad scenes quarantined are not failures)."""
        return self.policy.failures

    def poll(self) -> tuple[bool, bool]:
        """One look at the inbox; process every scene that is ready. Returns (did any work,
        whether some scene may become ready by polling again)."""
        if self.catalogue.behind or not self.catalogue.is_current():
            self._catalogue()
        scenes = scan_inbox(self.inbox, self._reserved())
        for gone in set(self._seen) - set(scenes):
            self._seen.pop(gone, None)
        ready, waiting = [], False
        now = time.time()
        for name, sf in scenes.items():
            pending = self.ledger.pending(name)
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
                if self.policy.waiting(name, now):
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
        with self.claims.claim(sf.name) as mine:
            if not mine:
                return False, True  # another service has it: look again later
            # another service may have taken (and archived) the scene between our look and the claim
            if sf.signature() != self._seen.get(sf.name, ((), 0))[0] or len(sf.existing()) != len(sf.files):
                return False, True
            self._process(sf)
            return True, False

    def _state(self, sf: SceneFiles, polls: int, now: float) -> str:
        """'ready', 'wait' (may become ready), 'bad' (quarantined now) or 'idle' (orphan, waiting
        for its timeout): :func:`ddif.station.readiness.scene_readiness`, acted on."""
        state = scene_readiness(sf, polls, now, self.watch)
        if isinstance(state, QuarantineNow):
            return self._quarantine(sf, state.category, state.message)
        return state

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
            attempt=self.policy.attempt(name),
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
            place_product(staging, final, self.outbox, self.log)
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
        self.catalogue.update(name)

    @_serialised
    def _finish(self, sf: SceneFiles, journal_dir: Path, inputs: dict[str, Any]) -> None:
        record = {"product": str(self.outbox / sf.name), "inputs": inputs, "journal": str(journal_dir)}
        try:
            dest = archive(sf.existing(), self.processed_dir, sf.name, record)
        except (OSError, ValueError) as exc:
            self.ledger.undo(self.processed_dir, sf.name)
            self._failed(sf, exc, stage="archive")
            return
        shutil.rmtree(journal_dir, ignore_errors=True)
        self._seen.pop(sf.name, None)
        self.policy.succeeded(sf.name)
        self.processed.append(sf.name)
        self.log.info("scene_archived", scene=sf.name, inputs=str(dest))

    @_serialised
    def _failed(self, sf: SceneFiles, exc: BaseException, stage: str = "process") -> None:
        """:class:`ddif.station.failures.FailurePolicy` decides: retried later, or quarantined now."""
        message = self.policy.failed(sf.name, exc, stage)
        if message is not None:
            shutil.rmtree(self.workdir / sf.name, ignore_errors=True)
            self._quarantine(sf, PROCESSING_ERROR, message)

    @_serialised
    def _quarantine(self, sf: SceneFiles, category: str, message: str) -> str:
        """Move a claimed scene's files to quarantine. Returns the scene's state for :meth:`_state`:
        'bad' once quarantined, 'wait' when another service holds the scene or its files changed."""
        if self.policy.quarantine_waiting(sf.name):
            return "idle"  # a failed quarantine move is retried after the backoff
        with self.claims.claim(sf.name) as mine:
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
                self.ledger.undo(self.quarantine_dir, safe_scene_name(sf.name))
                self.policy.quarantine_failed(sf.name)
                self.log.error(
                    "quarantine_failed",
                    scene=sf.name,
                    category=category,
                    reason=message,
                    error=f"{type(exc).__name__}: {exc}",
                    error_kind=environment_error_kind(exc),
                    retry_in_s=self.watch.retry_backoff_s,
                )
                return "idle"
        self.policy.quarantined(sf.name)
        self._seen.pop(sf.name, None)
        self.quarantined.append(sf.name)
        self.log.warning("scene_quarantined", scene=sf.name, category=category, reason=message, folder=str(dest))
        return "bad"
