"""What a killed service leaves behind, finished or undone: interrupted archive / quarantine moves
(the move ledger: each move is staged in ``<folder>/.<scene>.partial/`` with a record of where its
files came from) and stale temp files of atomic writes in the folders the service owns.

An interrupted move is finished when that is safe (an archive only when the scene's product exists
with the same inputs; a quarantine always), otherwise its files are put back into the inbox. Stale
files are removed from the outbox, the workdir, processed/ and quarantine/ (never inside another
service's pending move, never in the inbox itself, where an upload may be named ``.partial``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddif.station.claims import SceneClaims
from ddif.station.errors import environment_error_kind
from ddif.station.events import EventLog
from ddif.station.inbox import read_inputs_marker, safe_scene_name
from ddif.station.journal import same_content
from ddif.station.quarantine import finish_move, pending_moves, read_record, rollback_move, staged_scene, staging_dir
from ddif.utils.io import is_atomic_temp


def product_matches(record: dict[str, Any]) -> bool:
    """Whether a move record's product exists for inputs with the record's content."""
    product, inputs = record.get("product"), record.get("inputs")
    if not product or not inputs:
        return False
    marker = read_inputs_marker(Path(product))
    return marker is not None and same_content(marker, inputs)


class MoveLedger:
    """The service's archive and quarantine moves under ``processed_dir`` / ``quarantine_dir``:
    recovery of interrupted ones (under the scene's claim) and the undo of a failed one.
    ``on_failure`` is called once per new recovery error (the service counts its failures)."""

    def __init__(
        self,
        processed_dir: Path,
        quarantine_dir: Path,
        claims: SceneClaims,
        log: EventLog,
        on_failure: Callable[[], None],
    ):
        self.folders = tuple(dict.fromkeys((processed_dir, quarantine_dir)))
        self.claims = claims
        self.log = log
        self.on_failure = on_failure
        self._errors: dict[str, str] = {}  # staging folder -> last recovery error logged

    def recover(self, staging: Path) -> str:
        """Finish or undo one interrupted move: 'done', 'busy' (another service holds the scene)
        or 'failed' (logged; tried again at the next poll)."""
        scene = staged_scene(staging)
        with self.claims.claim(scene) as mine:
            if not mine:
                return "busy"
            if not staging.exists():
                return "done"
            record = read_record(staging) or {}
            kind = record.get("kind")
            try:
                if kind == "quarantine" or (kind == "archive" and product_matches(record)):
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
                if self._errors.get(str(staging)) != error:  # once per error, not every poll
                    self._errors[str(staging)] = error
                    self.on_failure()
                    self.log.error(
                        "move_recovery_failed",
                        scene=scene,
                        staging=str(staging),
                        error=error,
                        error_kind=environment_error_kind(exc),
                        note="tried again at every poll",
                    )
                return "failed"
        self._errors.pop(str(staging), None)
        return "done"

    def recover_all(self) -> None:
        for parent in self.folders:
            for staging in pending_moves(parent):
                self.recover(staging)

    def pending(self, name: str) -> str | None:
        """None when scene ``name`` has no unfinished move. Otherwise the move is resolved if
        possible and the scene left alone for this poll (its files were half moved, what the inbox
        showed is stale): 'done' (look again next poll), 'busy' (another service holds the scene)
        or 'failed'."""
        state = None
        for parent in self.folders:
            staging = staging_dir(parent, safe_scene_name(name))
            if staging.is_dir():
                result = self.recover(staging)
                state = result if state in (None, "done") else state
        return state

    def undo(self, parent: Path, scene: str) -> None:
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


def _remove_stale(path: Path, what: str, log: EventLog) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("stale_partial_kept", path=str(path), what=what, error=f"{type(exc).__name__}: {exc}")
        return
    log.info("stale_partial_removed", path=str(path), what=what)


def clean_stale(
    inbox: Path, outbox: Path, workdir: Path, processed_dir: Path, quarantine_dir: Path, log: EventLog
) -> None:
    """Remove what a killed service leaves behind in the folders it owns: product staging folders
    (``outbox/.<scene>.partial/``) and temp files of atomic writes (``.<name>.<random>.partial``)
    anywhere under the outbox, the workdir, processed/ and quarantine/ (but not inside pending move
    folders, and never in the inbox itself)."""
    if outbox.is_dir():
        for p in sorted(outbox.glob(".*.partial")):
            _remove_stale(p, "staging folder" if p.is_dir() else "temp file", log)
    inbox_real = os.path.realpath(inbox)
    move_roots = {os.path.realpath(p) for p in (processed_dir, quarantine_dir)}
    for root in dict.fromkeys((outbox, workdir, processed_dir, quarantine_dir)):
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
                    _remove_stale(Path(dirpath) / fn, "temp file", log)
