"""Who works on what: the service's lock on its outbox, and per-scene claims on the inbox.

One outbox, one service: ``outbox/.station.lock`` is held with an exclusive ``flock`` for the
service's life. One scene, one service: a service claims a scene with an exclusive ``flock`` on
``<inbox>/.<scene>.claim`` for the whole of its processing and archiving (or quarantining); the
kernel drops a claim when its holder dies, and the holder unlinks the file before letting go, so a
lock on an unlinked (or since re-created) file claims nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ddif.station.errors import Refused
from ddif.station.events import EventLog
from ddif.station.inbox import CLAIM_SUFFIX, safe_scene_name


@contextlib.contextmanager
def outbox_lock(outbox: Path) -> Iterator[None]:
    """Hold ``outbox``'s service lock for the block; :class:`Refused` when another service has it."""
    import fcntl

    outbox.mkdir(parents=True, exist_ok=True)
    fd = os.open(outbox / ".station.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused(
                f"another 'ddif station watch' is already serving {outbox} (lock {outbox / '.station.lock'} is held)"
            ) from None
        yield
    finally:
        os.close(fd)


class SceneClaims:
    """The claims this service holds on scenes of ``inbox`` (scene -> fd of its flock'ed file)."""

    def __init__(self, inbox: Path, log: EventLog):
        self.inbox = inbox
        self.log = log
        self._held: dict[str, int] = {}
        self._busy_logged: set[str] = set()

    def __contains__(self, scene: str) -> bool:
        return scene in self._held

    def _path(self, scene: str) -> Path:
        return self.inbox / f".{safe_scene_name(scene)}{CLAIM_SUFFIX}"

    def try_claim(self, scene: str) -> bool:
        import fcntl

        if scene in self._held:
            return True
        path = self._path(scene)
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
        self._held[scene] = fd
        return True

    def release(self, scene: str) -> None:
        fd = self._held.pop(scene, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path(scene))  # while still holding the lock
        os.close(fd)

    def release_all(self) -> None:
        for scene in list(self._held):
            self.release(scene)

    @contextlib.contextmanager
    def claim(self, scene: str) -> Iterator[bool]:
        """Hold ``scene``'s claim (re-entrant) for the block; yields False when another service has it."""
        if scene in self._held:
            yield True
            return
        if not self.try_claim(scene):
            if scene not in self._busy_logged:
                self._busy_logged.add(scene)
                self.log.info("scene_claimed_elsewhere", scene=scene, note="another service is working on it; skipped")
            yield False
            return
        self._busy_logged.discard(scene)
        try:
            yield True
        finally:
            self.release(scene)
