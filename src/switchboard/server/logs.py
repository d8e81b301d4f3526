"""Structured server logs: one line per connect, disconnect, forward, room message and error.

Repeated lines of one kind from one client (or one source address) are summarised by
``RepeatedEvents``: a few in full, then a count per interval, so a flood costs a bounded
number of log lines per connection.

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


class _Run:
    """One kind of event from one source within the current interval."""

    __slots__ = ("event", "kind", "level", "logged", "source", "started", "suppressed")

    def __init__(self, started: float, level: int, event: str, kind: str, source: str) -> None:
        self.started = started
        self.level = level
        self.event = event
        self.kind = kind
        self.source = source
        self.logged = 0
        self.suppressed = 0


class RepeatedEvents:
    """Bounds what a run of one kind of event from one source writes to the log.

    The first ``burst`` events of a kind in an interval are logged in full; the rest are
    only counted, and the count is logged as one line (event ``suppressed``) when the next
    event of that kind comes after the interval, when ``flush`` is called (the server does
    so once per heartbeat tick for every source with a count waiting, and at disconnect),
    or when the run is evicted to make room (``max_runs``).  So a client flooding 60,000
    RATE_LIMITED errors a second writes ``burst`` lines and one count per interval instead.
    A run is one ``kind`` ("error RATE_LIMITED") from one source: ``who`` for a table kept
    per connection ("#3 127.0.0.1:5123"), or the ``source`` given with each event for one
    kept per server ("10.0.0.0/24").
    """

    __slots__ = ("_events", "_runs", "burst", "interval", "max_runs", "who")

    def __init__(
        self, events: EventLog, who: str, *, interval: float, burst: int, max_runs: int
    ) -> None:
        self._events = events
        self._runs: dict[object, _Run] = {}
        self.who = who
        self.interval = interval
        self.burst = burst
        self.max_runs = max_runs

    def event(
        self,
        kind: str,
        level: int,
        event: str,
        msg: str,
        *args: Any,
        source: str = "",
        **fields: Any,
    ) -> None:
        """Log ``msg`` (as EventLog.event does) unless ``kind`` from ``source`` has had its
        burst this interval; then count it instead."""
        if not log.isEnabledFor(level):
            return  # nothing to log, nor to count
        now = time.monotonic()
        key = (kind, source) if source else kind
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= self.max_runs:
                oldest = next(iter(self._runs))
                self._report(self._runs.pop(oldest), now)
            run = self._runs[key] = _Run(now, level, event, kind, source or self.who)
        elif now - run.started >= self.interval:
            self._report(run, now)
            run.started = now
            run.logged = 0
        if run.logged < self.burst:
            run.logged += 1
            self._events.event(level, event, msg, *args, **fields)
        else:
            run.suppressed += 1

    @property
    def pending(self) -> bool:
        """Whether any run is still remembered (a count may be waiting to be logged)."""
        return bool(self._runs)

    def flush(self, *, expired_only: bool = False) -> None:
        """Log every waiting count and forget the runs (only those whose interval has
        passed, with ``expired_only``)."""
        now = time.monotonic()
        for kind, run in list(self._runs.items()):
            if expired_only and now - run.started < self.interval:
                continue
            self._report(run, now)
            del self._runs[kind]

    def _report(self, run: _Run, now: float) -> None:
        if run.suppressed:
            self._events.event(
                run.level,
                "suppressed",
                "%s: %d more '%s' line(s) not shown (%.1fs)",
                run.source,
                run.suppressed,
                run.kind,
                now - run.started,
                source=run.source,
                of=run.event,
                kind=run.kind,
                count=run.suppressed,
            )
            run.suppressed = 0
