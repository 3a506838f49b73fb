"""Moving files out of the inbox: bad scenes to quarantine (with a reason file), finished scenes
to the archive, atomically per scene.

A scene's files are first moved into a staging folder ``<parent>/.<scene>.partial/`` that holds
a record of the move (``.move.json``: the scene, the kind of move, each file's original path,
written before the first file moves); the staging folder is then renamed to its final name
(``<parent>/<scene>``, or ``<scene>.1``, ... when taken). A crash between two file moves leaves
a staging folder with its record, never a scene split between the inbox and the archive that
the inbox would show as a lone file: :func:`pending_moves` finds such folders, :func:`finish_move`
completes one and :func:`rollback_move` puts its files back where they came from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ddif.utils.io import atomic_write_text, fsync_dir

REASON_FILE = "reason.json"
MOVE_RECORD = ".move.json"
STAGING_SUFFIX = ".partial"


def unique_dir(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name.1``, ``name.2``, ... if taken (a scene name re-delivered later)."""
    candidate = parent / name
    n = 0
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}.{n}"
    return candidate


def staging_dir(parent: str | os.PathLike, scene: str) -> Path:
    """Where a move of ``scene``'s files into ``parent`` is staged."""
    return Path(parent) / f".{scene}{STAGING_SUFFIX}"


def pending_moves(parent: str | os.PathLike) -> list[Path]:
    """Staging folders of moves into ``parent`` that did not finish (a crash)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(
        p for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(STAGING_SUFFIX) and p.is_dir()
    )


def staged_scene(staging: Path) -> str:
    """The scene name of a staging folder ``.<scene>.partial``."""
    return staging.name[1 : -len(STAGING_SUFFIX)]


def read_record(staging: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((staging / MOVE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None


def move_scene(
    files: Iterable[Path],
    parent: str | os.PathLike,
    scene: str,
    kind: str,
    extra: dict[str, Any] | None = None,
    reason: dict[str, Any] | None = None,
) -> Path:
    """Move ``files`` into ``parent/<scene>/`` (or ``<scene>.N``) as one step: staged in
    ``parent/.<scene>.partial/`` with a record, then renamed. A file listed twice moves once; two
    files of one name (from different folders) get ``<name>.1``, ... (the record keeps where each
    came from).
    ``reason`` is written as ``reason.json`` beside them. Returns the final folder. On an error
    the staging folder is left with its record: call :func:`rollback_move` (or
    :func:`finish_move`)."""
    parent = Path(parent)
    files = _distinct([Path(f) for f in files if Path(f).exists() or Path(f).is_symlink()])
    parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(parent, scene)
    staging.mkdir()  # FileExistsError: an unfinished move of this scene must be recovered first
    record = {
        "scene": scene,
        "kind": kind,
        "files": [{"name": n, "from": str(f)} for f, n in zip(files, _names(files))],
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_text(staging / MOVE_RECORD, json.dumps(record, indent=2) + "\n")
    if reason is not None:
        atomic_write_text(staging / REASON_FILE, json.dumps(reason, indent=2) + "\n")
    for f, entry in zip(files, record["files"]):
        shutil.move(os.fspath(f), os.fspath(staging / entry["name"]))
    return _publish(staging, parent, scene)


def _distinct(files: list[Path]) -> list[Path]:
    """``files`` without repeats of one file (a manifest naming the same file twice, or itself);
    files of one name from different folders keep distinct names in the move (see
    :func:`move_scene`)."""
    seen: set[str] = set()
    out = []
    for f in files:
        key = os.path.realpath(f) if not f.is_symlink() else os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _names(files: list[Path]) -> list[str]:
    """A name per file inside one folder: its own, or ``<name>.<n>`` when an earlier one took it."""
    taken: set[str] = set()
    names = []
    for f in files:
        name, n = f.name, 0
        while name in taken or name in (MOVE_RECORD, REASON_FILE):
            n += 1
            name = f"{f.name}.{n}"
        taken.add(name)
        names.append(name)
    return names


def _publish(staging: Path, parent: Path, scene: str) -> Path:
    dest = unique_dir(parent, scene)
    os.rename(staging, dest)
    fsync_dir(parent)
    with contextlib.suppress(OSError):
        (dest / MOVE_RECORD).unlink()
    return dest


def finish_move(staging: Path) -> Path:
    """Complete an interrupted move: bring the files still at their original paths into the
    staging folder, then rename it into place. Returns the final folder."""
    record = read_record(staging)
    if record is None:
        raise ValueError(f"{staging}: no readable {MOVE_RECORD}; cannot tell which files belong to the move")
    for entry in record["files"]:
        src, dst = Path(entry["from"]), staging / entry["name"]
        if not (dst.exists() or dst.is_symlink()) and (src.exists() or src.is_symlink()):
            shutil.move(os.fspath(src), os.fspath(dst))
    return _publish(staging, staging.parent, record.get("scene") or staged_scene(staging))


def rollback_move(staging: Path) -> list[str]:
    """Undo an unfinished move: put every staged file back at its original path (never over a
    file that is there now) and remove the staging folder. Returns the paths restored. A staging
    folder without a record holds no moved file (the record is written before the first move):
    it is removed when empty."""
    record = read_record(staging)
    restored = []
    for entry in (record or {}).get("files", []):
        src, dst = staging / entry["name"], Path(entry["from"])
        if (src.exists() or src.is_symlink()) and not (dst.exists() or dst.is_symlink()):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(os.fspath(src), os.fspath(dst))
            restored.append(str(dst))
    if restored:
        fsync_dir(Path((record or {})["files"][0]["from"]).parent)
    for leftover in (MOVE_RECORD, REASON_FILE):
        with contextlib.suppress(FileNotFoundError):
            (staging / leftover).unlink()
    for temp in staging.glob(".*.partial"):  # temp files of an interrupted record / reason write
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    staging.rmdir()  # OSError if something unexpected is still there: left for a person
    return restored


def quarantine(
    files: Iterable[Path],
    quarantine_dir: str | os.PathLike,
    scene: str,
    category: str,
    message: str,
    original_name: str | None = None,
) -> Path:
    """Move a scene's files to ``quarantine_dir/<scene>/`` beside ``reason.json``
    (``{"scene", "category", "reason", "time", "files"}``), as one step; returns that folder.
    ``original_name``: the scene's own name when ``scene`` is a safe stand-in for it (a name that
    cannot name files); ``reason.json`` records it."""
    files = _distinct([Path(f) for f in files if Path(f).exists() or Path(f).is_symlink()])
    reason = {
        "scene": original_name if original_name is not None else scene,
        "category": category,
        "reason": message,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": _names(files),
    }
    return move_scene(files, quarantine_dir, scene, "quarantine", {"category": category}, reason=reason)


def archive(
    files: Iterable[Path], archive_dir: str | os.PathLike, scene: str, extra: dict[str, Any] | None = None
) -> Path:
    """Move a finished scene's inputs to ``archive_dir/<scene>/`` as one step; returns that folder."""
    return move_scene(files, archive_dir, scene, "archive", extra)
