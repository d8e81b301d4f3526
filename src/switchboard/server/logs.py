"""Structured server logs: one line per connect, disconnect, forward, room message and error.

Each record carries an ``event`` name and its fields; the text formatter prints them like a
lab server's console, the JSON formatter as one object per line.  Callers check
``EventLog.info_on`` first so that nothing is formatted when the level is off.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

LOGGER_NAME: Final = "switchboard.server"
log = logging.getLogger(LOGGER_NAME)

_RESERVED = frozenset(vars(logging.makeLogRecord({})))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and k != "message"}


def _timestamp(record: logging.LogRecord) -> str:
    return local_timestamp(record.created, int(record.msecs))


def local_timestamp(seconds: float | None = None, millis: int | None = None) -> str:
    """``2026-11-23T12:01:33.120+0000``: local time with milliseconds and the UTC offset, as
    every log line and ``--trace`` line (server's and clients') starts."""
    if seconds is None:
        seconds = time.time()
    if millis is None:
        millis = int(seconds * 1000) % 1000
    local = time.localtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{millis:03d}" + time.strftime("%z", local)


class TextFormatter(logging.Formatter):
    """``2026-11-23T12:01:33.120+0000 INFO  connect #3 127.0.0.1:51234``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<5} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, msg and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        obj.update(_fields(record))
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """Send the server's logs to stderr in ``fmt`` ("text" or "json") at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("switchboard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class EventLog:
    """The server's log lines, each with its structured fields."""

    __slots__ = ("debug_on", "info_on")

    def __init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.info_on = log.isEnabledFor(logging.INFO)
        self.debug_on = log.isEnabledFor(logging.DEBUG)

    def event(self, level: int, event: str, msg: str, *args: Any, **fields: Any) -> None:
        fields["event"] = event
        log.log(level, msg, *args, extra=fields)
