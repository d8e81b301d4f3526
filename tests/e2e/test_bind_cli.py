"""``--bind HOST:PORT`` on the client commands: the connection comes from that port (the
server's LIST shows it), a second run on the same port meets the first one's TIME_WAIT (one
line, exit 2), and a malformed address is a usage error."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from support.commands import assert_one_clear_error_line
from support.lab import left_on, tcp_table
from support.servers import ServerProcess, run_cli
from switchboard.lab.sockets import TcpSocket, TcpState, retire_time_wait, wait_for_sockets

HOST = "127.0.0.1"


def ends_on(port: int) -> Callable[[list[TcpSocket]], bool]:
    """Whether the kernel shows a socket whose local end is ``port`` (only ours can be)."""
    return lambda seen: any(e.local_port == port for e in seen)


def test_list_from_a_bound_port_then_the_same_port_again(server_process: ServerProcess) -> None:
    before = tcp_table()
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    bind = f"{HOST}:{port}"
    result = run_cli("list", "--format", "tsv", "--bind", bind, port=server_process.port)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    mine = [row for row in rows if row[-1] == "yes"]
    assert len(mine) == 1 and mine[0][1:3] == [HOST, str(port)], result.stdout

    entries = [e for e in wait_for_sockets([port], ends_on(port), 5) if e.local_port == port]
    assert [e.state for e in entries] == [TcpState.TIME_WAIT]
    again = run_cli("time", "--bind", bind, port=server_process.port)
    line = assert_one_clear_error_line(again, 2)
    assert f"cannot bind {bind}" in line and "in use" in line

    server_process.stop()
    assert retire_time_wait(entries[0]) and left_on([port], before) == []


@pytest.mark.parametrize("bad", ["7000", "localhost:99999", "::1:7000", "127.0.0.1:x"])
def test_a_malformed_bind_is_a_usage_error(bad: str) -> None:
    result = run_cli("time", "--bind", bad)
    assert result.returncode == 2 and "--bind" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_chat_and_menu_clients_take_bind_too() -> None:
    for command in ("chat", "client", "listen", "send", "name", "rooms"):
        result = run_cli(command, "--help")
        assert "--bind HOST:PORT" in result.stdout, command
