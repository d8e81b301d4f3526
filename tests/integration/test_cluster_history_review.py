"""Review of issue 17's cluster history: what a node keeps of a room once it has no member
there any more (in-process node on a Redis of the test's own)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import redis

from support.history_lines import join, page
from support.peers import RawPeer
from support.redis_servers import RedisServer, start_inproc_node
from support.servers import shrink_send_buffer
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    HistoryMode,
    Joined,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    Left,
    Message,
    Ping,
    SendOk,
    SendRequest,
    encode,
)
from switchboard.protocol.fastpath import encode_message, sender_block
from switchboard.server.cluster_history import LINE_SCRIPT, line_id, lines_key

ROOMS = 20


def test_a_room_said_in_then_left_at_once_leaves_nothing_on_the_node(
    redis_server: RedisServer,
) -> None:
    """A BROADCAST pipelined with the LEAVE after it: the LEAVE is taken while the line is on
    its way to Redis, and the node forgets the room then; the line's id, coming back after,
    must not be kept for a room nobody here is in (one entry per room name, for ever: a
    client cycling through names grows the node without bound)."""
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as peer:
            for i in range(ROOMS):
                room = f"passing{i}"
                join(peer, room)
                peer.send(
                    BroadcastRequest(room, "hello and goodbye", request_id=2),
                    LeaveRequest(room, request_id=3),
                )
                assert peer.expect(BroadcastOk).request_id == 2
                assert peer.expect(LeaveOk).request_id == 3

            def kept() -> list[str]:
                here = set(directory.room_registry.by_name)
                return [name for name in directory._stored_top if name not in here]

            assert st.call(kept) == []
    finally:
        st.stop()


def test_entries_kept_for_a_join_go_when_the_node_stops_following_the_room(
    redis_server: RedisServer,
) -> None:
    """While a JOIN waits for Redis the node keeps the room's entries it reads (up to
    CLUSTER_JOIN_RECENT, for the joiner's catch-up).  If the room's last member here leaves
    meanwhile and the JOIN comes to nothing (its client went), the node no longer reads the
    room, so no later entry clears them: they must go when the node stops following it,
    not stay for ever (up to 1,024 frames per room, and a room_key() per entry read of every
    other room while any are kept)."""
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as ann, RawPeer(st.port) as bob:
            join(ann, "quiet")  # the node reads the room's stream from now on
            bob_id = bob.client_id
            claim = directory._claim_room
            line = Message(5, 99, "127.0.0.1", 1, "far", "quiet", 0, 0, "said elsewhere")

            async def a_line_is_read_then_everyone_goes(conn: Any, name: str) -> None:
                entry = await directory.node.redis.xadd(
                    "switchboard:room:quiet", {"f": encode(line), "s": 0}
                )
                deadline = time.monotonic() + 10
                while directory._room_cursor.get("quiet") != entry:
                    assert time.monotonic() < deadline, "the node never read the line"
                    await asyncio.sleep(0.005)
                # Ann leaves the room, then bob is dropped while his JOIN waits (as the
                # heartbeat drops a silent client: his reading is paused meanwhile, so his
                # own close would not be seen).
                while "quiet" in directory._room_cursor:
                    assert time.monotonic() < deadline, "ann never left"
                    await asyncio.sleep(0.005)
                conn.abort("heartbeat timeout (test)")
                while bob_id in directory.client_by_id:
                    assert time.monotonic() < deadline, "bob never went"
                    await asyncio.sleep(0.005)
                await claim(conn, name)

            directory._claim_room = a_line_is_read_then_everyone_goes  # type: ignore[method-assign]
            bob.send(JoinRequest("quiet", request_id=1))
            st.wait_for(lambda s: bool(directory._recent), timeout=10)
            assert ann.expect(Message).text == "said elsewhere"
            ann.send(LeaveRequest("quiet", request_id=2))
            assert ann.expect(LeaveOk).request_id == 2
            st.wait_for(
                lambda s: bob_id not in s.directory.client_by_id and not directory._joining,
                timeout=10,
            )
            assert st.call(lambda: {k: len(v) for k, v in directory._recent.items()}) == {}
    finally:
        st.stop()


def test_a_client_gone_while_its_join_waited_leaves_and_the_pass_s_lines_are_answered(
    redis_server: RedisServer,
) -> None:
    """Bob's connection is dropped while his JOIN waits for Redis: the node sees him gone
    when the JOIN script returns and leaves the room again for him.  That leave went into
    the node's next pipeline as a command one field short, which raised IndexError while
    the pipeline was being built: the pass's other commands died with it (a BROADCAST in
    the same pass was never answered, and everything its sender was sent after it waited
    behind that answer for good), bob stayed a member in Redis for good, and ann, who had
    his JOINED, never had a LEFT."""
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as ann, RawPeer(st.port) as bob:
            join(ann, "gone")
            bob_id = bob.client_id
            ann_conn = st.call(lambda: st.server.directory.client_by_id[ann.client_id])
            claim = directory._claim_room

            async def claim_for_a_client_gone(conn: Any, name: str) -> None:
                # Bob is dropped while his JOIN waits (as the heartbeat drops a silent
                # client: his reading is paused meanwhile, so his own close is not seen).
                conn.abort("heartbeat timeout (test)")
                deadline = time.monotonic() + 10
                while bob_id in directory.client_by_id:
                    assert time.monotonic() < deadline, "bob never went"
                    await asyncio.sleep(0.005)
                await claim(conn, name)  # finds bob gone: queues his leave
                # Ann's BROADCAST, read now, goes out in the same pass as that leave.
                said = BroadcastRequest("gone", "still here?", request_id=5)
                ann_conn.data_received(encode(said))

            directory._claim_room = claim_for_a_client_gone  # type: ignore[method-assign]
            bob.send(JoinRequest("gone", request_id=1))
            # Ann's answer, bob's JOINED and then his LEFT, all of them (the JOINED may come
            # before or after the answer: the node may read it before ann's BROADCAST).
            events: list[Any] = []
            while not any(isinstance(e, Left) for e in events):
                event = ann.next(10)
                assert event is not None, f"ann's connection ended after {events}"
                events.append(event)
            kinds = [type(e).__name__ for e in events if not isinstance(e, Ping)]
            assert sorted(kinds) == ["BroadcastOk", "Joined", "Left"], events
            assert kinds.index("Joined") < kinds.index("Left"), events
            ok = next(e for e in events if isinstance(e, BroadcastOk))
            joined = next(e for e in events if isinstance(e, Joined))
            left = next(e for e in events if isinstance(e, Left))
            assert ok.request_id == 5 and joined.client_id == bob_id
            assert left.client_id == bob_id and left.room == "gone"
            members = redis.Redis.from_url(redis_server.url).hkeys("switchboard:room-members:gone")
            assert str(bob_id).encode() not in members
    finally:
        st.stop()


def test_a_client_closing_while_its_join_waited_is_no_member_left_behind(
    redis_server: RedisServer,
) -> None:
    """Bob's connection is closing (closed by the server, what it owes him still unwritten:
    he is not reading) when his JOIN's script returns.  He is not gone from the node's
    clients until his transport is, so the JOIN was granted; its answer then found him
    closing and gave none, and nothing made the node a member here: in Redis he stayed a
    member of the room for good (LIST showed him, the members had his JOINED and never his
    LEFT)."""
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as ann, RawPeer(st.port, rcvbuf=4096) as bob:
            join(ann, "closing")
            bob_id = bob.client_id
            shrink_send_buffer(st, bob_id)
            # Bob reads nothing: what the server owes him stays in its transport's buffer.
            ann.send(*(SendRequest(bob_id, "x" * 4000, request_id=i) for i in range(1, 41)))
            for _ in range(40):
                ann.expect(SendOk)

            def owed() -> int:
                conn = st.server.directory.client_by_id[bob_id]
                assert conn.transport is not None
                return int(conn.transport.get_write_buffer_size())

            assert st.call(owed) > 0
            claim = directory._claim_room

            async def claim_while_closing(conn: Any, name: str) -> None:
                conn.close("closed by the test")  # its transport waits to write what is owed
                await claim(conn, name)

            directory._claim_room = claim_while_closing  # type: ignore[method-assign]
            bob.send(JoinRequest("closing", request_id=1))
            assert ann.expect(Joined, 10).client_id == bob_id
            left = ann.expect(Left, 10)
            assert left.client_id == bob_id and left.room == "closing"
            members = redis.Redis.from_url(redis_server.url).hkeys(
                "switchboard:room-members:closing"
            )
            assert str(bob_id).encode() not in members
            assert st.call(lambda: dict(directory._room_grants)) == {}
    finally:
        st.stop()


def _say_elsewhere(db: redis.Redis, room: str, text: str) -> int:
    """A line stored as another node stores one (LINE_SCRIPT, sender #7 there); its id."""
    data = text.encode()
    frame = encode_message(0, sender_block(7, "127.0.0.1", 1, "far"), room.encode(), 1, 0, data)
    at = len(frame) - len(data) - 5
    args = (room, frame, 7, 100, 0, 10_000, lines_key(room), at, len(data))
    return line_id(db.eval(LINE_SCRIPT, 0, *args))


def test_a_history_page_and_the_live_lines_after_it_do_not_overlap(
    redis_server: RedisServer,
) -> None:
    """The node's reading of the room is behind (held here) when another node stores M and
    then x's own BROADCAST L is stored through this node: x's HISTORY page goes up to L
    (so that x finds its own line), which takes in M; once the reading goes on, M must not
    reach x live again (its page floor).  Each line reaches a member once, in the page or
    live after it."""
    st = start_inproc_node(redis_server)
    db = redis.Redis.from_url(redis_server.url)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as x:
            join(x, "overlap")
            reader = directory.node.redis
            original = reader.xread
            waiting = threading.Event()
            release = asyncio.Event()

            async def held_xread(*args: Any, **kwargs: Any) -> Any:
                waiting.set()
                await release.wait()
                return await original(*args, **kwargs)

            st.call(lambda: setattr(reader, "xread", held_xread))
            db.xadd("switchboard:room:overlap", {"x": "1"})  # ends the read under way
            assert waiting.wait(10), "the node never read again"
            far = _say_elsewhere(db, "overlap", "from elsewhere")
            x.send(BroadcastRequest("overlap", "mine", request_id=2))
            mine = x.expect(BroadcastOk, 10).message_id
            _, lines = page(x, "overlap", HistoryMode.LATEST)
            in_page = [m.message_id for m in lines]
            assert mine in in_page
            st.call(release.set)
            last = _say_elsewhere(db, "overlap", "after the page")
            live: list[int] = []
            while not live or live[-1] != last:
                live.append(x.expect(Message, 10).message_id)
            assert far in in_page + live
            assert not set(in_page) & set(live), (in_page, live)
    finally:
        db.close()
        st.stop()
