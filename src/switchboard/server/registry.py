"""Who is connected, under which nickname, and who is in which room.

The directory of the server: it knows a client as a ``Peer`` (what every module but the
connection itself may use of one), never as the connection class, so that it sits below
both the connection and the handlers (server/connection -> server/handlers -> here).
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any, Protocol, cast

from sortedcontainers import SortedList

from switchboard import defaults, names
from switchboard.protocol import ErrorCode, Frame, LeftReason, Message

from .errors import RequestFailed
from .history import room_key
from .logs import RepeatedEvents
from .states import ConnectionState
from .transport import Transport

#: The rooms of a connection that is in none (``Peer.rooms`` until its first JOIN).
NO_ROOMS: frozenset[str] = frozenset()
#: The acknowledgement ledger of a connection that awaits none (``Peer.awaiting_ack`` until
#: the first MESSAGE is forwarded to it, and again once it has been idle): shared by every
#: such connection, so it is only ever read; whoever adds an entry first gives the
#: connection a dict of its own (``awaiting_of``).
NO_ACKS: dict[int, Any] = {}
#: The write queue of a connection with nothing queued, between its batches (``Peer.out``):
#: an empty tuple, shared, so that an idle connection keeps no list; whoever queues the first
#: frame gives the connection a list of its own (typed as a list: every append site checks
#: for it, and an append to it would fail loudly rather than reach another connection).
NO_OUT = cast("list[bytes]", ())


def awaiting_of(peer: Peer) -> dict[int, Peer]:
    """``peer``'s acknowledgement ledger, to add a message to (its own dict, never NO_ACKS)."""
    awaiting = peer.awaiting_ack
    if awaiting is NO_ACKS:
        awaiting = peer.awaiting_ack = {}
    return awaiting


class ReservedSlot(Protocol):
    """The place of an answer a connection will give later (connection.ReservedAnswer)."""

    data: bytes | None


class Peer(Protocol):
    """One client as the directory, the handlers and the server's lifecycle see it (the
    connection class implements it; a client of another server process could too)."""

    client_id: int
    ip: str
    port: int
    nick: str
    #: The names of the rooms it is in: NO_ROOMS (shared, immutable) until it joins one, so
    #: that an idle connection carries no empty set (216 bytes).
    rooms: set[str] | frozenset[str]
    #: Its MESSAGE sender fields, pre-encoded (None: to be rebuilt after a rename).
    sender: bytes | None

    @property
    def connected_ms(self) -> int:
        """When it connected, in milliseconds since the epoch."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes received and not processed yet."""
        ...

    #: Where it is in its life (server/states.py); MESSAGEs reach it only when READY.
    state: ConnectionState
    #: Whether HELLO presented a valid token (always, on servers without tokens).
    authenticated: bool
    write_paused: bool
    in_batch: bool
    #: Frames queued and not written yet: NO_OUT (shared, empty) between batches; a real
    #: list while its batch runs (handlers append to it).
    out: list[bytes]
    #: MESSAGEs forwarded to it and not acknowledged yet: id -> sender.  NO_ACKS (shared,
    #: read-only) while there are none: entries are added through ``awaiting_of``.
    awaiting_ack: dict[int, Peer]
    #: Whether its HELLO negotiated protocol version 2: its receipts come in RECEIPTS frames.
    receipts_batched: bool
    log_runs: RepeatedEvents | None
    auth_hold: float
    pinged: bool
    #: Its request token bucket (handlers._rate_limited), as one number: when the bucket
    #: is full again (the generic cell rate algorithm's theoretical arrival time).
    bucket_full_at: float
    opened_at: float
    last_seen: float
    partial_since: float
    close_reason: str
    left_reason: LeftReason
    transport: Transport | None

    def send(self, msg: Frame) -> None: ...
    def send_raw(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def sender_fields(self) -> bytes: ...
    def direct_fields(self) -> bytes: ...
    def data_received(self, data: bytes) -> None: ...
    def authenticate(self) -> None: ...
    def take_table(self) -> None: ...
    def hold(self) -> None: ...
    def end_hold(self) -> bool: ...
    def go_on_reading(self) -> None: ...
    def shed(self) -> None: ...

    #: A request of it is being answered later: nothing more is read until then.
    answering_later: bool

    def reserve_answer(self) -> ReservedSlot: ...
    def fill_answer(self, slot: Any, data: bytes) -> None: ...
    def fail(self, code: ErrorCode, message: str, *, request_id: int = 0) -> None: ...
    def close(self, reason: str, left_reason: LeftReason = LeftReason.DISCONNECTED) -> None: ...
    def abort(self, reason: str, left_reason: LeftReason = LeftReason.DISCONNECTED) -> None: ...


def check_name(name: str, *, what: str, limit: int, code: ErrorCode) -> str:
    """``name`` in the form it is kept in (NFC); RequestFailed(code) if the rules of
    ``switchboard.names`` refuse it."""
    name = names.normalise(name)
    problem = names.name_problem(name, what=what, limit=limit)
    if problem is not None:
        raise RequestFailed(code, problem)
    return name


class ClientRegistry:
    """Connected clients by id (insertion order is id order) and by nickname (look-alike
    nicknames are one: ``switchboard.names``)."""

    __slots__ = ("_by_nick", "_next_id", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[int, Peer] = {}
        self._by_nick: names.NameIndex[Peer] = names.NameIndex(defaults.MAX_NICK_CHARS)
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Peer]:
        return iter(self.by_id.values())

    def add(self, conn: Peer) -> int:
        """Register ``conn`` under a fresh id (never reused while the server runs)."""
        client_id = self._next_id
        self._next_id += 1
        self.by_id[client_id] = conn
        return client_id

    def remove(self, conn: Peer) -> None:
        if self.by_id.get(conn.client_id) is conn:
            del self.by_id[conn.client_id]
        if conn.nick:
            self._by_nick.remove(conn.nick, conn)

    def drop_nick(self, conn: Peer) -> None:
        """``conn`` holds no nickname any more (a cluster node's client whose nickname
        another node's client took while this node was cut off: server/cluster.py)."""
        if conn.nick:
            self._by_nick.remove(conn.nick, conn)
            conn.nick = ""
            conn.sender = None

    def by_nick(self, nick: str) -> Peer | None:
        """The client holding ``nick`` now, compared as ``set_nick`` compares nicknames."""
        return self._by_nick.find(nick)

    def set_nick(self, conn: Peer, nick: str) -> None:
        nick = check_name(
            nick, what="nickname", limit=defaults.MAX_NICK_CHARS, code=ErrorCode.INVALID_NICK
        )
        holder = self._by_nick.find(nick)
        if holder is not None and holder is not conn:
            held = holder.nick
            what = repr(nick) if held.casefold() == nick.casefold() else f"{held!r} (looks alike)"
            raise RequestFailed(
                ErrorCode.NICK_IN_USE, f"nickname {what} is taken by #{holder.client_id}"
            )
        if conn.nick:
            self._by_nick.remove(conn.nick, conn)
        self._by_nick.add(nick, conn)
        conn.nick = nick
        conn.sender = None  # MESSAGEs from now on carry the new nickname


#: What one history entry costs besides its text: the Message object, its other fields'
#: strings and the deque slot (tracemalloc: about 190 bytes on CPython 3.11 when the nickname
#: and address strings are shared; 400 covers them unshared).
HISTORY_ENTRY_OVERHEAD = 400


def history_cost(message: Message) -> int:
    """The bytes ``message`` is counted for in the server's history budget."""
    return sys.getsizeof(message.text) + HISTORY_ENTRY_OVERHEAD


class Room:
    """A chat room: its members by id and the last messages for replay."""

    __slots__ = (
        "history",
        "history_bytes",
        "key",
        "members",
        "name",
        "name_utf8",
        "waiting",
        "warm",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        #: The key its lines are stored under (look-alike names share it: server/history.py).
        self.key = room_key(name)
        #: Whether ``history`` holds the store's newest lines (loaded on the first JOIN).
        self.warm = False
        #: While they are being read: the JOINs waiting for them (connection, its answer's
        #: place, request id, members then, the last line delivered then).
        self.waiting: list[tuple[Peer, ReservedSlot, int, int, int]] | None = None
        self.name_utf8 = name.encode("utf-8")  # for MESSAGEs encoded on the fast path
        self.members: dict[int, Peer] = {}
        self.history: deque[Message] = deque()
        self.history_bytes = 0


class RoomRegistry:
    """Rooms by name; a room exists while it has members (its history goes with it).

    Look-alike room names are one room (``switchboard.names``): JOIN "Lobby" joins "lobby".
    Bounded three ways: rooms per connection, rooms on the server, and the bytes of history
    all rooms keep together; past that budget the least recently active rooms lose their
    oldest messages first."""

    __slots__ = (
        "_activity",
        "_history",
        "_index",
        "_names",
        "by_name",
        "history_bytes",
        "max_history_bytes",
        "max_rooms",
        "max_rooms_per_client",
    )

    def __init__(
        self,
        history: int,
        *,
        max_rooms: int = defaults.MAX_ROOMS,
        max_rooms_per_client: int = defaults.MAX_ROOMS_PER_CLIENT,
        history_bytes: int = defaults.HISTORY_BYTES,
    ) -> None:
        #: Rooms by their name as first joined (the name every answer and MESSAGE carries).
        self.by_name: dict[str, Room] = {}
        self._index: names.NameIndex[Room] = names.NameIndex(defaults.MAX_ROOM_CHARS)
        # The names in code-point order, for ROOMS pages: O(log rooms) to find where a page
        # starts, however many rooms exist (a sort per request would let one client's ROOMS
        # flood cost O(rooms) each).
        self._names: SortedList[str] = SortedList()
        self._history = history
        self.max_rooms = max_rooms
        self.max_rooms_per_client = max_rooms_per_client
        self.max_history_bytes = history_bytes
        #: Bytes of history kept by all rooms (``history_cost`` of each message).
        self.history_bytes = 0
        #: Rooms that keep history, least recently broadcast to first.
        self._activity: OrderedDict[Room, None] = OrderedDict()

    def find(self, room_name: str) -> Room | None:
        """The room called ``room_name`` or a name that looks like it."""
        return self._index.find(room_name)

    def join(self, room_name: str, conn: Peer) -> tuple[Room, bool]:
        """Add ``conn`` to the room (created if needed); True when it was not a member yet."""
        room_name = check_name(
            room_name, what="room name", limit=defaults.MAX_ROOM_CHARS, code=ErrorCode.INVALID_ROOM
        )
        room = self._index.find(room_name)
        if room is not None and conn.client_id in room.members:
            return room, False
        if len(conn.rooms) >= self.max_rooms_per_client:
            raise RequestFailed(
                ErrorCode.INVALID_ROOM,
                f"you are in {len(conn.rooms)} rooms, the most one connection may be in; "
                "leave one first",
            )
        if room is None:
            if len(self.by_name) >= self.max_rooms:
                raise RequestFailed(
                    ErrorCode.INVALID_ROOM,
                    f"the server has {len(self.by_name)} rooms, the most it keeps; "
                    "join an existing room",
                )
            room = self.by_name[room_name] = Room(room_name)
            self._index.add(room_name, room)
            self._names.add(room_name)
        room.members[conn.client_id] = conn
        rooms = conn.rooms
        if not isinstance(rooms, set):  # NO_ROOMS: its first room makes it a set of its own
            rooms = conn.rooms = set()
        rooms.add(room.name)
        return room, True

    def page(self, after: str, limit: int) -> tuple[list[Room], bool]:
        """Up to ``limit`` rooms whose names sort after ``after``, in name order, and whether
        more follow.  O(log rooms + limit)."""
        start = self._names.bisect_right(after)
        found = list(self._names.islice(start, start + limit + 1))
        return [self.by_name[n] for n in found[:limit]], len(found) > limit

    def member_room(self, room_name: str, conn: Peer) -> Room:
        """The room, if ``conn`` is in it; NOT_IN_ROOM otherwise."""
        room = self._index.find(room_name)
        if room is None or conn.client_id not in room.members:
            raise RequestFailed(ErrorCode.NOT_IN_ROOM, f"you are not in room {room_name!r}")
        return room

    def leave(self, room: Room, conn: Peer) -> None:
        room.members.pop(conn.client_id, None)
        if isinstance(conn.rooms, set):
            conn.rooms.discard(room.name)
        if not room.members:
            del self.by_name[room.name]
            self._index.remove(room.name, room)
            self._names.remove(room.name)
            self.history_bytes -= room.history_bytes
            self._activity.pop(room, None)

    # --- delivery: every frame a room's members get goes out through these ------------------

    @staticmethod
    def deliver_room(
        room: Room, frame: bytes, *, skip: Peer | None = None, skip_paused: bool = False
    ) -> int:
        """Queue ``frame`` (encoded once) for every member of ``room`` but ``skip``; with
        ``skip_paused``, not for members that are not reading either (over their high-water
        mark: one slow member neither blocks the room nor grows the server's memory).  The
        number of members it was queued for."""
        reached = 0
        for member in room.members.values():
            if member is not skip and not (skip_paused and member.write_paused):
                member.send_raw(frame)
                reached += 1
        return reached

    def deliver_to_rooms_of(self, conn: Peer, frame: bytes) -> None:
        """Queue ``frame`` once for everyone who shares a room with ``conn`` (however many
        rooms they share), not for ``conn`` itself."""
        told = {conn.client_id}
        for room_name in conn.rooms:
            room = self.by_name.get(room_name)
            if room is None:
                continue
            for member_id, member in room.members.items():
                if member_id not in told:
                    told.add(member_id)
                    member.send_raw(frame)

    def record(self, room: Room, message: Message) -> None:
        """Keep ``message`` in ``room``'s history, within both bounds."""
        if self._history == 0:
            return
        history = room.history
        history.append(message)
        cost = history_cost(message)
        room.history_bytes += cost
        self.history_bytes += cost
        if len(history) > self._history:
            self._drop_oldest(room)
        self._activity[room] = None
        self._activity.move_to_end(room)
        while self.history_bytes > self.max_history_bytes:
            quiet = next(iter(self._activity))
            self._drop_oldest(quiet)
            if not quiet.history:
                del self._activity[quiet]

    def record_older(self, room: Room, lines: list[Message]) -> None:
        """Put ``lines`` (oldest first, all older than what ``room`` keeps) before its
        history, within both bounds: past them, the oldest go first."""
        if self._history == 0 or not lines:
            return
        history = room.history
        for message in reversed(lines):
            if len(history) >= self._history:
                break
            history.appendleft(message)
            cost = history_cost(message)
            room.history_bytes += cost
            self.history_bytes += cost
        if room not in self._activity:
            self._activity[room] = None  # not broadcast to since it came to life: quietest
            self._activity.move_to_end(room, last=False)
        while self.history_bytes > self.max_history_bytes:
            quiet = next(iter(self._activity))
            self._drop_oldest(quiet)
            if not quiet.history:
                del self._activity[quiet]

    def _drop_oldest(self, room: Room) -> None:
        cost = history_cost(room.history.popleft())
        room.history_bytes -= cost
        self.history_bytes -= cost
