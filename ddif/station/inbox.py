"""The inbox: which scenes are there (pairs ``<scene>_MS.tif`` + ``<scene>_PAN.tif``, ``.ready``
markers, ``<scene>.manifest.json`` manifests confined to the inbox) and the inputs identity
recorded beside a product. Read by :class:`ddif.station.watch.StationService`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAIR_RE = re.compile(r"^(?P<scene>.+)_(?P<kind>MS|PAN)\.tiff?$", re.IGNORECASE | re.DOTALL)
MANIFEST_SUFFIX = ".manifest.json"
READY_SUFFIX = ".ready"
IGNORED_SUFFIXES = (".partial", ".tmp")
CLAIM_SUFFIX = ".claim"
INPUTS_FILE = ".inputs.json"  # in a product folder: the content identity of the inputs that made it


# Scene names become file and folder names of the service (claims, staging folders, product and
# archive folders): longer names would overflow 255-byte file names once a suffix is added, and
# some names are the service's own files and folders.
MAX_SCENE_NAME_BYTES = 200
RESERVED_SCENE_NAMES = ("collection.json", "collection", "processed", "quarantine")


def scene_name_problem(scene: str) -> str | None:
    """Why a scene name cannot name the service's files and folders, or None."""
    if any(ord(c) < 32 or ord(c) == 127 for c in scene):
        return f"scene name {scene!r} holds control characters (newline, tab, ...)"
    size = len(scene.encode("utf-8", "surrogateescape"))
    if size > MAX_SCENE_NAME_BYTES:
        return (
            f"scene name of {size} bytes is longer than {MAX_SCENE_NAME_BYTES} (with the service's suffixes "
            "it would exceed the 255-byte file name limit)"
        )
    if scene.lower() in RESERVED_SCENE_NAMES or scene.startswith("."):
        return f"scene name {scene!r} is one of the service's own names ({', '.join(RESERVED_SCENE_NAMES)}, .*)"
    return None


def safe_scene_name(scene: str) -> str:
    """``scene`` itself when it can name files (:func:`scene_name_problem`), else a printable,
    bounded name made from it and its hash (for the quarantine folder and claim of a badly named
    scene)."""
    if scene_name_problem(scene) is None:
        return scene
    import hashlib

    digest = hashlib.sha256(scene.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    printable = re.sub(r"[^A-Za-z0-9._-]+", "_", scene).strip("._")[:60] or "scene"
    return f"bad-name-{printable}-{digest}"


@dataclass
class SceneFiles:
    name: str
    ms: Path | None = None
    pan: Path | None = None
    manifest: Path | None = None
    marker: Path | None = None
    manifest_error: str | None = None
    outside_error: str | None = None  # a pair file is a symbolic link leading out of the inbox
    name_error: str | None = None  # the scene's name cannot name the service's files (see scene_name_problem)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.ms, self.pan, self.manifest, self.marker) if p is not None]

    def existing(self) -> list[Path]:
        return [p for p in self.files if p.exists() or p.is_symlink()]

    def signature(self) -> tuple[tuple[str, int | None, int | None], ...]:
        """(name, size, mtime_ns) of each file (None, None: it is gone)."""
        sig: list[tuple[str, int | None, int | None]] = []
        for p in self.files:
            try:
                st = p.stat()
                sig.append((p.name, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                sig.append((p.name, None, None))
        return tuple(sig)

    def arrival_ns(self) -> int:
        return max((s[2] or 0) for s in self.signature()) if self.files else 0


def is_inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def manifest_path(inbox: Path, key: str, entry: Any, reserved: Iterable[Path] = ()) -> Path:
    """The inbox path a manifest entry names; ValueError (naming the entry) when it is not a
    relative path that stays inside the inbox (after following symbolic links), or when it
    lies in one of the ``reserved`` folders (the service's processed/ and quarantine/)."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f'"{key}" must name a file, got {entry!r}')
    root = os.path.realpath(inbox)
    if os.path.isabs(entry) or entry.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", entry):
        raise ValueError(f'"{key}" path {entry!r} is absolute; manifest paths must be relative to the inbox {root}')
    if ".." in re.split(r"[\\/]", entry):
        raise ValueError(f'"{key}" path {entry!r} leaves the inbox {root} (".." is not allowed)')
    path = inbox / entry
    real = os.path.realpath(path)
    if real == root or not is_inside(real, root):
        raise ValueError(f'"{key}" path {entry!r} resolves to {real}, outside the inbox {root} (symbolic link?)')
    for folder in reserved:
        folder_real = os.path.realpath(folder)
        if is_inside(real, folder_real):
            raise ValueError(f'"{key}" path {entry!r} lies in the service\'s folder {folder_real}')
    return path


def scan_inbox(inbox: Path, reserved: Iterable[Path] = ()) -> dict[str, SceneFiles]:
    """The scenes in the inbox (top level only: processed/ and quarantine/ folders are skipped).
    ``reserved``: folders manifests may not point into (the service's processed/ and quarantine/)."""
    inbox = Path(inbox)
    reserved = list(reserved)
    scenes: dict[str, SceneFiles] = {}
    entries = {e.name: e for e in os.scandir(inbox) if e.is_file() and not e.name.startswith(".")}
    names = sorted(n for n in entries if not n.lower().endswith(IGNORED_SUFFIXES))
    claimed: set[str] = set()
    root = os.path.realpath(inbox)
    for n in names:
        if n.endswith(MANIFEST_SUFFIX):
            scene = n[: -len(MANIFEST_SUFFIX)]
            sf = scenes.setdefault(scene, SceneFiles(scene))
            sf.manifest = inbox / n
            try:
                spec = json.loads((inbox / n).read_text())
                if not isinstance(spec, dict) or not all(
                    isinstance(spec.get(k), str) and spec.get(k) for k in ("ms", "pan")
                ):
                    raise ValueError('expected {"ms": "<file>", "pan": "<file>"}')
                problems = []
                for key in ("ms", "pan"):
                    try:
                        path = manifest_path(inbox, key, spec[key], reserved)
                    except ValueError as exc:
                        problems.append(str(exc))
                        continue
                    setattr(sf, key, path)
                    rel = os.path.relpath(path, inbox)
                    if os.sep not in rel:
                        claimed.add(rel)
                if problems:
                    raise ValueError("; ".join(problems))
                assert sf.ms is not None and sf.pan is not None  # both set above
                if sf.ms.name == sf.pan.name:
                    raise ValueError(f'"ms" and "pan" name the same file name {sf.ms.name!r}')
                for key, path in (("ms", sf.ms), ("pan", sf.pan)):
                    if path.name.endswith((MANIFEST_SUFFIX, READY_SUFFIX)):
                        raise ValueError(f'"{key}" names {path.name}, a manifest or ready marker, not a raster')
            except (ValueError, OSError) as exc:
                sf.manifest_error = f"manifest {n}: {exc}"
    for sf in scenes.values():
        _check_references(sf, root)
    for n in names:
        if n in claimed:
            continue
        m = PAIR_RE.match(n)
        if m:
            sf = scenes.setdefault(m["scene"], SceneFiles(m["scene"]))
            if sf.manifest is None:
                setattr(sf, m["kind"].lower(), inbox / n)
                if entries[n].is_symlink():
                    real = os.path.realpath(inbox / n)
                    if not is_inside(real, root):
                        sf.outside_error = f"{n} is a symbolic link to {real}, outside the inbox {root}"
        elif n.endswith(READY_SUFFIX):
            scenes.setdefault(n[: -len(READY_SUFFIX)], SceneFiles(n[: -len(READY_SUFFIX)])).marker = inbox / n
    for sf in scenes.values():
        sf.name_error = scene_name_problem(sf.name)
        if sf.manifest is None:
            _check_references(sf, root)
    return scenes


def _check_references(sf: SceneFiles, root: str) -> None:
    """The inbox rule holds for what a delivered raster references too (the scene layer's
    :func:`ddif.data.raster.reference_problem`: a VRT reading files outside the inbox or over the
    network is refused, like a symbolic link leading out)."""
    from ddif.data.raster import SceneError, reference_problem

    if sf.outside_error or sf.manifest_error:
        return
    for p in (sf.ms, sf.pan):
        if p is None or not p.is_file():
            continue
        try:
            problem = reference_problem(p, root)
        except (SceneError, OSError):
            continue  # unreadable: the scene layer refuses it as corrupt when it is opened
        if problem:
            sf.outside_error = problem
            return


def read_inputs_marker(product_dir: Path) -> dict[str, Any] | None:
    """The inputs identity recorded beside a product (None when absent or unreadable)."""
    try:
        data = json.loads((Path(product_dir) / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
