"""``switchboard chat`` catches up: in a pseudo-terminal, a chat whose connection is cut while
the others talk (more than a JOIN replays) shows exactly the lines it missed, once each, in
order, marked; a chat started again after /quit shows what was said since it left (its
last-seen ids kept 0600 in the state directory); piped, the same through a server restart on
the same data directory."""

from __future__ import annotations

import json
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.commands import Chat, Follower
from support.network import CuttableProxy, free_port
from support.servers import ServerProcess, fresh_data_dir
from support.terminals import spawn_chat
from switchboard import defaults
from switchboard.cli.seen import FILE
from switchboard.client import Client
from switchboard.protocol import Left

WAIT_S = 15.0
#: More than a JOIN replays: what a rejoin alone would never show.
MISSED = defaults.ROOM_HISTORY + 15


def _wait_for_left(client: Client) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        frame = client.next_indication(timeout=max(0.0, deadline - time.monotonic()))
        assert frame is not None, "the server never saw the chat leave"
        if isinstance(frame, Left):
            return


def test_terminal_chat_shows_exactly_what_it_missed_after_a_cut(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    proxy = CuttableProxy(server_process.port)
    child = spawn_chat(proxy.port, "bob", tmp_path, "--room", "den")
    try:
        child.expect_exact("you joined den")
        with Client("127.0.0.1", server_process.port, nick="alice", timeout=5) as alice:
            alice.join("den")
            alice.broadcast("den", "before the cut")
            child.expect(r"alice\(#\d+\): before the cut")
            proxy.cut()
            child.expect(r"Connection lost: .*; reconnecting in \d")
            _wait_for_left(alice)  # bob is gone for the server too: he misses these
            for i in range(MISSED):
                alice.broadcast("den", f"missed {i:02d}")
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


def test_a_chat_started_again_shows_what_was_said_since_it_quit(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    port = server_process.port
    child = spawn_chat(port, "carol", tmp_path, "--room", "den")
    with Client("127.0.0.1", port, nick="dave", timeout=5) as dave:
        dave.join("den")
        dave.broadcast("den", "first run")
        child.expect(r"dave\(#\d+\): first run")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
        child.close()
        dave.broadcast("den", "while carol was out")
        dave.broadcast("den", "and again")
    seen = tmp_path / "state" / "switchboard" / FILE
    assert stat.S_IMODE(seen.stat().st_mode) == 0o600
    assert f"127.0.0.1:{port}" in json.loads(seen.read_text(encoding="utf-8"))["servers"]
    child = spawn_chat(port, "carol", tmp_path, "--room", "den")
    try:
        child.expect_exact("* 2 line(s) said in den while you were away:")
        child.expect(r"\(missed\) dave\(#\d+\): while carol was out")
        child.expect(r"\(missed\) dave\(#\d+\): and again")
        child.expect_exact("] carol>")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
        assert "first run" not in child.logfile_read.getvalue()
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_piped_chat_catches_up_across_a_server_restart_on_the_same_data_dir(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    data_dir = fresh_data_dir()
    port = free_port()

    def serve() -> ServerProcess:
        return server_process_factory("--data-dir", data_dir, "--port", str(port))

    sp = serve()
    chat = Chat(port, "erin", "--room", "den")
    try:
        chat.joined()
        with Client("127.0.0.1", port, nick="frank", timeout=5) as frank:
            frank.join("den")
            frank.broadcast("den", "old news")
            chat.expect(r"frank\(#\d+\): old news$")
        sp.stop(signal.SIGTERM)
        chat.expect(r"^\* Connection lost: .*; reconnecting in \d")
        # Someone talks on the restarted server before the chat is back: started elsewhere
        # first, so that the chat cannot be there yet, then moved to the chat's port.
        elsewhere = server_process_factory("--data-dir", data_dir)
        with Client("127.0.0.1", elsewhere.port, nick="frank", timeout=5) as frank:
            frank.join("den")
            frank.broadcast("den", "said during the restart")
        elsewhere.stop(signal.SIGTERM)
        sp = serve()
        chat.expect(r"^\* Reconnected as erin\(#\d+\), rejoined den$", timeout=WAIT_S)
        chat.expect(r"^\* 1 line\(s\) said in den while you were away:$")
        chat.expect(r"\(missed\) frank\(#\d+\): said during the restart$")
        assert chat.finish() == 0
        assert chat.count("old news") == 1, chat.text()
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
            chat.proc.wait(WAIT_S)


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_prints_what_it_missed_once_after_a_cut(
    server_process: ServerProcess, follow: Callable[..., Follower], as_json: bool
) -> None:
    proxy = CuttableProxy(server_process.port)
    try:
        args = ["listen", "--nick", "ear", "--room", "den", "--port", str(proxy.port)]
        listener = follow(*args, *(["--json"] if as_json else []))
        listener.expect("connected" if not as_json else '"welcome"')
        with Client("127.0.0.1", server_process.port, nick="alice", timeout=5) as alice:
            alice.join("den")
            alice.broadcast("den", "before the cut")
            listener.expect("before the cut")
            proxy.cut()
            listener.expect("disconnected")
            _wait_for_left(alice)
            for i in range(MISSED):
                alice.broadcast("den", f"missed {i:02d}")
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


def test_piped_chat_back_on_a_reset_store_shows_its_replay_not_a_catch_up(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    """A server restarted on another (or a wiped) data directory has another epoch: the ids
    the chat remembers mean nothing there, so it shows the rejoin's replay as history and
    claims nothing was missed."""
    port = free_port()
    sp = server_process_factory("--data-dir", fresh_data_dir(), "--port", str(port))
    chat = Chat(port, "gina", "--room", "den")
    try:
        chat.joined()
        with Client("127.0.0.1", port, nick="hal", timeout=5) as hal:
            hal.join("den")
            hal.broadcast("den", "on the old store")
            chat.expect(r"hal\(#\d+\): on the old store$")
        sp.stop(signal.SIGTERM)
        chat.expect(r"^\* Connection lost: .*; reconnecting in \d")
        other = fresh_data_dir()
        elsewhere = server_process_factory("--data-dir", other)
        with Client("127.0.0.1", elsewhere.port, nick="hal", timeout=5) as hal:
            hal.join("den")
            hal.broadcast("den", "on the new store")
        elsewhere.stop(signal.SIGTERM)
        server_process_factory("--data-dir", other, "--port", str(port))
        chat.expect(r"^\* Reconnected as gina\(#\d+\), rejoined den$", timeout=WAIT_S)
        chat.expect(r"\(history\) hal\(#\d+\): on the new store$")
        assert chat.finish() == 0
        assert "while you were away" not in chat.text()
        assert "(missed)" not in chat.text()
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
            chat.proc.wait(WAIT_S)
