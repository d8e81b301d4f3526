"""``switchboard lab close``: the states the kernel must show on each side of a close, checked
against TCP's state machine: TIME_WAIT on the active closer only, FIN_WAIT_2 facing
CLOSE_WAIT, the half-close's answer after our FIN; nothing left behind."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from support.lab import children, left_on, run_experiment
from switchboard.lab.sockets import (
    TcpSocket,
    TcpState,
    kernel_setting,
    retire_time_wait,
    wait_for_sockets,
)

HOST = "127.0.0.1"


def test_who_closes_first_waits_and_nothing_is_left() -> None:
    run = run_experiment("close", "--leak-seconds", "0.3")
    seen = run.observations
    first = seen["client_closes_first"]
    assert (first["client"], first["server"]) == ("TIME_WAIT", None)
    assert 55 <= first["time_wait_timer_s"] <= 60  # Linux's 60 s, just started

    server = seen["server_closes_first"]
    assert server["before_client_close"] == {"client": "CLOSE_WAIT", "server": "FIN_WAIT2"}
    assert server["after_client_close"] == {"client": None, "server": "TIME_WAIT"}

    half = seen["half_close"]
    assert half["received_after_shutdown"] == "desserts"  # answered after our FIN
    assert (half["client"], half["server"]) == ("TIME_WAIT", None)

    leaky = seen["leaky_server"]
    assert (leaky["client"], leaky["server"]) == ("FIN_WAIT2", "CLOSE_WAIT")
    assert leaky["server_after_watch"] == "CLOSE_WAIT"  # no timer ends it
    assert leaky["after_server_close"] == {"client": "TIME_WAIT", "server": None}
    fin_timeout = int(kernel_setting("net/ipv4/tcp_fin_timeout"))
    assert seen["tcp_fin_timeout_s"] == fin_timeout
    assert 0 < leaky["client_fin_wait2_timer_s"] <= max(fin_timeout, 60)

    assert seen["time_wait_left_behind"] == 0
    assert run.left_on(seen["server_ports"]) == []
    assert children() == []


def test_a_time_wait_whose_peer_port_is_taken_again_is_still_retired() -> None:
    """The server closes first, then another socket takes the client's old port (connect()
    shares ephemeral ports between connections to different peers, so on a busy machine
    another program's connection can): the probe cannot bind it, and the kernel's
    socket-destroy call (root) ends the entry instead of leaving it for 60 s."""
    if os.geteuid() != 0:
        pytest.skip("destroying a socket the probe cannot reach needs root (CAP_NET_ADMIN)")
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        client_end, server_end = client.getsockname(), listener.getsockname()
        accepted.close()  # the server closes first: its end will wait in TIME_WAIT
        assert client.recv(1) == b""
        client.close()

    def waiting(seen: list[TcpSocket]) -> bool:
        return any(e.local == server_end and e.state is TcpState.TIME_WAIT for e in seen)

    def client_gone(seen: list[TcpSocket]) -> bool:
        # This connection's client end only: the port may also be the local end of another
        # connection's TIME_WAIT, to another peer (ephemeral ports are shared that way).
        return not any(e.local == client_end and e.remote == server_end for e in seen)

    entries = [e for e in wait_for_sockets([server_end[1]], waiting, 5) if e.local == server_end]
    assert [e.state for e in entries] == [TcpState.TIME_WAIT]
    # The client's end leaves LAST_ACK when the server's ACK arrives, a moment after the
    # server's end shows TIME_WAIT: until then the port is still the client's.
    assert client_gone(wait_for_sockets([client_end[1]], client_gone, 5))
    with socket.socket() as holder:
        try:
            holder.bind(client_end)  # the client's old port, taken again
        except OSError as error:
            # Another program's connection took the ephemeral port in the meantime, which
            # is the case itself: the probe cannot bind it either.
            assert error.errno == errno.EADDRINUSE
        assert retire_time_wait(entries[0])
    assert left_on([server_end[1]]) == []
