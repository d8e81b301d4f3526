"""The directory: who is connected, under which nickname, in which rooms, and how a frame
reaches a client id or a room.  One small interface (``Directory``) that the handlers and the
server's lifecycle use for all of it, and its first implementation, ``LocalDirectory``: this
process's dicts (server/registry.py).  A directory shared by several server processes (the
cluster) is a second implementation of the same interface; the handlers do not change.

Nothing here awaits: a directory answers at once from what it holds, and delivering a frame
queues it (a remote implementation batches its work per read and answers when it returns).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from switchboard import defaults
from switchboard.protocol import ErrorCode, Message

from .errors import RequestFailed
from .registry import ClientRegistry, Peer, Room, RoomRegistry

#: A SEND's text as the split loop has it.
Buffer = bytes | bytearray


class Listed(Protocol):
    """A client as LIST shows it: a connection of this process (``Peer``) or, on a cluster
    node, a client of another node (server/cluster.py's ``RemoteClient``)."""

    @property
    def client_id(self) -> int: ...
    @property
    def authenticated(self) -> bool: ...
    @property
    def connected_ms(self) -> int: ...
    def sender_fields(self) -> bytes: ...


class Directory(Protocol):
    """Where clients and rooms are remembered and how frames reach them."""

    #: Connected clients by id.  The local implementation's fast path: ``handlers.send``
    #: reads it once per run of SENDs and looks each target up in it (one dict lookup, no
    #: call).  A shared directory keeps here the clients of this process.
    client_by_id: dict[int, Peer]

    # --- clients ---------------------------------------------------------------------------
    def register(self, conn: Peer) -> int:
        """Admit ``conn`` under a fresh id (never reused while the server runs)."""
        ...

    def release(self, conn: Peer) -> bool:
        """Forget ``conn`` (its id and nickname; not its rooms: see ``leave``); whether it was
        registered."""
        ...

    def rename(self, conn: Peer, nick: str) -> None:
        """Give ``conn`` the nickname (RequestFailed INVALID_NICK or NICK_IN_USE)."""
        ...

    def client(self, client_id: int) -> Peer | None: ...
    def by_nick(self, nick: str) -> Peer | None: ...
    def clients(self) -> Iterator[Peer]:
        """The connected clients in id order."""
        ...

    def client_count(self) -> int: ...
    def listed(self) -> list[Listed]:
        """Every client LIST shows, in id order: this process's and, on a cluster node, the
        other nodes' (``clients`` and ``client_count`` are this process's alone)."""
        ...

    def update(self, conn: Peer) -> None:
        """``conn`` authenticated: a shared directory tells the other nodes."""
        ...

    # --- rooms -----------------------------------------------------------------------------
    def room(self, room_name: str) -> Room | None:
        """The room called ``room_name`` or a name that looks like it."""
        ...

    def members(self, room: Room) -> list[Listed]:
        """The members of ``room`` in id order (LIST of a room), on every node."""
        ...

    def member_count(self, room: Room) -> int:
        """How many members ``room`` has, on every node (JOIN's and ROOMS' counts)."""
        ...

    def list_elsewhere(self, conn: Peer, request_id: int, room: bytes) -> bool:
        """LIST of a room this process has no member in: a cluster node answers it later,
        from the cluster (True); False: answer it here (empty)."""
        ...

    def join(self, room_name: str, conn: Peer) -> tuple[Room, bool]:
        """Add ``conn`` (created if needed); True when it was not a member yet."""
        ...

    def member_room(self, room_name: str, conn: Peer) -> Room:
        """The room, if ``conn`` is in it; RequestFailed NOT_IN_ROOM otherwise."""
        ...

    def leave(self, room: Room, conn: Peer) -> None: ...
    def rooms_page(self, after: str, limit: int) -> tuple[list[Room], bool]:
        """Up to ``limit`` rooms whose names sort after ``after``, and whether more follow."""
        ...

    def room_count(self) -> int: ...
    def record(self, room: Room, message: Message) -> None:
        """Keep ``message`` in ``room``'s history."""
        ...

    def record_older(self, room: Room, lines: list[Message]) -> None:
        """Put ``lines`` (read from the store, older than what ``room`` keeps) before them."""
        ...

    # --- delivery ----------------------------------------------------------------------------
    def deliver(self, client_id: int, frame: bytes) -> bool:
        """Queue ``frame`` for the client; False when no such client is connected."""
        ...

    def reaches(self, client_id: int) -> bool:
        """Whether ``client_id`` is a client of another cluster node (``send_elsewhere``)."""
        ...

    def nick_elsewhere(self, nick: str) -> int:
        """The id of another cluster node's client holding ``nick`` (or a look-alike), or 0."""
        ...

    def send_elsewhere(
        self,
        conn: Peer,
        request_id: int,
        target_id: int,
        message_id: int,
        text: Buffer,
        *,
        nick: str = "",
    ) -> None:
        """Forward a direct MESSAGE to another node's client; its answer (OK, or the ERROR
        that node gives) comes later, in its place among ``conn``'s answers.  With ``nick``
        (SEND_NICK), only if the client still holds it there, and answered as SEND_NICK."""
        ...

    def deliver_room(
        self, room: Room, frame: bytes, *, skip: Peer | None = None, skip_paused: bool = False
    ) -> int:
        """Queue ``frame`` for the members of ``room`` but ``skip`` (with ``skip_paused``, not
        for those over their high-water mark); how many it was queued for."""
        ...

    def deliver_to_rooms_of(self, conn: Peer, frame: bytes) -> None:
        """Queue ``frame`` once for everyone who shares a room with ``conn``, not ``conn``."""
        ...


class LocalDirectory:
    """The directory of one server process: ``ClientRegistry`` and ``RoomRegistry``'s dicts."""

    __slots__ = ("client_by_id", "client_registry", "room_registry")

    def __init__(
        self,
        history: int,
        *,
        max_rooms: int = defaults.MAX_ROOMS,
        max_rooms_per_client: int = defaults.MAX_ROOMS_PER_CLIENT,
        history_bytes: int = defaults.HISTORY_BYTES,
    ) -> None:
        #: The local tables themselves (tests and introspection read them; nothing else may).
        self.client_registry = ClientRegistry()
        self.room_registry = RoomRegistry(
            history,
            max_rooms=max_rooms,
            max_rooms_per_client=max_rooms_per_client,
            history_bytes=history_bytes,
        )
        self.client_by_id: dict[int, Peer] = self.client_registry.by_id

    def register(self, conn: Peer) -> int:
        return self.client_registry.add(conn)

    def release(self, conn: Peer) -> bool:
        if not conn.client_id or self.client_by_id.get(conn.client_id) is not conn:
            return False
        self.client_registry.remove(conn)
        return True

    def rename(self, conn: Peer, nick: str) -> None:
        self.client_registry.set_nick(conn, nick)

    def client(self, client_id: int) -> Peer | None:
        return self.client_by_id.get(client_id)

    def by_nick(self, nick: str) -> Peer | None:
        return self.client_registry.by_nick(nick)

    def clients(self) -> Iterator[Peer]:
        return iter(self.client_by_id.values())  # insertion order is id order

    def client_count(self) -> int:
        return len(self.client_by_id)

    def listed(self) -> list[Listed]:
        return list(self.client_by_id.values())

    def update(self, conn: Peer) -> None:
        pass  # the connection itself is what this process lists

    def members(self, room: Room) -> list[Listed]:
        return sorted(room.members.values(), key=_client_id)

    def member_count(self, room: Room) -> int:
        return len(room.members)

    def list_elsewhere(self, conn: Peer, request_id: int, room: bytes) -> bool:
        return False  # one process: a room nobody here is in has no members

    def room(self, room_name: str) -> Room | None:
        return self.room_registry.find(room_name)

    def join(self, room_name: str, conn: Peer) -> tuple[Room, bool]:
        return self.room_registry.join(room_name, conn)

    def member_room(self, room_name: str, conn: Peer) -> Room:
        return self.room_registry.member_room(room_name, conn)

    def leave(self, room: Room, conn: Peer) -> None:
        self.room_registry.leave(room, conn)

    def rooms_page(self, after: str, limit: int) -> tuple[list[Room], bool]:
        return self.room_registry.page(after, limit)

    def room_count(self) -> int:
        return len(self.room_registry.by_name)

    def record(self, room: Room, message: Message) -> None:
        self.room_registry.record(room, message)

    def record_older(self, room: Room, lines: list[Message]) -> None:
        self.room_registry.record_older(room, lines)

    def deliver(self, client_id: int, frame: bytes) -> bool:
        target = self.client_by_id.get(client_id)
        if target is None:
            return False
        target.send_raw(frame)
        return True

    def reaches(self, client_id: int) -> bool:
        return False  # one process: no other node

    def nick_elsewhere(self, nick: str) -> int:
        return 0

    def send_elsewhere(
        self,
        conn: Peer,
        request_id: int,
        target_id: int,
        message_id: int,
        text: Buffer,
        *,
        nick: str = "",
    ) -> None:
        raise RequestFailed(ErrorCode.NO_SUCH_CLIENT, f"no client #{target_id} is connected")

    def deliver_room(
        self, room: Room, frame: bytes, *, skip: Peer | None = None, skip_paused: bool = False
    ) -> int:
        return RoomRegistry.deliver_room(room, frame, skip=skip, skip_paused=skip_paused)

    def deliver_to_rooms_of(self, conn: Peer, frame: bytes) -> None:
        self.room_registry.deliver_to_rooms_of(conn, frame)


def _client_id(conn: Listed) -> int:
    return conn.client_id
