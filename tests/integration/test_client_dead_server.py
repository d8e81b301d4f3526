"""The client libraries notice a server that falls silent (a pulled cable sends no FIN).

A fake server sends a real WELCOME with a short heartbeat and then nothing at all while
keeping the TCP connection open: both clients must report the connection lost after three
heartbeat intervals and fail what is pending, and a live server's PINGs must keep an idle
client connected well past that.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from conftest import ServerThread
from switchboard.client import AsyncClient, Client, ConnectionLost
from switchboard.protocol import VERSION, Welcome, encode

HEARTBEAT_MS = 200
SILENCE_S = 3 * HEARTBEAT_MS / 1000


class SilentServer:
    """Accepts connections, sends WELCOME, then never sends (or reads) anything again."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.listener.settimeout(0.05)  # so that the accept loop sees close() promptly
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, (ip, port) = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed: the test is over
            self.accepted.append(conn)
            welcome = Welcome(1, "silent", VERSION, HEARTBEAT_MS, 65536, 4096, 10, ip, port)
            conn.sendall(encode(welcome))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_blocking_client_reports_a_silent_server(silent_server: SilentServer) -> None:
    closed: Future[str] = Future()
    with Client("127.0.0.1", silent_server.port, timeout=30, on_close=closed.set_result) as client:
        start = time.monotonic()
        # A request in flight fails with ConnectionLost, well before its own 30 s timeout.
        with pytest.raises(ConnectionLost) as info:
            client.name()
        waited = time.monotonic() - start
        assert SILENCE_S * 0.9 <= waited < SILENCE_S + 2.0, waited
        assert "stopped answering" in info.value.reason
        assert client.closed
        assert "stopped answering" in closed.result(timeout=1)
        with pytest.raises(ConnectionLost):
            client.next_indication(timeout=1)


async def test_async_client_reports_a_silent_server(silent_server: SilentServer) -> None:
    client = await AsyncClient.connect("127.0.0.1", silent_server.port, timeout=30)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionLost) as info:
            await client.name()
        waited = time.monotonic() - start
        assert SILENCE_S * 0.9 <= waited < SILENCE_S + 2.0, waited
        assert "stopped answering" in info.value.reason
        with pytest.raises(ConnectionLost):
            await client.next_indication(timeout=1)
    finally:
        await client.close()


def test_an_idle_client_of_a_live_server_stays_connected(server_factory: Any) -> None:
    # The server's PINGs are what the client hears while idle: five intervals of idleness
    # (past the three-interval silence limit) must not end the connection.
    st: ServerThread = server_factory(heartbeat=HEARTBEAT_MS / 1000)
    lost: list[str] = []
    with Client("127.0.0.1", st.port, timeout=5, on_close=lost.append) as client:
        assert client.next_indication(timeout=5 * HEARTBEAT_MS / 1000) is None
        assert not client.closed and lost == []
        assert client.name() == "test-server"


async def test_an_idle_async_client_of_a_live_server_stays_connected(server_factory: Any) -> None:
    st: ServerThread = server_factory(heartbeat=HEARTBEAT_MS / 1000)
    client = await AsyncClient.connect("127.0.0.1", st.port, timeout=5)
    try:
        await asyncio.sleep(5 * HEARTBEAT_MS / 1000)  # idling is the behaviour under test
        assert not client.closed
        assert await client.name() == "test-server"
    finally:
        await client.close()
