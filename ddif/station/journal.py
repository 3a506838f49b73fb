"""Per-scene journal of finished tiles: what makes ``kill -9`` then restart cheap and exact.

A journal is a folder holding ``plan.json`` (the fingerprint of everything that determines the
product: input files, model, backend, settings) and one ``tile_<index>.npy`` per fused tile (the
backend's float32 output, written atomically: temp file, fsync, rename). A tile file either exists
whole or not at all, so after a crash the journal says exactly which tiles are done. The product
is always assembled from the journaled tiles, never from values held in memory, so an
interrupted-and-resumed run writes the same bytes as an uninterrupted one.

A journal whose fingerprint differs from the current run's (new input files, another model or
backend, other settings) is discarded, never mixed in.

Disk: one float32 tile of C bands is 4 * C * tile_size^2 bytes (8 bands, 256 px: 2 MiB); the
journal of a scene holds one per non-empty tile until the product is written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddif.station.errors import environment_error_kind
from ddif.utils.io import atomic_path, atomic_write_text

JOURNAL_VERSION = 2  # 2: one file per batch of tiles
OPEN_BATCHES = 16  # batch files kept memory-mapped while the product is assembled


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and modification time of an input (changing the file changes these). For a GDAL
    VRT also those of every file it reads (``sources``): a VRT's own bytes do not change when a
    band file it points to is replaced."""
    from ddif.data.raster import is_vrt, raster_files

    st = os.stat(path)
    identity: dict[str, Any] = {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if is_vrt(path):
        sources = [f for f in raster_files(path) if f.resolve() != Path(path).resolve()]
        identity["sources"] = [
            {"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in sources
        ]
    return identity


def model_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Name, size and SHA-256 of a model file (checkpoint or ONNX): what the product's STAC item
    records as provenance and what the tile journal's fingerprint compares."""
    record = content_identity({"model": path})["model"]
    return {"name": record["name"], "size": record["size"], "sha256": record["sha256"]}


def content_identity(paths: dict[str, str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """``{key: {"name", "size", "sha256"}}`` of input files, from their bytes (read in 1 MiB
    chunks). What a product was made from: a re-delivered scene whose files have the same content
    (whatever their mtime) needs no new product, one with other content does."""
    out = {}
    for key, path in paths.items():
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        out[key] = {"name": Path(path).name, "size": size, "sha256": digest.hexdigest()}
    return out


def same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`content_identity` records describe the same MS and PAN bytes."""
    try:
        return all(a[k]["size"] == b[k]["size"] and a[k]["sha256"] == b[k]["sha256"] for k in ("ms", "pan"))
    except (KeyError, TypeError):
        return False


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


class Journal:
    """The tiles of one scene's fusion, one file per batch of tiles (``batch_NNNNNN.npy``: the
    batch's tiles stacked, (n, bands, h, w) float32, in the plan's order), under a ``plan.json``
    holding the fingerprint (inputs, model, backend, settings: a resume never mixes tiles made
    otherwise). ``batches`` are the plan's batches of tile indices (fixed by the settings in the
    fingerprint). A batch file is written whole (temporary name, then renamed), so after a kill
    every batch file present is complete; one torn by a power loss fails to load and is fused
    again."""

    def __init__(
        self, directory: str | os.PathLike, fingerprint: dict[str, Any], batches: Sequence[Sequence[int]] = ()
    ):
        self.directory = Path(directory)
        self.fingerprint = {"journal_version": JOURNAL_VERSION, **fingerprint}
        self.digest = fingerprint_digest(self.fingerprint)
        self.batches = [list(b) for b in batches]
        self._where = {int(t): (k, i) for k, b in enumerate(self.batches) for i, t in enumerate(b)}
        self._open: dict[int, np.ndarray | None] = {}  # memory-mapped batches, least recently used first

    @property
    def plan_path(self) -> Path:
        return self.directory / "plan.json"

    def open(self) -> dict[str, Any]:
        """Create the journal or resume it. Returns {"resumed": bool, "tiles_done": n, "discarded": why|None}."""
        discarded = None
        if self.directory.exists():
            try:
                stored = json.loads(self.plan_path.read_text())
                same = stored.get("digest") == self.digest
            except (OSError, ValueError):
                same = False
            if not same:
                discarded = (
                    "fingerprint changed (inputs, model, backend or settings differ)"
                    if self.plan_path.exists()
                    else "no plan.json"
                )
                shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.partial"):  # temp files of a killed writer
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        if not self.plan_path.exists():
            atomic_write_text(
                self.plan_path,
                json.dumps(
                    {"digest": self.digest, "fingerprint": self.fingerprint}, indent=2, sort_keys=True, default=str
                )
                + "\n",
            )
        done = len(self.done_indices())
        return {"resumed": done > 0, "tiles_done": done, "discarded": discarded}

    def batch_path(self, k: int) -> Path:
        return self.directory / f"batch_{k:06d}.npy"

    def _batch(self, k: int) -> np.ndarray | None:
        """Batch ``k`` memory-mapped (a few are kept open: a product block reads the tiles of the
        batches around it), None when absent, unreadable or not the batch's shape."""
        if k in self._open:
            arr = self._open.pop(k)
            self._open[k] = arr
            return arr
        arr = None
        path = self.batch_path(k)
        if path.is_file():
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                arr = None
            if arr is not None and (arr.ndim != 4 or arr.shape[0] != len(self.batches[k])):
                arr = None
        if len(self._open) >= OPEN_BATCHES:
            self._open.pop(next(iter(self._open)))
        self._open[k] = arr
        return arr

    def batch_done(self, k: int, shape: tuple[int, ...] | None = None) -> bool:
        arr = self._batch(k)
        return arr is not None and (shape is None or tuple(arr.shape[1:]) == tuple(shape))

    def done_indices(self) -> set[int]:
        out: set[int] = set()
        for k, batch in enumerate(self.batches):
            if self.batch_path(k).is_file() and self._batch(k) is not None:
                out.update(batch)
        self._open.clear()
        return out

    def save_batch(self, k: int, values: np.ndarray) -> None:
        """Write batch ``k`` (its tiles' values, in the batch's order) as one file, atomically. A
        failed write raises an OSError that keeps its errno (ENOSPC, EDQUOT, EFBIG, ...): numpy's
        own writer loses it ("N requested and M written"), so the array is written through
        Python's file object, and an errno-less short write is re-raised as ENOSPC. The service
        classes these as environment errors."""
        from numpy.lib import format as npy

        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape[0] != len(self.batches[k]):
            raise ValueError(f"batch {k}: {values.shape[0]} tiles given, the plan has {len(self.batches[k])}")
        path = self.batch_path(k)
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    npy.write_array_header_1_0(f, npy.header_data_from_array_1_0(values))
                    f.write(values.data.cast("B"))  # the array's buffer (C-contiguous), as bytes
        except OSError as exc:
            if exc.errno is None and environment_error_kind(exc) == "disk_full":
                raise OSError(errno.ENOSPC, f"No space left on device writing tile journal {path} ({exc})") from exc
            raise
        self._open.pop(k, None)

    def load(self, index: int) -> np.ndarray | None:
        """Tile ``index``'s values (memory-mapped: only the slices used are read), None if its
        batch is not journaled (or unreadable)."""
        where = self._where.get(int(index))
        if where is None:
            return None
        arr = self._batch(where[0])
        return None if arr is None else arr[where[1]]

    def close(self) -> None:
        self._open.clear()

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("batch_*.npy")) if self.directory.exists() else 0

    def remove(self) -> None:
        self._open.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
