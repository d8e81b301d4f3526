"""``listen`` and ``chat`` reconnect after a lost connection or a server restart: a server
subprocess is killed (or shut down), a new one started on the same port, and the client
says it reconnected, is back under its nickname in its rooms, and receives again."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_chat_cli import Chat, spawn_chat

from conftest import ServerProcess, cli_env, spawn_logged, switchboard_command
from switchboard.client import Client
from switchboard.client.reconnect import Backoff
from switchboard.protocol import Message

#: Seconds to wait for any expected line; a reconnection's first try comes after at most
#: RECONNECT_INITIAL_S (1 s), the next after at most 2 s more.
WAIT_S = 15.0


def serve(port: int = 0) -> ServerProcess:
    return spawn_logged(switchboard_command("serve", "--port", str(port), "--name", "test-server"))


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for sp in started:
        sp.stop(signal.SIGKILL)


class Lines:
    """A long-running command; its stdout read line by line with deadlines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            switchboard_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = WAIT_S) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                seen = "\n".join(self.seen)
                raise AssertionError(f"no line matching {pattern!r}:\n{seen}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"ended without {pattern!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def commands() -> Iterator[Callable[..., Lines]]:
    started: list[Lines] = []

    def start(*args: str) -> Lines:
        started.append(Lines(*args))
        return started[-1]

    yield start
    for cmd in started:
        cmd.stop()


def wait_in_room(port: int, nick: str, room: str) -> int:
    """``nick``'s client id once it is in ``room`` (asked every 50 ms, for WAIT_S at most)."""
    deadline = time.monotonic() + WAIT_S
    with Client("127.0.0.1", port, timeout=5) as probe:
        while True:
            ids = [c.client_id for c in probe.list_clients(room) if c.nick == nick]
            if ids:
                return ids[0]
            assert time.monotonic() < deadline, f"{nick} never joined {room}"
            time.sleep(0.05)  # a polling interval, bounded by the deadline


def room_message(port: int, room: str, text: str) -> None:
    with Client("127.0.0.1", port, nick="mouth", timeout=5) as mouth:
        mouth.join(room)
        mouth.broadcast(room, text)


# --- the back-off ----------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_with_jitter_and_gives_up_in_time() -> None:
    import random

    backoff = Backoff(initial=1.0, cap=8.0, give_up_s=30.0, rng=random.Random(7))
    elapsed, delays = 0.0, []
    while (delay := backoff.next_delay(elapsed)) is not None:
        delays.append(delay)
        elapsed += delay
    bases = [1, 2, 4, 8, 8, 8, 8, 8, 8, 8]
    for delay, base in zip(delays, bases, strict=False):
        assert base / 2 <= delay <= base
    assert len(set(delays)) == len(delays)  # jittered: no two the same
    assert elapsed == pytest.approx(30.0)  # the last wait is cut to the bound, then it stops


# --- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["killed", "shut down"])
def test_listen_reconnects_to_a_restarted_server(
    servers: list[ServerProcess], commands: Callable[..., Lines], how: str
) -> None:
    first = serve()
    servers.append(first)
    port = first.port
    listener = commands("listen", "--nick", "ear", "--room", "lobby", "--port", str(port))
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
    servers: list[ServerProcess], commands: Callable[..., Lines]
) -> None:
    sp = serve()
    servers.append(sp)
    listener = commands("listen", "--json", "--reconnect-for", "2", "--port", str(sp.port))
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


def test_listen_no_reconnect_ends_with_exit_code_3(
    servers: list[ServerProcess], commands: Callable[..., Lines]
) -> None:
    sp = serve()
    servers.append(sp)
    listener = commands("listen", "--no-reconnect", "--port", str(sp.port))
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
