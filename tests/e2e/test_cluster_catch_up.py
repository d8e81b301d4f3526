"""``switchboard listen --room`` and ``switchboard chat`` (in a pseudo-terminal) catch up
across a cluster's nodes: connected through a forwarder (a load balancer's part) to node A,
the connection cut while another member talks on node B, reconnected through the same
address to node B: they show exactly the lines missed, once each, in order, marked, then
live ones (the ids they kept work on any node)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from support.catch_up import chat_catches_up, listen_catches_up
from support.commands import Follower
from support.network import CuttableProxy
from support.redis_servers import Node
from support.terminals import spawn_chat


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_moved_to_another_node_prints_what_it_missed_once(
    node: Node, follow: Callable[..., Follower], as_json: bool
) -> None:
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    proxy = CuttableProxy(a.port)
    try:
        listen_catches_up(follow, proxy, b.port, as_json, back_to=b.port)
    finally:
        proxy.close()


def test_terminal_chat_moved_to_another_node_shows_exactly_what_it_missed(
    node: Node, tmp_path: Path
) -> None:
    pytest.importorskip("pexpect")
    a, b = node("a", "--rate", "0"), node("b", "--rate", "0")
    proxy = CuttableProxy(a.port)
    child = spawn_chat(proxy.port, "bob", tmp_path, "--room", "den")
    try:
        chat_catches_up(child, proxy, b.port, back_to=b.port)
    finally:
        proxy.close()
        if child.isalive():
            child.terminate(force=True)
