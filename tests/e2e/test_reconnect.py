"""``listen`` and ``chat`` reconnect after a lost connection or a server restart: a server
subprocess is killed (or shut down), a new one started on the same port, and the client
says it reconnected, is back under its nickname in its rooms, and receives again."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.commands import Chat, Follower
from support.network import CuttableProxy
from support.servers import ServerProcess, spawn_logged, switchboard_command
from support.terminals import spawn_chat
from support.waiting import wait_until
from switchboard.client import Client
from switchboard.protocol import Message

#: Seconds to wait for any expected line; a reconnection's first try comes after at most
#: RECONNECT_INITIAL_S (1 s), the next after at most 2 s more.
WAIT_S = 15.0


def serve(port: int = 0, *args: str) -> ServerProcess:
    return spawn_logged(
        switchboard_command(
            "serve", "--port", str(port), "--name", "test-server", "--http", "off", *args
        )
    )


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for sp in started:
        sp.stop(signal.SIGKILL)


def wait_in_room(port: int, nick: str, room: str) -> int:
    """``nick``'s client id once it is in ``room`` (asked every 50 ms, for WAIT_S at most)."""
    ids: list[int] = []
    with Client("127.0.0.1", port, timeout=5) as probe:

        def joined() -> bool:
            ids[:] = [c.client_id for c in probe.list_clients(room) if c.nick == nick]
            return bool(ids)

        assert wait_until(joined, WAIT_S, step=0.05), f"{nick} never joined {room}"
    return ids[0]


def room_message(port: int, room: str, text: str) -> None:
    with Client("127.0.0.1", port, nick="mouth", timeout=5) as mouth:
        mouth.join(room)
        mouth.broadcast(room, text)


# --- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["killed", "shut down"])
def test_listen_reconnects_to_a_restarted_server(
    servers: list[ServerProcess], follow: Callable[..., Follower], how: str
) -> None:
    first = serve()
    servers.append(first)
    port = first.port
    listener = follow("listen", "--nick", "ear", "--room", "lobby", "--port", str(port))
    listener.expect(r"connected to 'test-server' as client #\d+")
    wait_in_room(port, "ear", "lobby")
    room_message(port, "lobby", "before")
    listener.expect(r"^message from .*: before$")
    first.stop(signal.SIGKILL if how == "killed" else signal.SIGTERM)
    listener.expect(r"^disconnected: ")
    listener.expect(r"reconnecting in \d")
    second = serve(port)
    servers.append(second)
    match = listener.expect(r"^reconnected as #(\d+), rejoined lobby$")
    # The nickname taken again, in the room again.
    assert wait_in_room(port, "ear", "lobby") == int(match.group(1))
    room_message(port, "lobby", "after the restart")
    listener.expect(r": after the restart$")


def test_listen_gives_up_with_exit_code_3(
    servers: list[ServerProcess], follow: Callable[..., Follower]
) -> None:
    sp = serve()
    servers.append(sp)
    listener = follow("listen", "--json", "--reconnect-for", "2", "--port", str(sp.port))
    listener.expect('"event": "welcome"')
    sp.stop(signal.SIGKILL)
    listener.expect('"event": "disconnected"')
    waits = [json.loads(listener.expect('"event": "reconnecting"').string)]
    gave_up = json.loads(listener.expect('"event": "gave-up"').string)
    assert gave_up["reason"] == "no connection within 2 s"
    assert listener.proc.wait(WAIT_S) == 3
    waits += [json.loads(line) for line in listener.seen if '"reconnecting"' in line][1:]
    assert waits[0]["error"] is None and all(w["in_s"] <= 2 for w in waits)
    assert any("connection refused" in (w["error"] or "") for w in waits[1:]), listener.seen


def test_listen_gives_up_at_once_when_the_new_server_refuses_its_token(
    servers: list[ServerProcess], follow: Callable[..., Follower], tmp_path: Path
) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.write_text("token-before\n", encoding="utf-8")
    after.write_text("token-after\n", encoding="utf-8")
    first = serve(0, "--auth-token-file", str(before))
    servers.append(first)
    listener = follow("listen", "--token", "token-before", "--port", str(first.port))
    listener.expect("connected to 'test-server'")
    first.stop(signal.SIGKILL)
    listener.expect("reconnecting in")
    servers.append(serve(first.port, "--auth-token-file", str(after)))
    listener.expect(r"^gave up reconnecting: the server refused the token \(AUTH_FAILED\)$")
    assert listener.proc.wait(WAIT_S) == 3


def test_listen_no_reconnect_ends_with_exit_code_3(
    servers: list[ServerProcess], follow: Callable[..., Follower]
) -> None:
    sp = serve()
    servers.append(sp)
    listener = follow("listen", "--no-reconnect", "--port", str(sp.port))
    listener.expect("connected to 'test-server'")
    sp.stop(signal.SIGKILL)
    listener.expect(r"^disconnected: ")
    assert listener.proc.wait(WAIT_S) == 3
    assert not any("reconnect" in line for line in listener.seen)


# --- chat ------------------------------------------------------------------------------------


def test_chat_in_a_terminal_reconnects_to_a_restarted_server(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    pexpect = pytest.importorskip("pexpect")
    first = serve()
    servers.append(first)
    port = first.port
    child = spawn_chat(port, "bob", tmp_path, "--room", "den")
    try:
        child.expect_exact("you joined den")
        child.expect_exact("] bob>")
        first.stop(signal.SIGTERM)  # a restart: SHUTDOWN, then the server is gone
        child.expect_exact("* Connection lost: the server shut down (received SIGTERM)")
        child.expect(r"reconnecting in \d")
        child.expect_exact("(reconnecting) ")  # the prompt says so
        child.send("typed while away\r")
        child.expect_exact("Not sent: reconnecting to the server")
        second = serve(port)
        servers.append(second)
        child.expect(r"\* Reconnected as bob\(#(\d+)\), rejoined den", timeout=WAIT_S)
        new_id = int(child.match.group(1))
        assert wait_in_room(port, "bob", "den") == new_id
        with Client("127.0.0.1", port, nick="alice", timeout=5) as alice:
            alice.join("den")
            alice.broadcast("den", "welcome back 👋")
            child.expect(r"alice\(#\d+\): welcome back 👋")
            child.send("thanks\r")  # and what bob says reaches the room again
            deadline = time.monotonic() + WAIT_S
            while True:
                frame = alice.next_indication(timeout=max(0.0, deadline - time.monotonic()))
                assert frame is not None, "alice never got bob's line"
                if isinstance(frame, Message):
                    break
            assert (frame.sender_nick, frame.text) == ("bob", "thanks")
        child.send("/quit\r")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_piped_chat_gives_up_with_exit_code_3(servers: list[ServerProcess]) -> None:
    sp = serve()
    servers.append(sp)
    chat = Chat(sp.port, "bot", "--reconnect-for", "2")
    try:
        chat.joined()
        sp.stop(signal.SIGKILL)
        chat.expect(r"^\* Connection lost: .*; reconnecting in \d")
        chat.expect(r"^\* Gave up reconnecting: no connection within 2 s\. The chat is over\.$")
        assert chat.wait() == 3  # with its input still open: it ends by itself
        assert any(line.startswith("* Reconnect failed (cannot connect") for line in chat.lines)
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
            chat.proc.wait(WAIT_S)


def test_chat_after_a_network_cut_is_back_and_shows_what_it_missed_once(
    servers: list[ServerProcess],
) -> None:
    sp = serve()
    servers.append(sp)
    proxy = CuttableProxy(sp.port)
    bob = Chat(proxy.port, "bob")
    try:
        bob.joined()
        with Client("127.0.0.1", sp.port, nick="alice", timeout=5) as alice:
            alice.join("lobby")
            alice.broadcast("lobby", "before the cut")
            bob.expect(r"alice\(#\d+\): before the cut$")
            proxy.cut()
            bob.expect(r"^\* Connection lost: .*; reconnecting in \d")
            # Once the server has seen bob go, alice says something he cannot hear.
            deadline = time.monotonic() + WAIT_S
            while True:
                frame = alice.next_indication(timeout=max(0.0, deadline - time.monotonic()))
                assert frame is not None, "alice never saw bob leave"
                if type(frame).__name__ == "Left":
                    break
            alice.broadcast("lobby", "while you were away")
            proxy.mend()
            bob.expect(r"^\* Reconnected as bob\(#\d+\), rejoined lobby$")
            bob.expect(r"^\* 1 line\(s\) said in lobby while you were away:$")
            bob.expect(r"\(missed\) alice\(#\d+\): while you were away$")
            bob.say("back")
            bob.expect(r"bob\(#\d+\): back$")  # our own line, once the server has it
        assert bob.finish() == 0
        assert bob.count("before the cut") == 1, bob.text()  # not replayed a second time
    finally:
        proxy.close()
        if bob.proc.poll() is None:
            bob.proc.kill()
            bob.proc.wait(WAIT_S)
