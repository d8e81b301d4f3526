"""The client libraries notice a server that falls silent (a pulled cable sends no FIN).

A fake server sends a real WELCOME with a short heartbeat and then nothing at all while
keeping the TCP connection open: both clients must report the connection lost after three
heartbeat intervals and fail what is pending, and a live server's PINGs must keep an idle
client connected well past that.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from support.fake_servers import FakeServer, welcome
from support.servers import ServerThread
from switchboard.client import AsyncClient, Client, ConnectionLost
from switchboard.protocol import Frame

HEARTBEAT_MS = 200
SILENCE_S = 3 * HEARTBEAT_MS / 1000


def silent(conn: socket.socket, requests: Iterator[Frame]) -> None:
    """Sends WELCOME, then never anything again: what the client sends is read, unanswered,
    until it closes the connection."""
    conn.sendall(welcome(heartbeat_ms=HEARTBEAT_MS))
    for _ in requests:
        pass


@pytest.fixture
def silent_server(fake_server: Callable[..., FakeServer]) -> FakeServer:
    return fake_server(silent)


def test_blocking_client_reports_a_silent_server(silent_server: FakeServer) -> None:
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


async def test_async_client_reports_a_silent_server(silent_server: FakeServer) -> None:
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
