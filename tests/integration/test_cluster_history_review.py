"""Review of issue 17's cluster history: what a node keeps of a room once it has no member
there any more (in-process node on a Redis of the test's own)."""

from __future__ import annotations

from support.history_lines import join
from support.peers import RawPeer
from support.redis_servers import RedisServer
from support.servers import ServerThread
from switchboard.protocol import BroadcastOk, BroadcastRequest, LeaveOk, LeaveRequest
from switchboard.server import ServerConfig

ROOMS = 20


def test_a_room_said_in_then_left_at_once_leaves_nothing_on_the_node(
    redis_server: RedisServer,
) -> None:
    """A BROADCAST pipelined with the LEAVE after it: the LEAVE is taken while the line is on
    its way to Redis, and the node forgets the room then; the line's id, coming back after,
    must not be kept for a room nobody here is in (one entry per room name, for ever: a
    client cycling through names grows the node without bound)."""
    config = ServerConfig(
        port=0, name="inproc", cluster=redis_server.url, node_name="inproc", rate=0,
        log_level="warning",
    )  # fmt: skip
    st = ServerThread(config).start()
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
