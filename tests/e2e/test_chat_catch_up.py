"""``switchboard chat`` catches up: in a pseudo-terminal, a chat whose connection is cut while
the others talk (more than a JOIN replays) shows exactly the lines it missed, once each, in
order, marked; a chat started again after /quit shows what was said since it left (its
last-seen ids kept 0600 in the state directory); piped, the same through a server restart on
the same data directory."""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from support.catch_up import WAIT_S, chat_catches_up, listen_catches_up
from support.commands import Chat, Follower
from support.network import CuttableProxy, free_port
from support.servers import ServerProcess, fresh_data_dir
from support.terminals import spawn_chat
from switchboard.cli.seen import FILE
from switchboard.client import Client


def test_terminal_chat_shows_exactly_what_it_missed_after_a_cut(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    pytest.importorskip("pexpect")
    proxy = CuttableProxy(server_process.port)
    child = spawn_chat(proxy.port, "bob", tmp_path, "--room", "den")
    try:
        chat_catches_up(child, proxy, server_process.port)
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
        listen_catches_up(follow, proxy, server_process.port, as_json)
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
