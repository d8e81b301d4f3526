"""The one-shot commands (time, name, list, send, listen) in subprocesses, against the server
in-process and as ``switchboard serve``."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.commands import Follower, assert_one_clear_error_line, run_cli_from_connect
from support.network import free_port
from support.servers import ServerProcess, ServerThread, cli_env, run_cli
from switchboard.client import Client
from switchboard.protocol import FrameDecoder, Message, Receipt, ReceiptStatus, encode
from switchboard.protocol import Welcome as WelcomeFrame

HOST = "127.0.0.1"
TEXT = "你好，世界！👋🏽🎉 Grüße"


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


# --- time -------------------------------------------------------------------------------------


def test_time(server: ServerThread) -> None:
    before = dt.datetime.now(dt.UTC)
    result = run_cli("time", port=server.port)
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert len(out) == 2
    stamp = dt.datetime.fromisoformat(out[0].split(" ")[0])
    assert stamp.tzinfo is not None
    assert abs((stamp - before).total_seconds()) < 10
    assert out[1].startswith("1/1 responses in ") and out[1].endswith(" ms")


def test_time_count_pipelines_and_reports(server: ServerThread) -> None:
    result = run_cli("time", "--count", "100", port=server.port)
    assert result.returncode == 0, result.stderr
    out = lines(result)
    assert len(out) == 101
    for line in out[:100]:
        dt.datetime.fromisoformat(line.split(" ")[0])
    summary = out[100].split()
    assert summary[:3] == ["100/100", "responses", "in"] and summary[4] == "ms"
    assert float(summary[3]) >= 0


def test_time_json(server: ServerThread) -> None:
    result = run_cli("time", "--count", "3", "--json", port=server.port)
    assert result.returncode == 0, result.stderr
    objs = [json.loads(line) for line in lines(result)]
    assert len(objs) == 3
    for obj in objs:
        assert set(obj) == {"epoch_ms", "iso", "timezone"}
        assert abs(obj["epoch_ms"] - time.time() * 1000) < 10_000
        iso = dt.datetime.fromisoformat(obj["iso"])
        assert int(iso.timestamp() * 1000) == obj["epoch_ms"]
        assert obj["timezone"] == time.localtime(obj["epoch_ms"] / 1000).tm_zone


@pytest.mark.parametrize("count", ["0", "-3"])
def test_time_count_must_be_positive(server: ServerThread, count: str) -> None:
    result = run_cli("time", "--count", count, port=server.port)
    assert_one_clear_error_line(result, 2)
    assert result.stdout == ""


# --- name and list ------------------------------------------------------------------------------


def test_name(server_factory: Callable[..., ServerThread]) -> None:
    st = server_factory(name="Zentrale ☎")
    result = run_cli("name", port=st.port)
    assert (result.returncode, result.stdout) == (0, "Zentrale ☎\n")
    result = run_cli("name", "--json", port=st.port)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"name": "Zentrale ☎"}


def test_list_json(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5, nick="Ada") as ada:
        result = run_cli("list", "--json", port=server.port)
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert list(obj) == ["clients"]
    clients = obj["clients"]
    assert [c["id"] for c in clients] == sorted(c["id"] for c in clients)
    assert len(clients) == 2
    first, me = clients
    for c in clients:
        assert set(c) == {"id", "ip", "port", "nick", "connected_at", "self"}
        assert c["ip"] == HOST and isinstance(c["port"], int)
        dt.datetime.fromisoformat(c["connected_at"])
    assert (first["id"], first["nick"], first["port"], first["self"]) == (
        ada.client_id,
        "Ada",
        ada.welcome.port,
        False,
    )
    assert me["nick"] is None and me["self"] is True


def test_list_into_a_pipe_is_tab_separated_with_a_header(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5, nick="Ada") as ada:
        piped = run_cli("list", port=server.port)
        forced = run_cli("list", "--format", "tsv", port=server.port)
    for result in (piped, forced):
        assert result.returncode == 0, result.stderr
        assert "\x1b[" not in result.stdout  # no colour codes into a pipe
        header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
        assert header == ["id", "ip", "port", "nickname", "connected_since", "self"]
        assert len(rows) == 2 and all(len(row) == 6 for row in rows)
        assert rows[0][:4] == [str(ada.client_id), HOST, str(ada.welcome.port), "Ada"]
        dt.datetime.fromisoformat(rows[0][4])
        assert (rows[0][5], rows[1][3], rows[1][5]) == ("no", "-", "yes")


def list_on_a_terminal(port: int, columns: int, *args: str) -> str:
    """``switchboard list`` in a pseudo-terminal ``columns`` wide: what it showed."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard", "list", "--port", str(port), *args],
        env=cli_env(TERM="xterm-256color", COLUMNS=str(columns), LINES="40"),
        encoding="utf-8",
        timeout=10,
        dimensions=(40, columns),
    )
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    return re.sub(r"\x1b\[[0-9;]*m", "", str(child.before)).replace("\r\n", "\n")


def test_list_on_a_narrow_terminal_cuts_no_id_address_or_port(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5, nick="Ada") as ada:
        wide = list_on_a_terminal(server.port, 120)
        narrow = list_on_a_terminal(server.port, 40)
        forced = list_on_a_terminal(server.port, 120, "--format", "tsv")
    assert "┃ id ┃ ip" in wide and "<- you" in wide  # a terminal wide enough: the table
    lines = narrow.splitlines()
    assert all(len(line) <= 40 for line in lines), narrow
    assert "…" not in narrow
    # Each of these whole, on a line of its own: nothing cut or folded.
    for label, value in (("id", ada.client_id), ("ip", HOST), ("port", ada.welcome.port)):
        assert any(re.fullmatch(rf"{label}\s+{value}\s*", line) for line in lines), narrow
    assert any(re.fullmatch(r"nickname\s+Ada\s*", line) for line in lines), narrow
    assert forced.splitlines()[0] == "id\tip\tport\tnickname\tconnected_since\tself"


def test_list_shows_nicknames_as_chosen_not_as_markup(server: ServerThread) -> None:
    """A nickname is a peer's string: shown literally, never read as the table's markup
    (``[/bold]`` used to end ``list`` with rich's MarkupError)."""
    with (
        Client(HOST, server.port, timeout=5, nick="[/bold]x"),
        Client(HOST, server.port, timeout=5, nick="[red]y"),
    ):
        result = run_cli("list", port=server.port)
    assert result.returncode == 0, result.stderr
    assert "[/bold]x" in result.stdout and "[red]y" in result.stdout


# --- send ---------------------------------------------------------------------------------------


def test_send_forwards_unicode_text(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as target:
        result = run_cli("send", str(target.client_id), TEXT, "--json", port=server.port)
        assert result.returncode == 0, result.stderr
        obj = json.loads(result.stdout)
        assert obj["to"] == target.client_id and obj["status"] == "forwarded"
        msg = target.next_indication(timeout=5)
        assert isinstance(msg, Message) and msg.text == TEXT


def test_send_waits_for_the_delivered_receipt(server: ServerThread) -> None:
    with Client(HOST, server.port, timeout=5) as target:
        result = run_cli(
            "send", str(target.client_id), TEXT, "--wait-receipt", "5", "--json", port=server.port
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "delivered"
        result = run_cli(
            "send", str(target.client_id), "plain", "--wait-receipt", "5", port=server.port
        )
        assert result.returncode == 0, result.stderr
        assert "delivered" in result.stdout and f"#{target.client_id}" in result.stdout


def test_send_reports_not_delivered(server: ServerThread, follow: Callable[..., Follower]) -> None:
    # A hand-driven target that reads the message, never acknowledges it, and hangs up.
    with socket.create_connection((HOST, server.port), timeout=5) as raw:
        decoder = FrameDecoder()

        def next_frame() -> Any:
            while True:
                for event in decoder:
                    return event
                data = raw.recv(65536)
                assert data
                decoder.feed(data)

        welcome = next_frame()
        assert isinstance(welcome, WelcomeFrame)
        sender = follow(
            "send",
            str(welcome.client_id),
            TEXT,
            "--wait-receipt",
            "10",
            "--json",
            "--port",
            str(server.port),
        )
        assert isinstance(next_frame(), Message)
    assert sender.wait(10) == 1  # ExitCode.REFUSED: a message not delivered
    assert json.loads(sender.line())["status"] == "not-delivered"


def test_send_to_an_unknown_id(server: ServerThread) -> None:
    result = run_cli("send", "4242", "hello", "--json", port=server.port)
    assert result.returncode == 1
    obj = json.loads(result.stdout)
    assert obj["error"]["code"] == "NO_SUCH_CLIENT" and "4242" in obj["error"]["message"]
    result = run_cli("send", "4242", "hello", port=server.port)
    err = assert_one_clear_error_line(result, 1)
    assert "NO_SUCH_CLIENT" in err and result.stdout == ""


def test_send_text_too_long(server: ServerThread) -> None:
    result = run_cli("send", "1", "x" * 4097, "--json", port=server.port)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["error"]["code"] == "TEXT_TOO_LONG"


# --- listen -----------------------------------------------------------------------------------


def test_listen_json_lines(server: ServerThread, follow: Callable[..., Follower]) -> None:
    listener = follow(
        "listen", "--json", "--nick", "ear", "--no-reconnect", "--port", str(server.port)
    )
    welcome = json.loads(listener.line())
    assert welcome["event"] == "welcome" and welcome["server"] == "test-server"
    listener_id = welcome["id"]
    with Client(HOST, server.port, timeout=5, nick="mouth") as sender:
        ok = sender.send(listener_id, TEXT)
        msg = json.loads(listener.line())
        assert msg["event"] == "message"
        assert msg["message_id"] == ok.message_id
        assert (msg["from"], msg["from_ip"], msg["from_port"], msg["nick"]) == (
            sender.client_id,
            sender.welcome.ip,
            sender.welcome.port,
            "mouth",
        )
        assert msg["text"] == TEXT
        dt.datetime.fromisoformat(msg["sent_at"])
        # The listener acknowledged automatically.
        assert sender.wait_receipt(ok.message_id, timeout=5) == ReceiptStatus.DELIVERED
        assert isinstance(sender.next_indication(timeout=5), Receipt)
    server.stop()
    rest = [json.loads(listener.line()) for _ in range(2)]
    assert rest[0] == {"event": "shutdown", "reason": "test finished"}
    assert rest[1]["event"] == "disconnected"
    assert listener.wait(10) == 3  # ExitCode.SESSION_ENDED


def test_listen_text_is_flushed_line_by_line(
    server: ServerThread, follow: Callable[..., Follower]
) -> None:
    listener = follow("listen", "--port", str(server.port))
    first = listener.line()  # arrives while the command keeps running: not block-buffered
    assert "test-server" in first and listener.proc.poll() is None
    listener_id = int(first.rsplit("#", 1)[1])
    with Client(HOST, server.port, timeout=5) as sender:
        sender.send(listener_id, TEXT)
        line = listener.line()
        assert TEXT in line and f"#{sender.client_id}" in line
        assert "\x1b[" not in line


def test_listen_escapes_control_characters_a_peer_sent(
    server: ServerThread, follow: Callable[..., Follower]
) -> None:
    listener = follow("listen", "--port", str(server.port))
    listener_id = int(listener.line().rsplit("#", 1)[1])
    with Client(HOST, server.port, timeout=5) as sender:
        sender.send(listener_id, "a\x1b[2Jb\nc\x07")  # clear the screen, a new line, a bell
        line = listener.line()
        # One line, the sequences shown rather than obeyed.
        assert line.endswith(": a\\x1b[2Jb\\nc\\x07\n"), repr(line)
        assert "\x1b" not in line and "\x07" not in line
        sender.send(listener_id, "next")
        assert listener.line().endswith(": next\n")  # the "c" did not arrive as a line of its own


def test_listen_neutralises_bidi_controls_a_peer_sent(
    server: ServerThread, follow: Callable[..., Follower]
) -> None:
    """A right-to-left override would show "invoice_\u202efdp.exe" as "invoice_exe.pdf", and
    reverse whatever the terminal prints after it on the line."""
    listener = follow("listen", "--port", str(server.port))
    listener_id = int(listener.line().rsplit("#", 1)[1])
    with Client(HOST, server.port, timeout=5) as sender:
        sender.send(listener_id, "invoice_\u202efdp.exe \u2067isolated\u2069 \u200fmark")
        line = listener.line()
        assert line.endswith(": invoice_\\u202efdp.exe \\u2067isolated\\u2069 \\u200fmark\n"), repr(
            line
        )
        assert not set(line) & {"\u202e", "\u2067", "\u2069", "\u200f"}


def test_listen_json_escapes_bidi_and_control_characters_yet_decodes_to_the_text(
    server: ServerThread, follow: Callable[..., Follower]
) -> None:
    """`listen --json` on a terminal is read by people too: a right-to-left override or an
    escape sequence in a peer's text goes out as a JSON escape, which any JSON reader turns
    back into the very text sent (before, both reached the terminal raw)."""
    listener = follow("listen", "--json", "--port", str(server.port))
    listener_id = json.loads(listener.line())["id"]
    text = "invoice_\u202efdp.exe \x1b[2J \u2067x\u2069 \u200f 你好 👋"
    with Client(HOST, server.port, timeout=5) as sender:
        sender.send(listener_id, text)
        line = listener.line()
        assert not set(line) & {"\u202e", "\x1b", "\u2067", "\u2069", "\u200f"}, repr(line)
        assert "你好 👋" in line  # printable text stays readable
        assert json.loads(line)["text"] == text


# --- connection failures and the environment ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["time"], ["name"], ["list", "--json"], ["send", "1", "x"], ["listen"]],
    ids=["time", "name", "list", "send", "listen"],
)
def test_connection_refused_is_one_line_and_exit_2(args: list[str]) -> None:
    result = run_cli(*args, port=free_port())
    err = assert_one_clear_error_line(result, 2)
    assert "refused" in err
    assert result.stdout == ""


def test_connect_timeout_is_one_line_and_exit_2(unanswered_port: int) -> None:
    # A listener that never accepts, with its accept queue full: the SYN goes unanswered.
    # Bounded by --timeout (5 s without it); timed from its SYN, not from its start (4-5 s
    # alone on a loaded machine).
    run = run_cli_from_connect("name", "--timeout", "0.5", port=unanswered_port)
    err = assert_one_clear_error_line(run.result, 2)
    assert "timed out" in err
    assert run.seconds < 4.5, run.seconds  # not the default 5 s


def test_host_and_port_from_the_environment(server: ServerThread) -> None:
    env = cli_env(SWITCHBOARD_HOST=HOST, SWITCHBOARD_PORT=str(server.port))
    result = run_cli("name", env=env)
    assert (result.returncode, result.stdout) == (0, "test-server\n")
    # The option wins over the environment.
    env = cli_env(SWITCHBOARD_HOST=HOST, SWITCHBOARD_PORT=str(free_port()))
    result = run_cli("name", port=server.port, env=env)
    assert (result.returncode, result.stdout) == (0, "test-server\n")
    result = run_cli("name", env=cli_env(SWITCHBOARD_PORT="seven"))
    err = assert_one_clear_error_line(result, 2)
    assert "SWITCHBOARD_PORT" in err


# --- against ``switchboard serve`` --------------------------------------------------------------


def test_commands_against_a_server_process(server_process: ServerProcess) -> None:
    port = server_process.port
    assert run_cli("name", port=port).stdout == "test-server\n"
    with Client(HOST, port, timeout=5) as target:
        result = run_cli(
            "send", str(target.client_id), TEXT, "--json", "--wait-receipt", "5", port=port
        )
        assert json.loads(result.stdout) == {
            "to": target.client_id,
            "status": "delivered",
            "message_id": json.loads(result.stdout)["message_id"],
        }
        msg = target.next_indication(timeout=5)
        assert isinstance(msg, Message) and msg.text == TEXT
        listed = json.loads(run_cli("list", "--json", port=port).stdout)["clients"]
        assert target.client_id in [c["id"] for c in listed]
    server_process.wait_for_log(rf"forward #\d+ -> #{target.client_id} ")


def test_a_server_that_never_answers_is_a_clear_timeout() -> None:
    """WELCOME arrives, the answer never does: exit 1 (ExitCode.REFUSED: no answer within
    --timeout) after --timeout, one stderr line."""
    with socket.create_server((HOST, 0)) as listener:
        port = listener.getsockname()[1]
        done = threading.Event()

        def welcome_then_silence() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(encode(WelcomeFrame(1, "mute", 1, 10_000, 65536, 4096, 9, HOST, 1)))
                done.wait(20)

        threading.Thread(target=welcome_then_silence, daemon=True).start()
        run = run_cli_from_connect("name", "--timeout", "0.5", port=port)
        done.set()
    err = assert_one_clear_error_line(run.result, 1)
    assert "0.5" in err and run.result.stdout == ""
    assert run.seconds < 5, run.seconds  # from its connection: not the default 10 s
