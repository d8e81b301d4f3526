"""Who is connected, under which nickname, and who is in which room."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import regex
from sortedcontainers import SortedList

from switchboard import defaults
from switchboard.protocol import ErrorCode, Message

from .errors import RequestFailed

if TYPE_CHECKING:
    from .connection import ClientConnection

# Letters, marks, numbers, punctuation and symbols: no whitespace, no control or format
# characters, no unassigned or private-use code points.  Matched with fullmatch: "$" would
# let a trailing newline through.
_NAME_OK = regex.compile(r"[\p{L}\p{M}\p{N}\p{P}\p{S}]+")


def check_name(name: str, *, what: str, limit: int, code: ErrorCode) -> None:
    """Raise RequestFailed(code) unless ``name`` is 1..limit printable, non-blank characters."""
    if not name:
        raise RequestFailed(code, f"{what} must not be empty")
    if len(name) > limit:
        raise RequestFailed(code, f"{what} is {len(name)} characters long (max {limit})")
    if not _NAME_OK.fullmatch(name):
        raise RequestFailed(code, f"{what} must not contain whitespace or control characters")


class ClientRegistry:
    """Connected clients by id (insertion order is id order) and by nickname."""

    __slots__ = ("_by_nick", "_next_id", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[int, ClientConnection] = {}
        self._by_nick: dict[str, ClientConnection] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[ClientConnection]:
        return iter(self.by_id.values())

    def add(self, conn: ClientConnection) -> int:
        """Register ``conn`` under a fresh id (never reused while the server runs)."""
        client_id = self._next_id
        self._next_id += 1
        self.by_id[client_id] = conn
        return client_id

    def remove(self, conn: ClientConnection) -> None:
        if self.by_id.get(conn.client_id) is conn:
            del self.by_id[conn.client_id]
        if conn.nick and self._by_nick.get(conn.nick.casefold()) is conn:
            del self._by_nick[conn.nick.casefold()]

    def by_nick(self, nick: str) -> ClientConnection | None:
        """The client holding ``nick`` now, compared as ``set_nick`` compares nicknames."""
        return self._by_nick.get(nick.casefold())

    def set_nick(self, conn: ClientConnection, nick: str) -> None:
        check_name(
            nick, what="nickname", limit=defaults.MAX_NICK_CHARS, code=ErrorCode.INVALID_NICK
        )
        key = nick.casefold()
        holder = self._by_nick.get(key)
        if holder is not None and holder is not conn:
            raise RequestFailed(
                ErrorCode.NICK_IN_USE, f"nickname {nick!r} is taken by #{holder.client_id}"
            )
        if conn.nick:
            self._by_nick.pop(conn.nick.casefold(), None)
        self._by_nick[key] = conn
        conn.nick = nick
        conn.sender = None  # MESSAGEs from now on carry the new nickname


class Room:
    """A chat room: its members by id and the last messages for replay."""

    __slots__ = ("history", "members", "name", "name_utf8")

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.name_utf8 = name.encode("utf-8")  # for MESSAGEs encoded on the fast path
        self.members: dict[int, ClientConnection] = {}
        self.history: deque[Message] = deque(maxlen=history)


class RoomRegistry:
    """Rooms by name; a room exists while it has members (its history goes with it)."""

    __slots__ = ("_history", "_names", "by_name")

    def __init__(self, history: int) -> None:
        self.by_name: dict[str, Room] = {}
        # The names in code-point order, for ROOMS pages: O(log rooms) to find where a page
        # starts, however many rooms exist (a sort per request would let one client's ROOMS
        # flood cost O(rooms) each).
        self._names: SortedList[str] = SortedList()
        self._history = history

    def join(self, room_name: str, conn: ClientConnection) -> tuple[Room, bool]:
        """Add ``conn`` to the room (created if needed); True when it was not a member yet."""
        check_name(
            room_name, what="room name", limit=defaults.MAX_ROOM_CHARS, code=ErrorCode.INVALID_ROOM
        )
        room = self.by_name.get(room_name)
        if room is None:
            room = self.by_name[room_name] = Room(room_name, self._history)
            self._names.add(room_name)
        added = conn.client_id not in room.members
        room.members[conn.client_id] = conn
        conn.rooms.add(room_name)
        return room, added

    def page(self, after: str, limit: int) -> tuple[list[Room], bool]:
        """Up to ``limit`` rooms whose names sort after ``after``, in name order, and whether
        more follow.  O(log rooms + limit)."""
        start = self._names.bisect_right(after)
        names = list(self._names.islice(start, start + limit + 1))
        return [self.by_name[n] for n in names[:limit]], len(names) > limit

    def member_room(self, room_name: str, conn: ClientConnection) -> Room:
        """The room, if ``conn`` is in it; NOT_IN_ROOM otherwise."""
        room = self.by_name.get(room_name)
        if room is None or conn.client_id not in room.members:
            raise RequestFailed(ErrorCode.NOT_IN_ROOM, f"you are not in room {room_name!r}")
        return room

    def leave(self, room: Room, conn: ClientConnection) -> None:
        room.members.pop(conn.client_id, None)
        conn.rooms.discard(room.name)
        if not room.members:
            del self.by_name[room.name]
            self._names.remove(room.name)
