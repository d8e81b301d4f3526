"""``switchboard client`` in a real pseudo-terminal (pexpect) and with piped stdin, against a
real server on loopback."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.network import free_port
from support.servers import ServerThread, cli_env, switchboard_command
from support.terminals import spawn_terminal
from switchboard.cli.interactive import LEAVE_HINT
from switchboard.client import Client

pexpect = pytest.importorskip("pexpect")

#: Seconds to wait for any expected output.
WAIT_S = 10.0
PROMPT_OFFLINE = "not connected"
#: The prompt's end; prompt_toolkit draws the space after it with a cursor movement.
PROMPT_END = "]>"
CONNECTED = re.compile(r"you are client #(\d+)")
#: SGR sequences that set a foreground or background colour (not bold/dim/reset).
COLOUR_SGR = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;\d+)*m")

MENU_CONNECTED = ("2. Disconnect", "3. Get server time", "4. Get server name",
                  "5. List clients", "6. Send message")  # fmt: skip

Spawn = Callable[..., "pexpect.spawn"]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(*args, **env)``: ``switchboard client ARGS`` in a 40x120 pseudo-terminal."""
    children: list[pexpect.spawn] = []

    def start(*args: str, **env: str) -> pexpect.spawn:
        child = spawn_terminal(
            "client", *args, state_home=tmp_path / "state", dimensions=(40, 120), **env
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def screen(child: pexpect.spawn) -> str:
    """Everything the terminal was sent so far."""
    return str(child.logfile_read.getvalue())


def wait_prompt(child: pexpect.spawn) -> str:
    """Everything printed up to the next prompt."""
    child.expect_exact(PROMPT_END)
    return str(child.before)


def connected_id(child: pexpect.spawn) -> int:
    child.expect(CONNECTED)
    return int(child.match.group(1))


def finish(child: pexpect.spawn, line: str = "7") -> None:
    child.sendline(line)
    child.expect_exact("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# --- the terminal ------------------------------------------------------------------------------


def expect_menu(child: pexpect.spawn, connected: bool) -> None:
    """The menu, printed as one block (it may land above an already drawn prompt)."""
    child.expect_exact("1. Connect")
    child.expect_exact("7. Exit")
    block = str(child.before)
    for entry in MENU_CONNECTED:
        assert (entry in block) is connected, (entry, block)


def test_menu_in_both_states(spawn: Spawn, server: ServerThread) -> None:
    child = spawn()
    expect_menu(child, connected=False)
    child.expect_exact(PROMPT_OFFLINE)

    child.sendline("3")  # not available while disconnected
    child.expect_exact("Not connected: choose 1 (connect) first.")
    child.sendline("1")
    child.expect_exact("Server address [127.0.0.1]:")
    child.sendline("")
    child.expect_exact("Port [7000]:")
    child.sendline(str(server.port))
    child.expect(r"Connected to 127\.0\.0\.1:\d+: server 'test-server', you are client #(\d+)")
    my_id = int(child.match.group(1))
    assert my_id in server.client_ids()
    expect_menu(child, connected=True)
    child.expect_exact(f"#{my_id} 127.0.0.1:{server.port}")  # the prompt shows the state

    child.sendline("2")
    child.expect_exact(f"Disconnected from 127.0.0.1:{server.port}.")
    expect_menu(child, connected=False)
    child.expect_exact(PROMPT_OFFLINE)
    server.wait_for(lambda s: my_id not in s.directory.client_by_id)
    finish(child)


def test_each_option_by_number(spawn: Spawn, server: ServerThread) -> None:
    child = spawn("--port", str(server.port))  # --port connects at once
    my_id = connected_id(child)
    wait_prompt(child)

    child.sendline("4")
    child.expect_exact("Server name: test-server")

    child.sendline("5")
    child.expect_exact("1 client(s) connected")
    child.expect_exact("<- you")
    assert "127.0.0.1" in str(child.before)

    child.sendline("3")
    child.expect_exact("How many requests [1]:")
    child.sendline("100")
    child.expect_exact("100. ")
    child.expect(r"100/100 responses in \d+ ms")

    child.sendline("6")
    child.expect_exact(f"Target id or nickname (last list: {my_id}):")
    child.sendline(str(my_id))
    child.expect_exact("Text:")
    child.sendline("hello there, 你好 👍")
    # The message to ourselves and the answer to the SEND race each other to the screen;
    # the receipt always follows the answer.
    arrival = rf"message from #{my_id} \(127\.0\.0\.1:\d+\) at \d\d:\d\d:\d\d: hello there"
    forwarded = rf"message \d+ to #{my_id}: forwarded"
    first = child.expect([arrival, forwarded])
    child.expect([forwarded, arrival][first])
    child.expect_exact(f"to #{my_id}: delivered")

    child.sendline("6")
    child.expect_exact("Target id")
    child.sendline("999")
    child.expect_exact("Text:")
    child.sendline("anyone?")
    child.expect_exact("No client #999 is connected — list the clients first.")

    child.sendline("2")
    child.expect_exact("Disconnected from")
    finish(child)
    assert server.client_ids() == [] or my_id not in server.client_ids()


def test_typed_commands_and_time_100(spawn: Spawn, server: ServerThread) -> None:
    other = Client("127.0.0.1", server.port, nick="bob")
    try:
        child = spawn()
        wait_prompt(child)
        child.sendline(f"connect 127.0.0.1 {server.port}")
        my_id = connected_id(child)
        child.sendline("time 100")
        child.expect_exact("100/100 responses in")
        before = str(child.before)
        assert len(re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", before)) == 100
        child.sendline("name")
        child.expect_exact("Server name: test-server")
        child.sendline("list")
        child.expect_exact("2 client(s) connected")
        child.expect_exact("bob")
        child.sendline(f"send {other.client_id} hello there")
        child.expect_exact(f"to #{other.client_id}: forwarded")
        child.expect_exact(f"to #{other.client_id}: delivered")
        got = other.next_indication(WAIT_S)
        assert got is not None and getattr(got, "text", None) == "hello there"
        assert getattr(got, "sender_id", None) == my_id
        child.sendline("send BOB by name")  # a nickname: the server resolves it
        child.expect_exact(f"to BOB (#{other.client_id}): forwarded")
        got = other.next_indication(WAIT_S)
        assert got is not None and getattr(got, "text", None) == "by name"
        child.sendline("send nobody x")
        child.expect_exact("Nobody is connected as nobody — list the clients first.")
        other.join("lobby")
        child.sendline("rooms")
        child.expect_exact("1 room(s):")
        child.expect_exact("lobby  1 member")
        child.sendline("8")
        child.expect_exact("1 room(s):")
        child.sendline("help")
        child.expect_exact("send TO TEXT")
        child.sendline("lsit")
        child.expect_exact("did you mean 'list'?")
        child.sendline("disconnect")
        child.expect_exact(PROMPT_OFFLINE)
        finish(child, "quit")
    finally:
        other.close()


def test_message_arrives_while_typing(spawn: Spawn, server: ServerThread) -> None:
    child = spawn("--port", str(server.port))
    my_id = connected_id(child)
    wait_prompt(child)
    child.send("na")  # half a command, no Enter
    child.expect_exact("na")
    with Client("127.0.0.1", server.port, nick="alice") as alice:
        alice.send(my_id, "ping from alice")
        child.expect(rf"message from #{alice.client_id} \(127\.0\.0\.1:\d+, alice\) at ")
        child.expect_exact("ping from alice")
        # The prompt is redrawn below the notice with the half-typed line intact ...
        child.expect_exact(PROMPT_END)
        child.expect_exact("na")
    # ... and finishing it runs the whole command.
    child.send("me\r")
    child.expect_exact("Server name: test-server")
    finish(child)


def test_server_shutting_down_while_connected(
    spawn: Spawn, server_factory: Callable[..., ServerThread]
) -> None:
    server = server_factory()
    child = spawn("--port", str(server.port))
    connected_id(child)
    wait_prompt(child)
    server.stop()
    child.expect_exact("the server is shutting down: test finished")
    child.expect_exact(f"Disconnected from 127.0.0.1:{server.port}: server shut down")
    child.expect_exact("7. Exit")
    child.expect_exact(PROMPT_OFFLINE)  # the prompt itself went back to the disconnected state
    child.sendline("4")
    child.expect_exact("Not connected: choose 1 (connect) first.")
    finish(child)
    assert "Traceback" not in screen(child)


def test_connecting_where_nothing_listens(spawn: Spawn) -> None:
    port = free_port()
    child = spawn()
    wait_prompt(child)
    child.sendline(f"connect 127.0.0.1 {port}")
    child.expect_exact(f"Cannot connect: connection refused by 127.0.0.1:{port}")
    child.expect_exact(PROMPT_OFFLINE)
    child.sendline("help")  # the menu is still usable
    child.expect_exact("connect [HOST] [PORT]")
    finish(child)
    assert "Traceback" not in screen(child)


def test_ctrl_c_cancels_ctrl_d_exits(spawn: Spawn) -> None:
    child = spawn()
    wait_prompt(child)
    child.send("garbage")
    child.expect_exact("garbage")
    child.sendintr()  # the line is thrown away, the prompt comes back
    child.expect_exact(PROMPT_OFFLINE)
    child.sendline("help")  # past the redraw of the abandoned line: a fresh prompt
    child.expect_exact("connect [HOST] [PORT]")
    wait_prompt(child)
    assert LEAVE_HINT not in screen(child)  # not for a line that had text
    child.sendintr()  # on an empty line: how to leave
    child.expect_exact(LEAVE_HINT)
    child.expect_exact(PROMPT_OFFLINE)
    child.sendline("1")
    child.expect_exact("Server address [127.0.0.1]:")
    child.sendintr()
    child.expect_exact("Cancelled.")
    child.expect_exact(PROMPT_OFFLINE)
    assert "Unknown command" not in screen(child)  # the line was thrown away
    assert screen(child).count(LEAVE_HINT) == 1
    child.sendcontrol("d")
    child.expect_exact("Bye.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_terminal_line_not_utf8_is_ignored(spawn: Spawn, server: ServerThread) -> None:
    child = spawn()
    wait_prompt(child)
    # prompt_toolkit decodes the byte 0xff as a lone surrogate (surrogateescape).
    os.write(child.child_fd, b"connect \xff 7000\r")
    child.expect_exact("Line ignored: it is not valid UTF-8.")
    child.expect_exact(PROMPT_OFFLINE)
    child.sendline(f"connect 127.0.0.1 {server.port}")  # the session goes on
    connected_id(child)
    finish(child)
    assert "Traceback" not in screen(child)


def test_completion_and_history(spawn: Spawn, server: ServerThread) -> None:
    child = spawn("--port", str(server.port))
    connected_id(child)
    wait_prompt(child)
    child.send("na\t")  # tab completes the only match
    child.expect_exact("name")
    child.send("\r")
    child.expect_exact("Server name: test-server")
    wait_prompt(child)
    child.send("\x1b[A")  # up arrow recalls it
    child.expect_exact("name")
    child.send("\r")
    child.expect_exact("Server name: test-server")
    finish(child)
    history = Path(child.env["XDG_STATE_HOME"]) / "switchboard" / "client_history"
    assert "+name" in history.read_text(encoding="utf-8")


def test_unwritable_history_is_not_fatal(spawn: Spawn, tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    child = spawn(XDG_STATE_HOME=str(blocker))  # .../file-not-dir/switchboard cannot be made
    wait_prompt(child)
    finish(child)


def test_colour_and_no_color(spawn: Spawn, server: ServerThread) -> None:
    for env, coloured in (({}, True), ({"NO_COLOR": "1"}, False)):
        child = spawn("--port", str(server.port), **env)
        connected_id(child)
        wait_prompt(child)
        child.sendline("3 9")  # a menu number with its argument
        child.expect_exact("9/9 responses in")
        finish(child)
        assert (COLOUR_SGR.search(screen(child)) is not None) is coloured, env


# --- piped stdin ---------------------------------------------------------------------------------


def run_piped(*args: str, stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        switchboard_command("client", *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(**env),
    )


def run_piped_bytes(*args: str, stdin: bytes, **env: str) -> tuple[int, list[str], str]:
    """stdin as raw bytes; the exit code, the lines of stdout, and stderr."""
    result = subprocess.run(
        switchboard_command("client", *args),
        input=stdin,
        capture_output=True,
        timeout=30,
        env=cli_env(**env),
    )
    out = result.stdout.decode("utf-8")
    return result.returncode, out.splitlines(), result.stderr.decode("utf-8", "replace")


def test_piped_session(server: ServerThread) -> None:
    script = "\n".join(
        [
            "3",  # not connected yet
            "1",  # connect: address and port answered on the next lines
            "",
            str(server.port),
            "4",
            "5",
            "3",
            "5",
            "6",
            "1",
            "hello 你好 👍",
            "send 42 nobody",
            "2",
            "7",
        ]
    )
    result = run_piped(stdin=script + "\n")
    # Piped, the exit code is the first failure's: "3" before connecting (not connected).
    assert result.returncode == 2, result.stderr
    out = result.stdout
    assert "\x1b" not in out
    assert result.stderr == ""
    lines = out.splitlines()
    assert lines[1:3] == ["1. Connect", "7. Exit"]
    assert "Not connected: choose 1 (connect) first." in lines
    assert any(re.fullmatch(r"Connected to .*you are client #1 \(seen as 127\.0\.0\.1:\d+\)\.", ln)
               for ln in lines)  # fmt: skip
    assert "Server name: test-server" in lines
    assert "1 client(s) connected" in lines
    assert sum(1 for ln in lines if re.fullmatch(r"\d\. \d{4}-\d\d-\d\dT.*", ln)) == 5
    assert "5/5 responses in" in out
    assert any(re.fullmatch(r"message from #1 \(127\.0\.0\.1:\d+\) at [\d:]+: hello 你好 👍", ln)
               for ln in lines)  # fmt: skip
    forwarded = lines.index("message 1 to #1: forwarded")
    assert lines.index("message 1 to #1: delivered") > forwarded
    assert "No client #42 is connected — list the clients first." in lines
    assert lines[-1] == "Bye."
    assert lines[-4:-1] == [f"Disconnected from 127.0.0.1:{server.port}.", "1. Connect", "7. Exit"]


def test_piped_eof_disconnects(server: ServerThread) -> None:
    result = run_piped("--port", str(server.port), stdin="send 1 to myself\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # the receipt of a message just sent is awaited before disconnecting at the end of input
    assert "message 1 to #1: delivered" in lines
    assert lines[-2:] == [f"Disconnected from 127.0.0.1:{server.port}.", "Bye."]
    server.wait_for(lambda s: not s.directory.client_by_id)


def test_piped_connect_refused_and_bad_input() -> None:
    port = free_port()
    result = run_piped(stdin=f"connect 127.0.0.1 {port}\nconnect 127.0.0.1 http\ntime 5\n")
    assert result.returncode == 2  # it never connected: a script can tell
    lines = result.stdout.splitlines()
    assert f"Cannot connect: connection refused by 127.0.0.1:{port}" in lines
    assert "'http' is not a port number (1-65535)." in lines
    assert "Not connected: choose 1 (connect) first." in lines
    assert "Traceback" not in result.stdout + result.stderr


# stdin decoded leniently (surrogateescape, as under C.UTF-8) and strictly (as under most
# UTF-8 locales, or PYTHONIOENCODING): a byte that is not UTF-8 spoils its line, not the session.
@pytest.mark.parametrize("env", [{}, {"PYTHONIOENCODING": "utf-8"}])
def test_piped_bytes_not_utf8_and_bad_host_names(server: ServerThread, env: dict[str, str]) -> None:
    script = (
        b"connect \xff 7000\n"
        b"connect a..b 7000\n"
        b"connect " + b"x" * 64 + b".org 7000\n"
        b"connect 127.0.0.1 %d\n"
        b"send 1 a\xffb\n"
        b"time\n"
    ) % server.port
    code, lines, err = run_piped_bytes(stdin=script, **env)
    assert (code, err) == (2, "")  # the first failure: a host name not valid UTF-8
    assert lines.count("Line ignored: it is not valid UTF-8.") == 2
    assert "'a..b' is not a valid host name." in lines
    assert f"'{'x' * 64}.org' is not a valid host name." in lines
    assert any(line.startswith("Connected to 127.0.0.1:") for line in lines)
    assert not any(line.startswith("message 1 to #1") for line in lines)  # nothing sent
    assert "1/1 responses in" in "\n".join(lines)
    assert lines[-1] == "Bye."


def test_host_and_nick_arguments_not_utf8(server: ServerThread) -> None:
    # argv decodes the byte 0xff as "\udcff"; subprocess encodes it back to 0xff.
    result = run_piped("--host", "\udcff", "--port", str(server.port),
                       stdin=f"connect 127.0.0.1 {server.port}\nname\n")  # fmt: skip
    assert (result.returncode, result.stderr) == (2, "")  # the --host connect failed
    lines = result.stdout.splitlines()
    assert lines[1] == "Not a valid host name: it is not valid UTF-8."
    assert "Server name: test-server" in lines  # the session went on
    result = run_piped("--nick", "\udcff", stdin="")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("argument --nick: not valid UTF-8")
    assert "Traceback" not in result.stderr


def test_a_token_server_refuses_at_connect_with_what_to_do(
    server_factory: Callable[..., ServerThread], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n", encoding="utf-8")
    server = server_factory(auth_token_file=str(tokens))
    where = f"127.0.0.1:{server.port}"
    required = f"Cannot connect to {where}: the server requires a token"
    hint = "pass --token or set $SWITCHBOARD_TOKEN."
    for args, words in [
        ((), f"{required} (AUTH_REQUIRED): {hint}"),
        (("--nick", "bob"), f"{required} (AUTH_FAILED): {hint}"),  # HELLO with no token
        (("--token", "wrong"), f"Cannot connect to {where}: the server refused the token "
                               "(AUTH_FAILED): check --token or $SWITCHBOARD_TOKEN."),
    ]:  # fmt: skip
        result = run_piped("--port", str(server.port), *args, stdin="name\n")
        assert (result.returncode, result.stderr) == (2, ""), args  # no session: exit 2
        lines = result.stdout.splitlines()
        assert words in lines, (args, lines)
        assert not any(line.startswith(("Connected", "Disconnected")) for line in lines), lines
        assert "Not connected: choose 1 (connect) first." in lines  # known at connect
    result = run_piped("--port", str(server.port), stdin="name\n", SWITCHBOARD_TOKEN="s3cret")
    assert "Server name: test-server" in result.stdout.splitlines(), result.stdout
    assert result.returncode == 0
