"""What rooms can cost, through real sockets: rooms per connection, rooms on the server, the
server-wide history budget, and a disconnect from many rooms."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
import pytest

from support.peers import RawPeer
from support.servers import ServerProcess, ServerThread
from switchboard import defaults
from switchboard.client import Client, RoomError
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    JoinOk,
    JoinRequest,
    Left,
    LeftReason,
    Message,
)
from switchboard.server.registry import HISTORY_ENTRY_OVERHEAD

HOST = "127.0.0.1"
Factory = Callable[..., ServerThread]


def test_rooms_per_connection_are_limited_by_default(server: ServerThread) -> None:
    limit = defaults.MAX_ROOMS_PER_CLIENT
    with Client(HOST, server.port) as hog, Client(HOST, server.port) as other:
        for i in range(limit):
            hog.join(f"r{i}")
        with pytest.raises(RoomError) as info:
            hog.join("one-more")
        assert info.value.code == ErrorCode.INVALID_ROOM
        assert f"you are in {limit} rooms" in info.value.message
        assert hog.join("r0").room == "r0"  # a room it is in: answered as before
        hog.leave("r1")
        assert hog.join("one-more").room == "one-more"  # a freed place is usable
        assert other.join("r2").members == 2  # the limit is per connection
        assert server.call(lambda: "one-more" in server.server.directory.room_registry.by_name)


def test_rooms_on_the_server_are_limited(server_factory: Factory) -> None:
    server = server_factory(max_rooms=8)
    with Client(HOST, server.port) as a, Client(HOST, server.port) as b:
        for i in range(5):
            a.join(f"a{i}")
        for i in range(3):
            b.join(f"b{i}")
        with pytest.raises(RoomError) as info:
            b.join("b3")
        assert info.value.code == ErrorCode.INVALID_ROOM
        assert "the server has 8 rooms" in info.value.message
        assert b.join("a0").members == 2  # existing rooms can still be joined
        a.leave("a1")  # its last member: the room is deleted
        assert b.join("b3").room == "b3"


def test_history_is_bounded_server_wide_and_given_back(server_factory: Factory) -> None:
    """Ten rooms of ten 1,000-byte messages (about 145 KB counted) under a 40 KB budget:
    the budget holds, the rooms broadcast to longest ago lost their history first, and
    when everyone has left nothing is counted any more."""
    budget = 40_000
    server = server_factory(history_bytes=budget)
    rooms = [f"room{i}" for i in range(10)]
    with Client(HOST, server.port) as talker:
        for room in rooms:
            talker.join(room)
        for room in rooms:  # room0 first: by the end it is the least recently active
            for n in range(10):
                talker.broadcast(room, f"{room} {n} " + "x" * 1000)
                kept = server.call(lambda: server.server.directory.room_registry.history_bytes)
                assert kept <= budget
        assert kept > budget - 2 * (1100 + HISTORY_ENTRY_OVERHEAD)  # used, not emptied
        with Client(HOST, server.port) as reader:
            replayed = {room: reader.join(room).history for room in rooms}
        assert replayed["room9"] == 10  # the most recent room kept everything
        assert replayed["room0"] == 0  # the quietest lost its history first
        counts = [replayed[room] for room in rooms]
        assert counts == sorted(counts), counts  # evicted in order of last activity
    server.wait_for(
        lambda s: (
            not s.directory.room_registry.by_name and s.directory.room_registry.history_bytes == 0
        )
    )


def test_history_replayed_is_the_newest(server_factory: Factory) -> None:
    """Eviction takes a room's oldest messages: what is replayed is still its latest."""
    server = server_factory(history_bytes=6 * (1100 + HISTORY_ENTRY_OVERHEAD))
    with Client(HOST, server.port) as talker, Client(HOST, server.port) as reader:
        talker.join("lobby")
        for n in range(10):
            talker.broadcast("lobby", f"{n} " + "y" * 1000)
        ok = reader.join("lobby")
        texts = []
        for _ in range(ok.history):
            frame = reader.next_indication(timeout=5.0)
            assert isinstance(frame, Message)
            texts.append(frame.text.split()[0])
        assert 0 < ok.history < 10
        assert texts == [str(n) for n in range(10 - ok.history, 10)]


def test_disconnect_from_the_most_rooms_settles_them_all(server: ServerThread) -> None:
    """A connection in as many rooms as it may be, half of them shared with a bystander,
    disconnects: the bystander gets one LEFT per shared room and keeps being answered, the
    rooms it was alone in are deleted."""
    limit = defaults.MAX_ROOMS_PER_CLIENT
    hog = RawPeer(server.port)
    hog.send(*(JoinRequest(f"r{i}", request_id=i + 1) for i in range(limit)))
    for i in range(limit):
        assert hog.expect(JoinOk).request_id == i + 1
    shared = [f"r{i}" for i in range(0, limit, 2)]
    with Client(HOST, server.port) as bystander:
        for room in shared:
            bystander.join(room)
        hog.sock.close()
        left = set()
        deadline = time.monotonic() + 10.0
        while len(left) < len(shared):
            frame = bystander.next_indication(timeout=max(0.0, deadline - time.monotonic()))
            assert frame is not None, f"{len(left)} LEFT of {len(shared)}"
            if isinstance(frame, Left):
                assert frame.reason == LeftReason.DISCONNECTED
                left.add(frame.room)
        assert left == set(shared)
        assert bystander.ping() < 5.0
        server.wait_for(lambda s: sorted(s.directory.room_registry.by_name) == sorted(shared))


def test_a_refused_join_is_answered_in_a_pipeline(server_factory: Factory) -> None:
    """Pipelined JOINs past the limit: each gets its own answer, in order."""
    server = server_factory(max_rooms_per_client=3)
    peer = RawPeer(server.port)
    try:
        peer.send(*(JoinRequest(f"p{i}", request_id=i + 1) for i in range(5)))
        for request_id in (1, 2, 3):
            assert peer.expect(JoinOk).request_id == request_id
        for request_id in (4, 5):
            peer.expect_error(ErrorCode.INVALID_ROOM, request_id)
    finally:
        peer.sock.close()


def _fill_history(
    port: int, text: str, *, peers: int = 4, rooms: int = 100, per_room: int = 50
) -> None:
    """``peers`` connections, each alone in ``rooms`` rooms, broadcast ``per_room`` messages
    to each (in rounds of one per room, every answer read before the next round)."""
    conns = [RawPeer(port) for _ in range(peers)]
    try:
        for k, peer in enumerate(conns):
            names = [f"c{k}r{i}" for i in range(rooms)]
            peer.send(*(JoinRequest(name, request_id=i + 1) for i, name in enumerate(names)))
            for _ in names:
                # A room joined again replays what the history store kept of it.
                for _ in range(peer.expect(JoinOk).history):
                    peer.expect(Message)
            for _ in range(per_room):
                peer.send(*(BroadcastRequest(name, text, request_id=1) for name in names))
                for _ in names:
                    peer.expect(BroadcastOk)
    finally:
        for peer in conns:
            peer.sock.close()


def test_history_memory_stays_within_the_budget(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    """The issue's case: four connections filling 500 rooms' history pinned 419 MiB.  Here
    four fill 400 rooms with 50 messages of 4,000 bytes (80 MB of text) against a server with
    a 4 MiB budget: its RSS grows by far less than the text sent, and a second round after
    they left reuses the memory instead of adding to it."""
    budget = 4 * 1024 * 1024
    sp = server_process_factory("--history-bytes", str(budget), "--rate", "0")
    server = psutil.Process(sp.proc.pid)
    _fill_history(sp.port, "warm-up", rooms=10, per_room=5)
    baseline = server.memory_info().rss
    _fill_history(sp.port, "h" * 4000)
    first = server.memory_info().rss
    assert first - baseline < 40 * 1024 * 1024, f"grew {(first - baseline) / 2**20:.1f} MiB"
    _fill_history(sp.port, "h" * 4000)
    second = server.memory_info().rss
    grew = (second - first) / 2**20
    assert grew < 8, f"the second round grew {grew:.1f} MiB"
