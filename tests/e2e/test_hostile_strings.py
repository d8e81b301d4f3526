"""Every command prints what a peer chose through the one escaping policy (``safe``).

A hostile server (scripted here, since the real one refuses such names) answers every
request with the same hostile string: C0 and C1 controls, an ANSI sequence that clears the
screen, a bell, a right-to-left override, a line separator, and rich markup, one tag of
which ("[/x]") makes rich raise when it is read as markup.  Each command, run as a real
subprocess, must show that string exactly as ``safe`` writes it, and nothing unsafe raw.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from support.servers import run_cli
from switchboard.display import UNSAFE, safe
from switchboard.protocol import (
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    HelloOk,
    HelloRequest,
    Joined,
    JoinOk,
    JoinRequest,
    ListOk,
    ListRequest,
    Message,
    NameOk,
    NameRequest,
    NickChanged,
    NickOk,
    NickRequest,
    PingOk,
    PingRequest,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendRequest,
    Shutdown,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

HOST = "127.0.0.1"
HOSTILE = "a\x1b[2Jb\x07c\x9bd\u202eef\u2028g\n[bold]h[/x]"
SHOWN = safe(HOSTILE)


def _answer(frame: Frame) -> list[Frame]:
    rid = frame.request_id
    if isinstance(frame, HelloRequest):
        return [HelloOk(1, 1, frame.nick, request_id=rid)]
    if isinstance(frame, NickRequest):
        return [NickOk(frame.nick, request_id=rid)]
    if isinstance(frame, NameRequest):
        return [NameOk(HOSTILE, request_id=rid)]
    if isinstance(frame, TimeRequest):
        return [TimeOk(1_700_000_000_000, 0, HOSTILE, request_id=rid)]
    if isinstance(frame, ListRequest):
        return [ListOk(frame.room, (ClientInfo(2, HOST, 5000, HOSTILE, 0),), request_id=rid)]
    if isinstance(frame, RoomsRequest):
        return [RoomsOk(1, 0, (RoomInfo(HOSTILE, 1, 0),), request_id=rid)]
    if isinstance(frame, PingRequest):
        return [PingOk(request_id=rid)]
    if isinstance(frame, JoinRequest):
        # listen: everything a peer can choose arrives, then the server goes with a reason.
        return [
            JoinOk(frame.room, 2, 0, request_id=rid),
            Joined(HOSTILE, 2, HOSTILE),
            Message(9, 2, HOST, 5000, HOSTILE, HOSTILE, 1_700_000_000_000, 0, HOSTILE),
            NickChanged(2, HOSTILE, HOSTILE),
            Shutdown(HOSTILE),
        ]
    if isinstance(frame, SendRequest):
        return [ErrorResponse(ErrorCode.NO_SUCH_CLIENT, HOSTILE, HOSTILE, request_id=rid)]
    return [ErrorResponse(ErrorCode.UNKNOWN_TYPE, "UNKNOWN_TYPE", HOSTILE, request_id=rid)]


class HostileServer:
    """Serves connections one after another on a free port until closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, (ip, port) = self.listener.accept()
            except OSError:
                return  # closed
            with conn, contextlib.suppress(OSError):
                conn.settimeout(10)
                conn.sendall(encode(Welcome(1, HOSTILE, 1, 60_000, 65536, 4096, 10, ip, port)))
                self._serve(conn)

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        decoder = FrameDecoder()
        while data := conn.recv(65536):
            decoder.feed(data)
            for event in decoder:
                assert isinstance(event, Frame)
                answers = _answer(event)
                conn.sendall(b"".join(encode(a) for a in answers))
                if isinstance(answers[-1], Shutdown):
                    return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close does not)
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


def assert_neutralised(output: str, layout: str = "\n") -> None:
    """``output`` shows the hostile string as ``safe`` writes it, and no unsafe code point
    but those of the command's own ``layout`` (newlines; tabs in TSV)."""
    assert SHOWN in output, output
    raw = sorted({f"U+{ord(c):04X}" for c in output if ord(c) in UNSAFE and c not in layout})
    assert not raw, f"{raw} printed raw in {output!r}"
    for line in output.splitlines():
        assert "\x1b" not in line and "\u202e" not in line, line


@pytest.mark.parametrize(
    ("args", "stream", "code"),
    [
        (["name"], "stdout", 0),
        (["time"], "stdout", 0),
        (["list", "--format", "tsv"], "stdout", 0),
        (["list", "--format", "table", "--room", "[/x]"], "stdout", 0),
        (["rooms"], "stdout", 0),
        (["send", "2", "hi"], "stderr", 1),
        (["listen", "--room", "lobby", "--no-reconnect"], "stdout", 3),
    ],
    ids=["name", "time", "list-tsv", "list-table", "rooms", "send-refused", "listen"],
)
def test_one_shot_commands_print_a_hostile_string_escaped(
    hostile: HostileServer, args: list[str], stream: str, code: int
) -> None:
    result = run_cli(*args, port=hostile.port, env=None)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert_neutralised(getattr(result, stream), "\n\t" if "tsv" in args else "\n")


def test_the_menu_client_prints_a_hostile_string_escaped(hostile: HostileServer) -> None:
    commands = "name\ntime\nlist\nrooms\nsend 2 hi\nquit\n"
    result = run_cli("client", port=hostile.port, input=commands)
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert f"server '{SHOWN}'" in out, out
    assert f"Server name: {SHOWN}" in out
    assert out.count(SHOWN) >= 5, out  # welcome, name, time zone, list, rooms, refusal
    assert_neutralised(out)


def test_the_chat_client_prints_a_hostile_string_escaped(hostile: HostileServer) -> None:
    result = run_cli(
        "chat", "--nick", "bob", "--room", "lobby", "--no-reconnect", port=hostile.port,
        input="",
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    out = result.stdout + result.stderr
    assert f"connected to '{SHOWN}'" in out, out
    assert out.count(SHOWN) >= 6, out  # server, joined, message (nick, room, text), rename
    assert_neutralised(out)


@pytest.mark.parametrize("args", [["listen", "--room", "lobby", "--no-reconnect"], ["list"]])
def test_json_output_carries_the_exact_string_with_nothing_unsafe_raw(
    hostile: HostileServer, args: list[str]
) -> None:
    result = run_cli(*args, "--json", port=hostile.port)
    assert "Traceback" not in result.stderr
    raw = sorted({f"U+{ord(c):04X}" for c in result.stdout if ord(c) in UNSAFE and c != "\n"})
    assert not raw, f"{raw} printed raw in {result.stdout!r}"
    values = [json.loads(line) for line in result.stdout.splitlines()]
    strings = [v for obj in values for v in _strings(obj)]
    assert HOSTILE in strings, values  # read back exactly as the peer sent it


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
