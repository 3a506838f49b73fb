"""The service's failure policy: what happens to a scene after an error.

Disk-full / quota / file-size / permission errors (:func:`ddif.station.errors.environment_error_kind`),
wherever they happen, are not the scene's fault: the scene stays in the inbox with its journal and
is retried after ``retry_backoff_s``. Other errors are retried up to ``max_attempts`` times, then the
scene is quarantined. With ``--once`` a failed scene is not retried in the same run. A quarantine
move that failed is retried after the backoff.
"""

from __future__ import annotations

import time
import traceback

from ddif.station.config import WatchConfig
from ddif.station.errors import environment_error_kind
from ddif.station.events import EventLog


class FailurePolicy:
    """Retry times, attempts and the failure count of one service."""

    def __init__(self, watch: WatchConfig, log: EventLog):
        self.watch = watch
        self.log = log
        self.failures = 0  # every failure: scenes, moves, inbox errors (the service's exit status)
        self.once = False
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._failed_this_run: set[str] = set()  # --once: a failed scene is not retried
        self._quarantine_retry_at: dict[str, float] = {}  # scene -> when a failed quarantine move is retried

    def count(self) -> None:
        self.failures += 1

    def waiting(self, name: str, now: float) -> bool:
        """Whether a ready scene is to be left alone this poll (backing off, or failed under --once)."""
        return self._retry_at.get(name, 0) > now or (self.once and name in self._failed_this_run)

    def attempt(self, name: str) -> int:
        """The number of the attempt about to start."""
        return self._attempts.get(name, 0) + 1

    def succeeded(self, name: str) -> None:
        self._attempts.pop(name, None)

    def failed(self, name: str, exc: BaseException, stage: str) -> str | None:
        """Log a failure of scene ``name``; returns the quarantine message when the scene is to be
        quarantined now (its attempts are used up), else None (retried after the backoff)."""
        self.failures += 1
        self._failed_this_run.add(name)
        kind = environment_error_kind(exc)
        if kind is not None:
            self._retry_at[name] = time.time() + self.watch.retry_backoff_s
            self.log.error(
                "scene_failed",
                scene=name,
                stage=stage,
                error_kind=kind,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=self.watch.retry_backoff_s,
                note="not the scene's fault: it stays in the inbox with its journal",
            )
            return None
        attempts = self._attempts.get(name, 0) + 1
        self._attempts[name] = attempts
        self.log.error(
            "scene_failed",
            scene=name,
            stage=stage,
            error_kind="processing",
            error=f"{type(exc).__name__}: {exc}",
            attempt=attempts,
            max_attempts=self.watch.max_attempts,
            traceback=traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:],
        )
        if attempts >= self.watch.max_attempts:
            return f"failed {attempts} times, last: {type(exc).__name__}: {exc}"
        self._retry_at[name] = time.time() + self.watch.retry_backoff_s
        return None

    def quarantine_waiting(self, name: str) -> bool:
        """Whether a failed quarantine move of ``name`` is still backing off (or under --once)."""
        if name not in self._quarantine_retry_at:
            return False
        return self.once or self._quarantine_retry_at[name] > time.time()

    def quarantine_failed(self, name: str) -> None:
        self.failures += 1
        self._quarantine_retry_at[name] = time.time() + self.watch.retry_backoff_s
        self._retry_at[name] = time.time() + self.watch.retry_backoff_s

    def quarantined(self, name: str) -> None:
        self._quarantine_retry_at.pop(name, None)
