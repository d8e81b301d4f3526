"""A defect met in a cluster node's background work (a pass of lines to Redis, one of its
loops) is an INTERNAL_ERROR answer and one logged traceback: no request waits for ever behind
it, and the node goes on serving (in-process node on a Redis of the test's own, with the
defect injected)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from support.history_lines import join
from support.peers import RawPeer
from support.redis_servers import RedisServer, start_inproc_node
from support.waiting import wait_until
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    Joined,
    Message,
    TimeOk,
    TimeRequest,
)


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
