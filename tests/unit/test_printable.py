"""One escaping policy: the code points ``safe`` escapes for people are the ones every trace
escapes too, and every formatter of every command writes a hostile string the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from switchboard.cli import chat_model, render
from switchboard.cli.udpchat_join import describe
from switchboard.display import safe as display_safe
from switchboard.protocol import (
    ClientInfo,
    Joined,
    Left,
    LeftReason,
    Message,
    NickChanged,
    SendRequest,
    Shutdown,
)
from switchboard.protocol.printable import UNSAFE, json_quoted, safe
from switchboard.protocol.trace import format_trace
from switchboard.services.udpchat import codec
from switchboard.services.udpchat.peer import MemberJoined, MessageReceived
from switchboard.services.udpchat.trace import format_datagram

#: C0 and C1 controls, an ANSI sequence, a bidi override and isolate, a line separator, a
#: lone surrogate (what surrogateescape makes of a byte that is not UTF-8) and rich markup.
HOSTILE = "a\x00\x1b[31mb\x07\r\n\t\x7f\x85\x9b\u202e\u2066\u2028\udcff[bold]c[/x]"
SHOWN = "a\\x00\\x1b[31mb\\x07\\r\\n\\t\\x7f\\x85\\x9b\\u202e\\u2066\\u2028\\udcff[bold]c[/x]"


def test_safe_writes_the_hostile_string_as_documented() -> None:
    assert safe(HOSTILE) == SHOWN
    assert display_safe is safe and render.safe is safe  # one function, not copies
    assert safe(SHOWN) == SHOWN  # idempotent: escaping twice changes nothing


def test_safe_keeps_what_reads_correctly() -> None:
    kept = "你好 👩\u200d💻 e\u0301 ¡ok! [bold] \u05e9\u05dc\u05d5\u05dd"
    assert safe(kept) == kept


def test_every_unsafe_code_point_is_escaped_by_safe_and_by_both_traces() -> None:
    for code in sorted(UNSAFE):
        char = chr(code)
        assert char not in safe(f"x{char}y") and safe(char).isascii(), hex(code)
        assert char not in json_quoted(char), hex(code)
        if 0xD800 <= code < 0xE000:
            continue  # a lone surrogate cannot be encoded into a frame or a datagram at all
        line = format_trace("->>", SendRequest(1, f"x{char}y", request_id=1))
        assert char not in line, hex(code)
        datagram = codec.encode(codec.Chat(1, b"\x01" * 8, f"x{char}y"))
        assert char not in format_datagram("->>", datagram), hex(code)


def test_nothing_else_in_the_basic_plane_and_beyond_is_escaped_by_safe() -> None:
    # The set is the policy: outside it safe leaves every code point alone.
    escaped = {c for c in range(sys.maxunicode + 1) if safe(chr(c)) != chr(c)}
    assert escaped == UNSAFE


CLOCK = "12:00:00"
FORMATTERS: dict[str, Callable[[str], str]] = {
    "listen message": lambda s: render.describe(Message(1, 2, "::1", 5, s, s, 0, 0, s)),
    "listen joined": lambda s: render.describe(Joined(s, 2, s)),
    "listen left": lambda s: render.describe(Left(s, 2, s, LeftReason.DISCONNECTED)),
    "listen nick": lambda s: render.describe(NickChanged(2, s, s)),
    "listen shutdown": lambda s: render.describe(Shutdown(s)),
    "list tsv": lambda s: render.clients_tsv([ClientInfo(2, "::1", 5, s, 0)], 1)[1],
    "rooms": lambda s: "\n".join(render.rooms_lines([render.RoomInfo(s, 1, 0)])),
    "chat room line": lambda s: chat_model.room_line(
        Message(1, 2, "::1", 5, s, s, 0, 0, s), show_room=True, clock=lambda _: CLOCK
    ),
    "chat private": lambda s: chat_model.private_line(
        Message(1, 2, "::1", 5, s, "", 0, 0, s), clock=lambda _: CLOCK
    ),
    "chat joined": lambda s: chat_model.joined_line(Joined(s, 2, s)),
    "chat nick": lambda s: chat_model.nick_changed_line(NickChanged(2, s, s)),
    "chat members": lambda s: "\n".join(
        chat_model.members_lines(s, [ClientInfo(2, "::1", 5, s, 0)], 1)
    ),
    "chat prompt": lambda s: "".join(
        text for _, text in chat_model.ChatState(nick=s, current=s).prompt_parts()
    ),
    "chat where now": lambda s: chat_model.ChatState(nick="me", current=s).where_now(),
    "udpchat message": lambda s: describe(MessageReceived(s, 0, s)) or "",
    "udpchat joined": lambda s: describe(MemberJoined(s, 0)) or "",
}


@pytest.mark.parametrize("name", FORMATTERS)
def test_every_command_writes_a_hostile_string_the_same_way(name: str) -> None:
    text = FORMATTERS[name](HOSTILE)
    assert SHOWN in text, text
    layout = "\n\t" if name in ("list tsv", "rooms", "chat members") else ""
    raw = {f"U+{ord(c):04X}" for c in text if ord(c) in UNSAFE and c not in layout}
    assert not raw, (raw, text)


def test_reverse_connect_prints_the_servers_answer_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from switchboard.cli.reverse import SessionPrinter

    SessionPrinter().answer(HOSTILE)
    assert capsys.readouterr().out == f"Server: {SHOWN}\n"
