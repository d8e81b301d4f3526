"""Fixtures for the lab services: an event loop in a thread that runs servers in-process.

Running the server in-process lets a test count this process's descriptors (/proc/self/fd)
while it drives the server with ordinary blocking sockets from the test thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from switchboard.services.reverse.server import ReverseConfig, ReverseServer

T = TypeVar("T")

#: Deadline for anything a test waits on.
WAIT_S = 10.0


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


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, step: float = 0.01) -> bool:
    """Poll ``predicate`` until true or the deadline passes; its final value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


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
