"""Structured logs: one JSON object per line and per event, so an operator (or ``jq``) can follow
the service. Every line has ``ts`` (UTC, ISO 8601), ``level`` and ``event``; the rest are the
event's fields (scene, tiles, seconds, reason, ...)."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import threading
from typing import Any, Literal, TextIO


class EventLog:
    """Write events as JSON lines to ``stream`` (stderr by default) and/or append them to ``path``."""

    def __init__(self, stream: TextIO | Literal["stderr"] | None = "stderr", path: str | None = None):
        if isinstance(stream, str) and stream != "stderr":
            raise ValueError(f"stream: expected a text stream, None or 'stderr', got {stream!r}")
        self.stream = stream  # "stderr": whatever sys.stderr is when an event is written
        self.path = path
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []  # kept in memory too (tests, --once summaries)

    def emit(self, event: str, level: str = "info", **fields: Any) -> dict[str, Any]:
        record = {
            "ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
            **fields,
        }
        line = json.dumps(record, default=str, sort_keys=False)
        with self._lock:
            self.events.append(record)
            stream = sys.stderr if isinstance(self.stream, str) else self.stream
            if stream is not None:
                stream.write(line + "\n")
                stream.flush()
            if self.path:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
        return record

    def info(self, event: str, **fields: Any) -> dict[str, Any]:
        return self.emit(event, "info", **fields)

    def warning(self, event: str, **fields: Any) -> dict[str, Any]:
        return self.emit(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> dict[str, Any]:
        return self.emit(event, "error", **fields)


class NullLog(EventLog):
    """Discard events (library use without a log)."""

    def __init__(self):
        super().__init__(stream=None)

    def emit(self, event: str, level: str = "info", **fields: Any) -> dict[str, Any]:
        return {"event": event, "level": level, **fields}
