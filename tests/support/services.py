"""Fixtures for the lab services: an event loop in a thread that runs servers in-process.

Running the server in-process lets a test count this process's descriptors (/proc/self/fd)
while it drives the server with ordinary blocking sockets from the test thread.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from support.waiting import WAIT_S
from switchboard.cli.udpchat_join import ChatSession
from switchboard.services.reverse.server import ReverseConfig, ReverseServer
from switchboard.services.udpchat.peer import ChatPeer
from switchboard.services.udpchat.relay import DropPredicate, FaultPlan, LossyRelay
from switchboard.services.udpchat.server import UdpChatConfig, UdpChatServer

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT_S)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


ReverseFactory = Callable[..., ReverseServer]


@pytest.fixture
def reverse_server(loop_thread: LoopThread) -> Iterator[ReverseFactory]:
    """``reverse_server(**config)`` starts a reversal server on a free loopback port."""
    started: list[ReverseServer] = []

    def start(**overrides: Any) -> ReverseServer:
        config = ReverseConfig(host="127.0.0.1", port=0, **overrides)
        server = ReverseServer(config)
        loop_thread.call(server.start())
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            loop_thread.call(server.close())


def open_fds(pid: int | str = "self") -> int:
    """File descriptors open in process ``pid`` (this one by default), from /proc."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class LineSocket:
    """A blocking client socket that reads whole lines, with a deadline on every read."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = WAIT_S) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """The next line without its newline, or None at end of stream."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def ask(self, data: bytes) -> bytes | None:
        self.send(data)
        return self.line()

    def at_eof(self) -> bool:
        """Whether the server closed: no more data (buffered input discarded)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- the UDP chat room --------------------------------------------------------------------------


UdpChatFactory = Callable[..., UdpChatServer]


@pytest.fixture
def udpchat_server(loop_thread: LoopThread) -> Iterator[UdpChatFactory]:
    """``udpchat_server(**config)`` starts a chat room on a free loopback port."""
    started: list[UdpChatServer] = []

    def start(**overrides: Any) -> UdpChatServer:
        server = UdpChatServer(UdpChatConfig(host="127.0.0.1", port=0, **overrides))
        loop_thread.call(server.start())
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            loop_thread.call(server.close())


RelayFactory = Callable[..., LossyRelay]


@pytest.fixture
def lossy_relay(loop_thread: LoopThread) -> Iterator[RelayFactory]:
    """``lossy_relay(server_port, plan=None, drop_if=None)``: a relay in front of the room."""
    started: list[LossyRelay] = []

    def start(
        port: int, plan: FaultPlan | None = None, drop_if: DropPredicate | None = None
    ) -> LossyRelay:
        relay = LossyRelay(("127.0.0.1", port), plan, drop_if=drop_if)
        loop_thread.call(relay.start())
        started.append(relay)
        return relay

    try:
        yield start
    finally:
        for relay in started:
            loop_thread.call(relay.close())


class Capture(io.TextIOBase):
    """A text stream tests can wait on: ``wait_for(needle)`` with a deadline."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = threading.Condition()

    def write(self, s: str) -> int:
        with self._changed:
            self.text += s
            self._changed.notify_all()
        return len(s)

    def wait_for(self, needle: str, timeout: float = WAIT_S) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while needle not in self.text:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def lines(self) -> list[str]:
        return self.text.splitlines()


class Member:
    """A chat client (``ChatSession``) in the test's event loop; ``say`` types a line."""

    def __init__(self, loop_thread: LoopThread, port: int, nick: str, **peer: Any) -> None:
        self.loop = loop_thread.loop
        self.out = Capture()
        self.err = Capture()
        self.peer = ChatPeer(nick, **peer)
        self.session = ChatSession(
            self.peer, server=("127.0.0.1", port), out=self.out, err=self.err, interactive=False
        )
        self.future = asyncio.run_coroutine_threadsafe(self.session.run(None), self.loop)
        self._stdin_open = True

    def say(self, line: str) -> None:
        self.loop.call_soon_threadsafe(self.session.input_line, line.encode() + b"\n")

    def close_stdin(self) -> None:
        if self._stdin_open:
            self._stdin_open = False
            self.loop.call_soon_threadsafe(self.session.input_line, b"")

    def exit_code(self, timeout: float = WAIT_S) -> int:
        self.close_stdin()
        return self.future.result(timeout)

    def stop(self) -> None:
        if not self.future.done():
            self.close_stdin()
            try:
                self.future.result(WAIT_S)
            except Exception:
                self.future.cancel()


MemberFactory = Callable[..., Member]


@pytest.fixture
def member(loop_thread: LoopThread) -> Iterator[MemberFactory]:
    """``member(port, nick, **peer_options)`` runs a chat client; all are stopped after."""
    started: list[Member] = []

    def start(port: int, nick: str, **peer: Any) -> Member:
        m = Member(loop_thread, port, nick, **peer)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            m.stop()
