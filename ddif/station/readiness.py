"""When a scene in the inbox is ready: the service's decision for one scene at one poll.

A pair is ready once a ``<scene>.ready`` marker exists or once both files kept their size and
mtime over ``stable_polls`` polls; a manifest's scene as soon as its files exist. A scene that
cannot become fusable (a bad name, a bad manifest, a missing partner, files referencing data outside
the inbox, an orphan past ``orphan_timeout_s``) is to be quarantined once it is stable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddif.station.config import WatchConfig
from ddif.station.errors import BAD_MANIFEST, BAD_NAME, MISSING_PARTNER, OUTSIDE_INBOX
from ddif.station.inbox import SceneFiles


@dataclass(frozen=True)
class QuarantineNow:
    """The scene is bad: quarantine it with this category and message."""

    category: str
    message: str


def scene_readiness(sf: SceneFiles, polls: int, now: float, watch: WatchConfig) -> str | QuarantineNow:
    """'ready', 'wait' (may become ready), 'idle' (an orphan waiting for its timeout) or
    :class:`QuarantineNow`; ``polls``: how many polls the scene's files have been unchanged."""
    stable = polls >= watch.stable_polls
    if sf.name_error:
        return QuarantineNow(BAD_NAME, sf.name_error) if stable else "wait"
    if sf.manifest is not None:
        if sf.manifest_error:
            return QuarantineNow(BAD_MANIFEST, sf.manifest_error) if stable else "wait"
        assert sf.ms is not None and sf.pan is not None  # a manifest without error names both
        missing = [p.name for p in (sf.ms, sf.pan) if not p.exists()]
        if missing:
            message = f"manifest {sf.manifest.name} names missing file(s) {missing}"
            return QuarantineNow(MISSING_PARTNER, message) if stable else "wait"
        if sf.outside_error:  # a named file that references data outside the inbox
            return QuarantineNow(OUTSIDE_INBOX, sf.outside_error) if stable else "wait"
        return "ready"
    if sf.outside_error:
        return QuarantineNow(OUTSIDE_INBOX, sf.outside_error) if stable else "wait"
    both = sf.ms is not None and sf.pan is not None
    if sf.marker is not None:
        if both:
            return "ready"
        if stable:
            have = sf.ms or sf.pan
            return QuarantineNow(
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
    if stable and age >= watch.orphan_timeout_s:
        have = sf.ms or sf.pan
        assert have is not None  # without a manifest or a marker, a scene is one file of a pair
        return QuarantineNow(
            MISSING_PARTNER,
            f"{have.name} has had no partner for {age:.0f} s (orphan_timeout_s = {watch.orphan_timeout_s:g})",
        )
    return "wait" if not stable else "idle"
