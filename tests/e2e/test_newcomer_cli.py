"""What a newcomer tripped over in the TCP client commands (issue 14): --timeout covers the
wait for WELCOME in every command, a refused nickname is called that, a bad
$SWITCHBOARD_PORT or --port is one line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from support.commands import run_cli_from_connect
from support.servers import ServerThread, cli_env, run_cli
from switchboard.client import Client

HOST = "127.0.0.1"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that accepts connections and never sends a byte (``nc -l``)."""
    listener = socket.create_server((HOST, 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.parametrize(
    "command",
    [
        ["time"],
        ["name"],
        ["list"],
        ["send", "1", "hi"],
        ["listen"],
        ["chat", "--nick", "x"],
        ["client", "--connect"],
    ],
)
def test_timeout_covers_the_wait_for_welcome(silent_port: int, command: list[str]) -> None:
    # Before: "sent no WELCOME within 5s" after 5 s, whatever --timeout said.
    run = run_cli_from_connect(*command, "--timeout", "0.5", port=silent_port)
    result = run.result
    assert result.returncode == 2, result
    assert "sent no WELCOME within 0.5s" in result.stdout + result.stderr, result
    # Timed from its connection, not from its start (4-5 s alone on a loaded machine).
    assert run.seconds < 4.5, run.seconds  # well under the old fixed 5 s


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(value: str) -> None:
    result = run_cli("time", "--timeout", value)
    assert result.returncode == 2
    assert "argument -t/--timeout" in result.stderr and "Traceback" not in result.stderr


PORT_COMMANDS = [
    ["time"],
    ["name"],
    ["list"],
    ["send", "1", "hi"],
    ["listen"],
    ["client"],
    ["chat", "--nick", "x"],
    ["bench"],
]


def assert_port_refused(command: list[str], flag: str, port: str) -> None:
    result = run_cli(*command, flag, port)
    assert result.returncode == 2, result
    err = result.stderr.strip().splitlines()[-1]
    assert "argument -p/--port:" in err and port in err, err
    assert "refused" not in result.stderr


@pytest.mark.parametrize("command", PORT_COMMANDS, ids=lambda c: c[0])
def test_ports_are_range_checked_by_the_parser(command: list[str]) -> None:
    # Before: --port 99999 went on to "connection refused".
    assert_port_refused(command, "--port", "99999")
    assert_port_refused(command, "-p", "http")


@pytest.mark.parametrize("port", ["0", "-5", "65536"])
def test_every_port_outside_1_to_65535_is_refused(port: str) -> None:
    assert_port_refused(["time"], "-p", port)


def test_serve_accepts_port_0_and_refuses_a_port_out_of_range() -> None:
    result = run_cli("serve", "--port", "70000", "--http", "off")
    assert result.returncode == 2
    assert "argument -p/--port: port 70000 is out of range (0-65535)" in result.stderr


@pytest.mark.parametrize("value", ["abc", "99999", "0"])
def test_a_bad_port_in_the_environment_is_one_clear_line(value: str) -> None:
    result = run_cli("time", env=cli_env(SWITCHBOARD_PORT=value))
    assert result.returncode == 2
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("switchboard: $SWITCHBOARD_PORT: "), err
    assert value in err


def test_short_flags_for_host_port_and_timeout(server: ServerThread) -> None:
    result = run_cli("name", "-H", HOST, "-p", str(server.port), "-t", "5")
    assert (result.returncode, result.stdout.strip()) == (0, "test-server"), result.stderr
    assert run_cli("name", "-h").stdout.startswith("usage: switchboard name")


def test_a_refused_nickname_is_called_that(server: ServerThread) -> None:
    with Client(HOST, server.port, nick="alice"):
        for command in (["listen"], ["send", "1", "hi"]):
            result = run_cli(*command, "--nick", "ALICE", port=server.port)
            assert result.returncode == 2, result
            err = result.stderr.strip()
            assert "refused the nickname 'ALICE'" in err and "NICK_IN_USE" in err, err
            assert "refused the connection" not in err
        piped = run_cli("client", "--nick", "alice", port=server.port, input="")
        assert piped.returncode == 2
        assert "refused the nickname 'alice'" in piped.stdout, piped.stdout
