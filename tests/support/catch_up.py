"""The catching-up scenario the chat and listen tests share, on one server or across a
cluster's nodes: a member connected through a cuttable forwarder, the connection cut while
alice talks (more lines than a JOIN replays), mended (to the same server, or to another
node), and what the member shows: exactly the lines it missed, once each, marked, then live
ones."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from support.commands import Follower
from support.network import CuttableProxy
from switchboard import defaults
from switchboard.client import Client
from switchboard.protocol import Left

WAIT_S = 15.0
#: More than a JOIN replays: what a rejoin alone would never show.
MISSED = defaults.ROOM_HISTORY + 15


def wait_for_left(client: Client) -> None:
    """Until ``client`` hears a member leave (the cut connection, seen by the server)."""
    deadline = time.monotonic() + WAIT_S
    while not isinstance(
        client.next_indication(timeout=max(0.0, deadline - time.monotonic())), Left
    ):
        assert time.monotonic() < deadline, "the server never saw the member leave"


def _talk_across_a_cut(
    alice: Client, proxy: CuttableProxy, back_to: int | None, *, cut_seen: Callable[[], Any]
) -> None:
    """Alice says MISSED lines in "den" while the member behind ``proxy`` is cut off; the
    forwarder then leads to port ``back_to`` (another node), or to the same server."""
    proxy.cut()
    cut_seen()
    wait_for_left(alice)  # the member is gone for the server too: it misses these
    for i in range(MISSED):
        alice.broadcast("den", f"missed {i:02d}")
    if back_to is not None:
        proxy.target_port = back_to  # the balancer sends it there now
    proxy.mend()


def chat_catches_up(
    child: Any, proxy: CuttableProxy, alice_port: int, back_to: int | None = None
) -> None:
    """``switchboard chat`` as bob in "den" (``child``, a pexpect child connected through
    ``proxy``), alice talking on ``alice_port``."""
    import pexpect

    child.expect_exact("you joined den")
    with Client("127.0.0.1", alice_port, nick="alice", timeout=5) as alice:
        alice.join("den")
        alice.broadcast("den", "before the cut")
        child.expect(r"alice\(#\d+\): before the cut")
        _talk_across_a_cut(
            alice,
            proxy,
            back_to,
            cut_seen=lambda: child.expect(r"Connection lost: .*; reconnecting in \d"),
        )
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


def listen_catches_up(
    follow: Callable[..., Follower],
    proxy: CuttableProxy,
    alice_port: int,
    as_json: bool,
    back_to: int | None = None,
) -> None:
    """``switchboard listen --room den`` through ``proxy`` (text or ``--json``), alice
    talking on ``alice_port``."""
    args = ["listen", "--nick", "ear", "--room", "den", "--port", str(proxy.port)]
    listener = follow(*args, *(["--json"] if as_json else []))
    listener.expect("connected" if not as_json else '"welcome"')
    with Client("127.0.0.1", alice_port, nick="alice", timeout=5) as alice:
        alice.join("den")
        alice.broadcast("den", "before the cut")
        listener.expect("before the cut")
        _talk_across_a_cut(alice, proxy, back_to, cut_seen=lambda: listener.expect("disconnected"))
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
