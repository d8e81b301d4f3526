"""What a cluster node does with what it cannot handle: an entry in a stream it follows that
it cannot apply (written by something that is not a node of this version) is skipped and
logged, boundedly, and the node goes on following; a defect met in its background work (a
pass of lines to Redis, one of its tasks) is an INTERNAL_ERROR answer and one logged
traceback, and no request waits for ever behind it (in-process nodes on a Redis of the
test's own; the bad entries written to Redis, the defects injected)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from support.history_lines import join
from support.peers import RawPeer
from support.redis_servers import RedisServer, start_inproc_node
from support.waiting import wait_until
from switchboard import defaults
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    Joined,
    ListOk,
    ListRequest,
    Message,
    TimeOk,
    TimeRequest,
)
from switchboard.server.cluster import room_stream_key


def skipped(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "cluster_bad_entry"]


#: Entries a node of this version never writes: (stream, fields, whether applying it fails;
#: the others are nothing the node acts on, and pass quietly).
BAD_ENTRIES = {
    "a client record that is not one": ("events", ["node", "ghost", "up", "garbage"], True),
    "a reset with a bad record": ("events", ["node", "ghost", "reset", "1", "up", "zz"], True),
    "a departure that is not an id list": ("events", ["node", "ghost", "down", "xyz"], False),
    "no fields a node writes": ("events", ["junk", "1"], False),
    "operations that are not any": ("inbox", ["from", "ghost", "ops", "garbage"], False),
    "an inbox entry without operations": ("inbox", ["junk", "1"], False),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_an_entry_a_node_cannot_apply_is_skipped_and_the_node_goes_on_following(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    stream, fields, fails = BAD_ENTRIES[case]
    key = "switchboard:events" if stream == "events" else "switchboard:inbox:a"
    a = start_inproc_node(redis_server, node_name="a")
    try:
        with RawPeer(a.port) as on_a:
            redis_server.command("XADD", key, "*", *fields)
            # Node a must go on following: a node started after the bad entry is seen.
            b = start_inproc_node(redis_server, node_name="b")
            try:
                with RawPeer(b.port) as on_b:
                    both = {on_a.client_id, on_b.client_id}
                    assert wait_until(lambda: on_a.listed() == both, 10), on_a.listed()
            finally:
                b.stop()
    finally:
        a.stop()
    assert not [r for r in caplog.records if "cluster task" in r.getMessage()]
    if not fails:
        assert skipped(caplog) == []
        return
    (record,) = skipped(caplog)
    assert record.levelno == logging.ERROR
    assert f"of {key}, which this node cannot apply" in record.getMessage()


def test_a_room_entry_a_node_cannot_apply_is_skipped_and_the_room_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    a = start_inproc_node(redis_server, node_name="a")
    try:
        directory = a.server.shared_directory
        assert directory is not None
        with RawPeer(a.port) as speaker, RawPeer(a.port) as listener:
            join(speaker, "lobby")
            join(listener, "lobby")
            assert speaker.expect(Joined).client_id == listener.client_id
            (followed,) = a.call(lambda: list(directory._room_cursor))
            redis_server.command("XADD", room_stream_key(followed), "*", "f", "zz", "s", "x")
            speaker.send(BroadcastRequest("lobby", "still here", request_id=2))
            assert speaker.expect(BroadcastOk).request_id == 2
            assert listener.expect(Message).text == "still here"
    finally:
        a.stop()
    (record,) = skipped(caplog)
    assert f"of {room_stream_key(followed)}, which" in record.getMessage()


def test_a_flood_of_bad_entries_is_logged_as_a_burst_and_a_count(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    flood = 200
    a = start_inproc_node(redis_server, node_name="a", log_repeat_interval=0.5)
    try:
        with RawPeer(a.port) as on_a:
            for _ in range(flood):
                redis_server.command("XADD", "switchboard:events", "*", "node", "x", "up", "?")

            def counted() -> int:
                return sum(
                    getattr(r, "count", 0)
                    for r in caplog.records
                    if getattr(r, "event", "") == "suppressed"
                )

            # The count comes with the node's next renewal after the interval.
            assert wait_until(lambda: len(skipped(caplog)) + counted() == flood, 15)
            assert len(skipped(caplog)) == defaults.LOG_REPEAT_BURST
            on_a.send(TimeRequest(request_id=1))
            assert on_a.expect(TimeOk).request_id == 1
    finally:
        a.stop()


def _defect(*args: Any) -> Any:
    raise RuntimeError("an injected defect")


def test_a_defect_in_a_pass_to_redis_answers_its_broadcasts_and_the_node_goes_on(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as speaker, RawPeer(st.port) as listener:
            join(speaker, "lobby")
            join(listener, "lobby")
            assert speaker.expect(Joined).client_id == listener.client_id
            # The pass's commands cannot be built: the BROADCAST, and the TIME pipelined
            # behind it (answers keep their order), must still be answered.
            st.call(lambda: setattr(directory, "_room_commands", _defect))
            speaker.send(
                BroadcastRequest("lobby", "lost?", request_id=2), TimeRequest(request_id=3)
            )
            error = speaker.expect_error(ErrorCode.INTERNAL_ERROR, 2)
            assert "may or may not have been stored" in error.message
            assert speaker.expect(TimeOk).request_id == 3
            st.call(lambda: delattr(directory, "_room_commands"))
            # The next pass works: the node did not stop sending to Redis.
            speaker.send(BroadcastRequest("lobby", "again", request_id=4))
            assert speaker.expect(BroadcastOk).request_id == 4
            assert listener.expect(Message).text == "again"
    finally:
        st.stop()
    logged = [r for r in caplog.records if r.name == "switchboard.server" and r.exc_info]
    assert [r.getMessage() for r in logged] == [
        "internal error sending 1 line(s) and 0 node batch(es) to Redis"
    ]
    assert "an injected defect" in str(logged[0].exc_info[1])  # type: ignore[index]


def test_a_cluster_task_that_dies_of_a_defect_is_logged_at_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    st = start_inproc_node(redis_server)
    try:
        directory = st.server.shared_directory
        assert directory is not None

        async def broken_loop() -> None:
            await asyncio.sleep(0)
            _defect()

        st.call(lambda: directory.node.spawn(broken_loop()))

        def died() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "cluster task" in r.getMessage()]

        assert wait_until(lambda: died(), 5)
        (record,) = died()
        assert record.levelno == logging.ERROR
        assert record.getMessage().startswith("internal error: the cluster task ")
        assert "broken_loop" in record.getMessage()
        assert record.exc_info is not None and "an injected defect" in str(record.exc_info[1])
        # The node itself goes on.
        with RawPeer(st.port) as peer:
            peer.send(TimeRequest(request_id=1))
            assert peer.expect(TimeOk).request_id == 1
    finally:
        st.stop()


def test_a_room_listing_with_a_record_it_cannot_read_is_answered_and_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """LIST of a room whose members are all on other nodes is read from Redis: a member
    record that is not one is an INTERNAL_ERROR answer, not a request left unanswered with
    every answer behind it."""
    caplog.set_level(logging.WARNING, logger="switchboard.server")
    a = start_inproc_node(redis_server, node_name="a")
    b = start_inproc_node(redis_server, node_name="b")
    try:
        with RawPeer(a.port) as asker, RawPeer(b.port) as member:
            asker_id = asker.client_id
            join(member, "far")
            redis_server.command("HSET", "switchboard:room-members:far", "not-an-id", "b")
            asker.send(ListRequest("far", request_id=7), TimeRequest(request_id=8))
            asker.expect_error(ErrorCode.INTERNAL_ERROR, 7)
            assert asker.expect(TimeOk).request_id == 8
            redis_server.command("HDEL", "switchboard:room-members:far", "not-an-id")
            asker.send(ListRequest("far", request_id=9))
            listing = asker.expect(ListOk)
            assert [c.client_id for c in listing.clients] == [member.client_id]
    finally:
        b.stop()
        a.stop()
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert logged == [f"internal error listing a room's members for #{asker_id}"]
