"""``switchboard listen --room`` and ``switchboard chat`` (in a pseudo-terminal) catch up
across a cluster's nodes: connected through a forwarder (a load balancer's part) to node A,
the connection cut while another member talks on node B, reconnected through the same
address to node B: they show exactly the lines missed, once each, in order, marked, then
live ones (the ids they kept work on any node)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.commands import Follower
from support.network import CuttableProxy
from support.redis_servers import Node
from support.terminals import spawn_chat
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import Left

WAIT_S = 15.0
#: More than a JOIN replays: what a rejoin alone would never show.
MISSED = defaults.ROOM_HISTORY + 15


def _wait_for_left(client: Client) -> None:
    """Until ``client`` hears a member leave (the cut connection, seen by the cluster)."""
    deadline = time.monotonic() + WAIT_S
    while not isinstance(
        client.next_indication(timeout=max(0.0, deadline - time.monotonic())), Left
    ):
        assert time.monotonic() < deadline, "the cluster never saw the member leave"


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
            _wait_for_left(alice)
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


def test_terminal_chat_moved_to_another_node_shows_exactly_what_it_missed(
    node: Node, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    proxy = CuttableProxy(a.port)
    child = spawn_chat(proxy.port, "bob", tmp_path, "--room", "den")
    try:
        child.expect_exact("you joined den")
        with Client("127.0.0.1", b.port, nick="alice", timeout=5) as alice:
            alice.join("den")
            alice.broadcast("den", "before the cut")
            child.expect(r"alice\(#\d+\): before the cut")
            proxy.cut()
            child.expect(r"Connection lost: .*; reconnecting in \d")
            _wait_for_left(alice)  # bob is gone for the cluster too: he misses these
            for i in range(MISSED):
                alice.broadcast("den", f"missed {i:02d}")
            proxy.target_port = b.port  # the balancer sends it to node B now
            proxy.mend()
            child.expect(r"\* Reconnected as bob\(#\d+\), rejoined den", timeout=WAIT_S)
            child.expect_exact(f"* {MISSED} line(s) said in den while you were away:")
            for i in range(MISSED):
                child.expect(rf"\(missed\) alice\(#\d+\): missed {i:02d}")
            alice.broadcast("den", "live again")
            child.expect(r"\] alice\(#\d+\): live again")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        shown = child.logfile_read.getvalue()
        assert shown.count("before the cut") == 1, shown
        for i in range(MISSED):
            assert shown.count(f"missed {i:02d}") == 1, f"missed {i:02d} shown not once"
        assert "(history)" not in shown  # the replay was not shown on top of it
    finally:
        proxy.close()
        if child.isalive():
            child.terminate(force=True)
