"""Moving files out of the inbox: bad scenes to quarantine (with a reason file), finished scenes
to the archive. Moves are renames within a file system, so a scene's file is always in exactly
one place."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from ddif.utils.io import atomic_write_text

REASON_FILE = "reason.json"


def unique_dir(parent: Path, name: str) -> Path:
    """``parent/name``, or ``name.1``, ``name.2``, ... if taken (a scene name re-delivered later)."""
    candidate = parent / name
    n = 0
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}.{n}"
    return candidate


def move_files(files: Iterable[Path], dest: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    moved = []
    for f in files:
        f = Path(f)
        if f.exists():
            shutil.move(os.fspath(f), os.fspath(dest / f.name))
            moved.append(f.name)
    return moved


def quarantine(files: Iterable[Path], quarantine_dir: str | os.PathLike, scene: str, category: str,
               message: str) -> Path:
    """Move a scene's files to ``quarantine_dir/<scene>/`` beside ``reason.json``
    (``{"scene", "category", "reason", "time", "files"}``); returns that folder."""
    files = [Path(f) for f in files]
    dest = unique_dir(Path(quarantine_dir), scene)
    dest.mkdir(parents=True)
    record = {"scene": scene, "category": category, "reason": message,
              "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "files": [f.name for f in files if f.exists()]}
    atomic_write_text(dest / REASON_FILE, json.dumps(record, indent=2) + "\n")
    move_files(files, dest)
    return dest


def archive(files: Iterable[Path], archive_dir: str | os.PathLike, scene: str) -> Path:
    dest = unique_dir(Path(archive_dir), scene)
    move_files(files, dest)
    return dest
