"""What ``chat`` and ``listen --room`` last showed of each room, per server, so that they can
ask the server for what came after (HISTORY AFTER) when they come back: after a reconnection,
and on the next start.

One small JSON file in the state directory (``chat_seen.json`` under $XDG_STATE_HOME/
switchboard), created 0600 (room names and ids say where one talks), written whole through a
temporary file and a rename (a crash leaves the old file or the new one, never half of one).
A file that cannot be read or parsed is as no file: nothing is caught up, nothing breaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from switchboard import defaults
from switchboard.statedir import state_dir

FILE: Final = "chat_seen.json"
#: Servers remembered at most (the least recently used forgotten first), and rooms per server
#: (as many as one connection may be in): the file stays a few kilobytes.
MAX_SERVERS: Final = 100
MAX_ROOMS: Final = defaults.MAX_ROOMS_PER_CLIENT
#: Seconds between two writes of the file while lines keep arriving (and once more at exit).
SAVE_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Position:
    """The last line shown of a room: its id, in the server's history store of ``epoch``."""

    epoch: int
    message_id: int


def default_path() -> Path | None:
    """The file in the state directory; None when there is no home directory to be found."""
    try:
        return state_dir() / FILE
    except RuntimeError:
        return None


class SeenLines:
    """The positions of one server's rooms (``server``: "host:port"), read from and written
    to ``path`` (None: kept in memory only).  Not thread-safe: callers hold their lock."""

    def __init__(self, path: Path | None, server: str) -> None:
        self.path = path
        self.server = server
        self._rooms: dict[str, Position] = {}
        self._dirty = False
        self._saved_at = 0.0
        entry = self._read_all().get(server)
        if isinstance(entry, dict):
            for room, value in list(entry.get("rooms", {}).items())[:MAX_ROOMS]:
                position = _position(value)
                if position is not None:
                    self._rooms[str(room)] = position

    def position(self, room: str) -> Position | None:
        return self._rooms.get(room)

    def advance(self, room: str, epoch: int, message_id: int) -> None:
        """``message_id`` of store ``epoch`` was shown in ``room``: remember it if it is newer
        (another epoch replaces the old position: that store is gone)."""
        old = self._rooms.get(room)
        if old is not None and old.epoch == epoch and old.message_id >= message_id:
            return
        if old is None and len(self._rooms) >= MAX_ROOMS:
            self._rooms.pop(next(iter(self._rooms)))
        self._rooms[room] = Position(epoch, message_id)
        self._dirty = True

    def save(self, *, soon: bool = False) -> None:
        """Write the file if anything changed (``soon``: unless it was written less than
        SAVE_INTERVAL_S ago).  A failure to write is silent: catching up is a convenience."""
        if not self._dirty or self.path is None:
            return
        now = time.monotonic()
        if soon and now - self._saved_at < SAVE_INTERVAL_S:
            return
        self._saved_at = now
        self._dirty = False
        servers = self._read_all()
        servers.pop(self.server, None)
        servers[self.server] = {
            "rooms": {r: [p.epoch, p.message_id] for r, p in self._rooms.items()}
        }
        while len(servers) > MAX_SERVERS:
            servers.pop(next(iter(servers)))
        data = json.dumps({"version": 1, "servers": servers}, ensure_ascii=False)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, self.path)

    def _read_all(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        servers = data.get("servers") if isinstance(data, dict) else None
        return servers if isinstance(servers, dict) else {}


def _position(value: Any) -> Position | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return Position(value[0], value[1])
    return None
