"""The exit-code table (``switchboard.cli.exitcodes.ExitCode``) walked through real
subprocesses: each code provoked for the TCP client commands, the table printed by every
command's ``--help`` and by the README, from the one source."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.network import free_port
from support.servers import (
    STARTUP_TIMEOUT,
    ServerProcess,
    ServerThread,
    cli_env,
    run_cli,
    switchboard_command,
)
from switchboard.cli.exitcodes import ExitCode, epilog, table_lines
from switchboard.cli.main import build_parser

HOST = "127.0.0.1"
WAIT_S = 15.0
README = Path(__file__).resolve().parents[2] / "README.md"


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        switchboard_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def first_line(proc: subprocess.Popen[str]) -> str:
    """The command's first stdout line (``listen`` prints one once it is connected)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.communicate(timeout=WAIT_S)
    return line


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


# --- 0 ---------------------------------------------------------------------------------------


def test_ok(server: ServerThread) -> None:
    for command in (["time"], ["name"], ["list"]):
        result = run_cli(*command, port=server.port)
        assert result.returncode == ExitCode.OK, result.stderr


def test_ok_after_the_user_ends_the_session(server: ServerThread) -> None:
    for command, text in ((["client", "--connect"], "time\nquit\n"), (["chat", "--nick", "u"], "")):
        result = run_cli(*command, port=server.port, input=text)
        assert result.returncode == ExitCode.OK, result


# --- 1 ---------------------------------------------------------------------------------------


def test_refused(server: ServerThread) -> None:
    result = run_cli("send", "999", "anyone?", port=server.port)
    assert result.returncode == ExitCode.REFUSED, result.stderr
    assert "NO_SUCH_CLIENT" in result.stderr


def test_refused_in_a_piped_menu_session(server: ServerThread) -> None:
    result = run_cli("client", "--connect", port=server.port, input="send 999 hi\nname\n")
    assert result.returncode == ExitCode.REFUSED, result
    assert "test-server" in result.stdout  # the session went on after the refusal


# --- 2 ---------------------------------------------------------------------------------------


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
        ["bench", "--duration", "0.2"],
    ],
)
def test_no_session_when_nothing_listens(command: list[str]) -> None:
    result = run_cli(*command, port=free_port(), input="time\n")
    assert result.returncode == ExitCode.NO_SESSION, result
    assert "Traceback" not in result.stderr


def test_the_piped_menu_client_that_never_connected_says_so_in_its_exit_code(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    # A server that demands a token refuses the session: `connect` fails, `time` finds no
    # connection; before, the client said so on stdout and exited 0 all the same.
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    tokens.chmod(0o600)
    secured = server_factory(auth_token_file=str(tokens))
    result = run_cli("client", input=f"connect {HOST} {secured.port}\ntime\n")
    assert result.returncode == ExitCode.NO_SESSION, result
    assert "--token" in result.stdout
    unreachable = run_cli("client", input=f"connect {HOST} {free_port()}\ntime\n")
    assert unreachable.returncode == ExitCode.NO_SESSION, unreachable


@pytest.mark.parametrize("command", [["time"], ["client"], ["chat", "--nick", "x"]])
def test_usage_error(command: list[str]) -> None:
    result = run_cli(*command, "--port", "99999")
    assert result.returncode == ExitCode.USAGE == 2, result
    assert "out of range" in result.stderr


# --- 3 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["listen"], ["listen", "--json"]])
def test_listen_ends_with_3_on_shutdown(server: ServerThread, command: list[str]) -> None:
    # Without --no-reconnect it would reconnect and exit 3 only on giving up (test_reconnect.py).
    proc = spawn(*command, "--no-reconnect", "--port", str(server.port))
    first_line(proc)
    server.stop()
    code, err = finish(proc)
    assert code == ExitCode.SESSION_ENDED, err


@pytest.mark.parametrize("command", [["listen"], ["chat", "--nick", "x"]])
def test_a_lost_connection_ends_with_3(server_process: ServerProcess, command: list[str]) -> None:
    proc = subprocess.Popen(
        switchboard_command(*command, "--no-reconnect", "--port", str(server_process.port)),
        stdin=subprocess.PIPE,  # left open: chat waits for lines until the server goes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        # Established: listen says "connected", chat "you joined" (after the server's answers).
        assert proc.stdout is not None
        awaited = "connected to" if command[0] == "listen" else "you joined"
        while awaited not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read() if proc.stderr else ""
        server_process.proc.kill()  # no SHUTDOWN: the connection is just gone
        server_process.proc.wait(WAIT_S)
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == ExitCode.SESSION_ENDED, err
    assert "Traceback" not in err


def test_chat_ends_with_3_on_shutdown(server: ServerThread) -> None:
    proc = subprocess.Popen(
        switchboard_command("chat", "--nick", "bot", "--no-reconnect", "--port", str(server.port)),
        stdin=subprocess.PIPE,  # left open: the chat waits for lines until the server goes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        while "you joined" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read() if proc.stderr else ""
        server.stop()
        assert proc.wait(WAIT_S) == ExitCode.SESSION_ENDED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_piped_menu_client_ends_with_3_when_the_server_goes(server: ServerThread) -> None:
    proc = subprocess.Popen(
        switchboard_command("client", "--connect", "--port", str(server.port)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        while "Connected to" not in (line := proc.stdout.readline()):
            assert line
        server.stop()
        while "Disconnected from" not in (line := proc.stdout.readline()):
            assert line
        proc.stdin.close()
        assert proc.wait(WAIT_S) == ExitCode.SESSION_ENDED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- 130 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["listen"], ["chat", "--nick", "bot"], ["client", "--connect"]]
)
def test_ctrl_c_ends_a_session_with_130(server: ServerThread, command: list[str]) -> None:
    proc = subprocess.Popen(
        switchboard_command(*command, "--port", str(server.port)),
        stdin=subprocess.PIPE,  # left open: piped chat and client wait for the next line
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        # The command's start (4-5 s alone with both CPUs busy) is in this wait.
        server.wait_for(lambda s: s.directory.client_count() == 1, STARTUP_TIMEOUT)
        if command[0] == "chat":
            server.wait_for(lambda s: s.directory.room_count() == 1, STARTUP_TIMEOUT)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == ExitCode.INTERRUPTED == 130, err
    assert "Traceback" not in err


# --- one source ------------------------------------------------------------------------------


def all_parsers() -> Iterator[tuple[str, object]]:
    import argparse

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, object]]:
        yield prefix, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(f"{prefix} {name}".strip(), sub)

    yield from walk("", build_parser())


def test_every_help_ends_with_the_table() -> None:
    parsers = dict(all_parsers())
    for name in ("time", "name", "list", "send", "listen", "client", "chat", "bench", "serve"):
        assert name in parsers
    for name, parser in parsers.items():
        text = parser.format_help()  # type: ignore[attr-defined]
        assert text.rstrip().endswith(epilog()), name


def test_help_in_a_subprocess_prints_the_table() -> None:
    result = run_cli("listen", "--help")
    assert result.returncode == 0
    codes = re.findall(r"^  (\d+) ", result.stdout.split("exit codes:")[1], re.M)
    assert [int(c) for c in codes] == [0, 1, 2, 3, 130]


def test_the_readme_prints_the_same_table() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "\n".join(table_lines()) in readme
