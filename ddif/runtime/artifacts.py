"""The one cache for compiled artifacts: ONNX graphs of a checkpoint's sampler and the TensorRT
engines built from them.

Layout: ``ROOT/<kind>/<stem>-<digest><suffix>`` with the artifact's :class:`ExportSpec` beside it
(``*.json``), where ROOT is ``$DDIF_CACHE_DIR`` or ``~/.cache/ddif``, ``kind`` is ``onnx`` or
``tensorrt`` and ``digest`` hashes the artifact's key: a JSON-able mapping of everything the
artifact depends on (for an ONNX graph the checkpoint's SHA-256 and header facts, timesteps, tile
size, exporter, opset, torch; for an engine the ONNX graph's SHA-256, the GPU, TensorRT, precision
and profile). The key is recorded in the spec (``cache_key``) and compared on a hit, so a file
whose name matches but whose spec was written for another key, or whose bytes no longer match
the spec's hash, is rebuilt rather than trusted. Lookups read the spec only, never the model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddif.runtime.spec import ExportSpec, spec_path_for

log = logging.getLogger(__name__)

__all__ = ["ArtifactCache", "default_cache_dir", "key_digest"]


def default_cache_dir() -> Path:
    """``$DDIF_CACHE_DIR``, else ``~/.cache/ddif``."""
    return Path(os.environ.get("DDIF_CACHE_DIR") or Path.home() / ".cache" / "ddif")


def key_digest(key: Mapping[str, Any]) -> str:
    """A short stable hash of a cache key (sorted JSON)."""
    return hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:20]


class ArtifactCache:
    """Artifacts under ``root`` (default :func:`default_cache_dir`), one file per key and kind."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path_for(self, kind: str, stem: str, key: Mapping[str, Any], suffix: str) -> Path:
        return self.root / kind / f"{stem}-{key_digest(key)}{suffix}"

    def lookup(self, path: Path, key: Mapping[str, Any]) -> Path | None:
        """``path`` when it and its spec exist, the bytes match the spec and the spec records
        ``key``; else None (with the reason logged)."""
        if not path.is_file() or not spec_path_for(path).is_file():
            return None
        try:
            spec = ExportSpec.for_model(path, verify=True)
        except (ValueError, FileNotFoundError) as exc:
            log.info("ignoring cached %s: %s", path, exc)
            return None
        if spec.cache_key != json.loads(json.dumps(dict(key))):
            log.info("ignoring cached %s: its spec was written for another key", path)
            return None
        return path

    @staticmethod
    def record(path: Path, key: Mapping[str, Any]) -> None:
        """Write ``key`` into the spec of a freshly built artifact."""
        spec_path = spec_path_for(path)
        spec = ExportSpec.load(spec_path)
        spec.cache_key = json.loads(json.dumps(dict(key)))
        spec.save(spec_path)
