"""A JOIN's history replay never disconnects the joiner by itself.

The replay is one answer: with ``--history`` raised (3,000 messages of 4 KB: 12 MB), the
server queued it whole and then dropped the joiner "too slow" past its hard limit, before it
could have read a byte of it; the client was cut off by the server's own answer, not by its
slowness.  Now a JOIN replays at most the newest messages that fit between the high-water
mark and the hard limit (each counted at its largest possible size), and JoinOk says how
many follow.
"""

from __future__ import annotations

from collections.abc import Callable

from support.peers import RawPeer
from support.servers import ServerThread, shrink_send_buffer
from switchboard.client import Client
from switchboard.protocol import JoinOk, JoinRequest, Message, MessageFlags

HOST = "127.0.0.1"
ROOM = "deep"
HISTORY = 200
HIGH_WATER = 64 * 1024
HARD_LIMIT = 256 * 1024
TEXT_SIZE = 4000


def test_a_replay_larger_than_the_hard_limit_is_cut_to_the_newest_messages_that_fit(
    server_factory: Callable[..., ServerThread],
) -> None:
    st = server_factory(
        history=HISTORY, write_high_water=HIGH_WATER, write_hard_limit=HARD_LIMIT, heartbeat=60.0
    )
    texts = [f"{i:04d}" + "h" * (TEXT_SIZE - 4) for i in range(HISTORY)]  # 800 KB in all
    with Client(HOST, st.port, timeout=10) as filler:
        filler.join(ROOM)
        for text in texts:
            filler.broadcast(ROOM, text)
        with RawPeer(st.port, rcvbuf=4096) as joiner:
            # The kernel holds little for it: what it is owed stays in the server's queue.
            shrink_send_buffer(st, joiner.client_id)
            joiner.send(JoinRequest(ROOM, request_id=1))
            st.wait_for(
                lambda s: (
                    joiner.client_id not in s.directory.client_by_id
                    or ROOM in s.directory.client_by_id[joiner.client_id].rooms
                ),
                timeout=10,
            )
            assert joiner.client_id in st.client_ids(), "dropped by its own JOIN's answer"
            ok = joiner.expect(JoinOk, timeout=10)
            assert 0 < ok.history < HISTORY, ok
            replayed = [joiner.expect(Message, timeout=10) for _ in range(ok.history)]
            assert all(m.flags & MessageFlags.HISTORY for m in replayed)
            assert [m.text for m in replayed] == texts[-ok.history :]  # the newest, in order
            assert joiner.client_id in st.client_ids()
