"""``local_address``: the blocking and the asyncio client connect from a chosen address and
port (bind() before connect()), as the server sees it in WELCOME and LIST; a local address
that cannot be bound is a ConnectionFailed that says "cannot bind"."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from support.lab import left_on, tcp_table
from support.servers import ServerThread
from switchboard.client import AsyncClient, Client, ConnectionFailed
from switchboard.lab.sockets import TcpSocket, TcpState, retire_time_wait, wait_for_sockets

HOST = "127.0.0.1"


def ends_on(port: int) -> Callable[[list[TcpSocket]], bool]:
    """Whether the kernel shows a socket whose local end is ``port`` (only ours can be)."""
    return lambda seen: any(e.local_port == port for e in seen)


def test_the_blocking_client_connects_from_the_bound_port(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5, local_address=(HOST, 0)) as client:
        bound = client.welcome.port
        assert client.welcome.ip == HOST
        with Client(HOST, server.port, timeout=5) as other:
            listed = {c.client_id: c.port for c in other.list_clients()}
        assert listed[client.client_id] == bound


def free_port_number() -> int:
    probe = socket.socket()
    probe.bind((HOST, 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def test_a_fixed_port_is_held_by_time_wait_after_the_client_closes(server: ServerThread) -> None:
    before = tcp_table()
    port = free_port_number()
    with Client(HOST, server.port, timeout=5, local_address=(HOST, port)) as client:
        assert client.welcome.port == port

    # The client closed first: its end waits in TIME_WAIT, and the port cannot be bound.
    # (waited for: on a busy machine the close handshake is still in FIN_WAIT1 for a moment)
    def time_wait(seen: list[TcpSocket]) -> bool:
        return [e.state for e in seen if e.local_port == port] == [TcpState.TIME_WAIT]

    entries = [e for e in wait_for_sockets([port], time_wait, 5) if e.local_port == port]
    assert [e.state for e in entries] == [TcpState.TIME_WAIT]
    with pytest.raises(ConnectionFailed, match=rf"cannot bind 127\.0\.0\.1:{port}: .*in use"):
        Client(HOST, server.port, timeout=5, local_address=(HOST, port))
    server.stop()  # its port free again: the TIME_WAIT can be retired, leaving nothing
    assert retire_time_wait(entries[0])
    assert left_on([port], before) == []


async def test_the_async_client_connects_from_the_bound_port(server: ServerThread) -> None:
    port = free_port_number()
    client = await AsyncClient.connect(HOST, server.port, timeout=5, local_address=(HOST, port))
    try:
        assert client.welcome.port == port
    finally:
        await client.close()


def test_a_port_in_use_says_cannot_bind(server: ServerThread) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(ConnectionFailed, match=rf"cannot bind 127\.0\.0\.1:{taken}: .*in use"):
            Client(HOST, server.port, timeout=5, local_address=(HOST, taken))


def test_an_address_not_of_this_machine_says_cannot_bind(server: ServerThread) -> None:
    with pytest.raises(ConnectionFailed, match=r"cannot bind 192\.0\.2\.1:0: "):
        Client(HOST, server.port, timeout=5, local_address=("192.0.2.1", 0))
