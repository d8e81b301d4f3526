"""A scripted one-connection server, for the failure paths a real server never takes (no
WELCOME, no answer, a connection dropped with requests in flight)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from switchboard.protocol import Frame, FrameDecoder, Welcome, encode

HOST = "127.0.0.1"


class FakeServer:
    """A one-connection server on a free port whose behaviour the test scripts.

    ``script(conn, requests)`` runs in a thread with the accepted socket and an iterator of
    decoded frames from the client.
    """

    def __init__(self, script: Callable[[socket.socket, Iterator[Frame]], None]) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(10)
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                self.script(conn, self._frames(conn))
            self.done.set()

    @staticmethod
    def _frames(conn: socket.socket) -> Iterator[Frame]:
        decoder = FrameDecoder()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            decoder.feed(data)
            for event in decoder:
                assert isinstance(event, Frame)
                yield event

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


def welcome(port: int = 1, heartbeat_ms: int = 10_000) -> bytes:
    """A WELCOME frame's bytes, as a fake server sends it first."""
    return encode(Welcome(1, "fake", 1, heartbeat_ms, 65536, 4096, 10, "127.0.0.1", port))


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """``fake_server(script)`` starts a ``FakeServer``; all are closed after the test."""
    started: list[FakeServer] = []

    def start(script: Callable[[socket.socket, Iterator[Frame]], None]) -> FakeServer:
        fs = FakeServer(script)
        started.append(fs)
        return fs

    yield start
    for fs in started:
        fs.close()
