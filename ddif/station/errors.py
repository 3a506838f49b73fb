"""What can go wrong with a scene, sorted by what the service does about it.

- :class:`SceneError` (a ``ValueError``): the scene itself is bad (corrupt file, missing
  partner, wrong ratio, no overlap, all nodata, ...). Retrying cannot help: quarantine it.
- An environment error (:func:`environment_error_kind` is not None): disk full, quota, file too
  large, permission denied, read-only file system, a failed write of an output, no compute left
  (every Ray actor lost, :class:`ComputeUnavailable`). Not the scene's
  fault: report it, leave the scene and its journal where they are, retry later.
- Anything else is a processing error (a bug, a backend failure): retried a few times, then
  quarantined so that one scene cannot block the inbox forever.
"""

from __future__ import annotations

import errno
import re

# quarantine categories: the scene problems found while reading a scene live with the one
# ingestion layer (ddif.data.scene); the service adds its own
from ddif.data.scene import (  # noqa: F401 (re-exported)
    ALL_NODATA,
    BAD_GRID,
    BAD_SCALE,
    BAD_VALUES,
    CORRUPT,
    MISSING_PARTNER,
    NO_OVERLAP,
    WRONG_BANDS,
    WRONG_RATIO,
    SceneError,
)

BAD_MANIFEST = "bad_manifest"  # unreadable manifest, or one naming a path outside the inbox
OUTSIDE_INBOX = "outside_inbox"  # a pair file (or what a VRT reads) leading out of the inbox
BAD_NAME = "bad_name"  # a scene name that cannot name the service's files (control characters, too long, reserved)
PROCESSING_ERROR = "processing_error"

_ENV_ERRNOS = {
    errno.ENOSPC: "disk_full",
    errno.EDQUOT: "disk_full",
    errno.EFBIG: "disk_full",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EROFS: "permission",
}
# GDAL reports failed writes as text (no errno): the phrases its VSI / GTiff layers use.
_ENV_PHRASES = {
    "no space left": "disk_full",
    "disk full": "disk_full",
    "file too large": "disk_full",
    "free disk space": "disk_full",
    "quota": "disk_full",
    "permission denied": "permission",
    "read-only file system": "permission",
    # libtiff's "Write error" / rasterio's "Write failed": a failed write of our own output (the
    # errno, e.g. EFBIG or ENOSPC, only reaches GDAL's stderr)
    "write failed": "write_error",
    "write error": "write_error",
}
# numpy's writers (ndarray.tofile, hence np.save to a file) report a short write without an errno:
# "524288 requested and 24968 written". A short write to a file means no space (disk full, quota,
# file-size limit).
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class OutputWriteError(OSError):
    """An output could not be written completely (GDAL may only notice when reading it back)."""


class ComputeUnavailable(RuntimeError):
    """The workers a scene was being fused on are gone (e.g. every Ray actor lost and none could be
    started again): not the scene's fault, so it is retried later and never quarantined."""


class Refused(RuntimeError):
    """An expected refusal (another service holds the lock, a folder is missing, ...): the command
    line prints it as one line, without a traceback."""


class StopRequested(Exception):
    """The service was asked to stop (SIGTERM / SIGINT) between two batches; the journal is kept."""


def environment_error_kind(exc: BaseException) -> str | None:
    """'disk_full' / 'permission' / 'write_error' when ``exc`` (or any exception in its chain of
    causes / contexts) is an environment failure, else None. Recognises the errno (ENOSPC,
    EDQUOT, EFBIG, EACCES, EPERM, EROFS) and, for errors that lost it (GDAL's messages, numpy's
    short-write "N requested and M written", wrapped errors), the text."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OutputWriteError):
            return "write_error"
        if isinstance(current, ComputeUnavailable):
            return "compute_unavailable"
        if isinstance(current, OSError) and current.errno in _ENV_ERRNOS:
            return _ENV_ERRNOS[current.errno]
        text = str(current).lower()
        for phrase, kind in _ENV_PHRASES.items():
            if phrase in text:
                return kind
        if isinstance(current, OSError) and _SHORT_WRITE.search(text):
            return "disk_full"
        current = current.__cause__ or current.__context__
    return None
