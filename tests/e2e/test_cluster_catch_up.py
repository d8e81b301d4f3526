"""``switchboard listen --room`` catches up across a cluster's nodes: connected through a
forwarder (a load balancer's part) to node A, its connection cut while another member talks
on node B, reconnected through the same address to node B: it prints exactly the lines it
missed, once each, in order, marked, then live ones (the ids it kept work on any node)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from support.commands import Follower
from support.network import CuttableProxy
from support.redis_servers import Node
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import Left

WAIT_S = 15.0
#: More than a JOIN replays: what a rejoin alone would never show.
MISSED = defaults.ROOM_HISTORY + 15


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_moved_to_another_node_prints_what_it_missed_once(
    node: Node, follow: Callable[..., Follower], as_json: bool
) -> None:
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    proxy = CuttableProxy(a.port)
    try:
        args = ["listen", "--nick", "ear", "--room", "den", "--port", str(proxy.port)]
        listener = follow(*args, *(["--json"] if as_json else []))
        listener.expect("connected" if not as_json else '"welcome"')
        with Client("127.0.0.1", b.port, nick="alice", timeout=5) as alice:
            alice.join("den")
            alice.broadcast("den", "before the cut")
            listener.expect("before the cut")
            proxy.cut()
            listener.expect("disconnected")
            deadline = time.monotonic() + WAIT_S
            while not isinstance(
                alice.next_indication(timeout=max(0.0, deadline - time.monotonic())), Left
            ):
                assert time.monotonic() < deadline, "node B never heard the listener leave"
            for i in range(MISSED):
                alice.broadcast("den", f"missed {i:02d}")
            proxy.target_port = b.port  # the balancer sends it to node B now
            proxy.mend()
            listener.expect("reconnected")
            for i in range(MISSED):
                line = listener.expect(f"missed {i:02d}").string
                if as_json:
                    record = json.loads(line)
                    assert (record["missed"], record["text"]) == (True, f"missed {i:02d}")
                else:
                    assert "[missed]:" in line
            alice.broadcast("den", "live again")
            listener.expect("live again")
        listener.stop()
        printed = listener.seen
        assert sum("before the cut" in line for line in printed) == 1, printed
        assert all(sum(f"missed {i:02d}" in line for line in printed) == 1 for i in range(MISSED))
    finally:
        proxy.close()
