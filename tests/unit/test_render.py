"""How indications look to people: whatever a peer chose reaches the screen escaped."""

from __future__ import annotations

import pytest

from switchboard.cli import render
from switchboard.protocol import Frame, Joined, Left, LeftReason, Message, Shutdown

ESCAPES = "\x1b[2J\x07\r\n\t\x7f\x9b"
SHOWN = "\\x1b[2J\\x07\\r\\n\\t\\x7f\\x9b"
CONTROLS = "\x1b\x07\r\n\t\x7f\x9b"


def test_safe_escapes_c0_c1_and_del_and_keeps_everything_else() -> None:
    assert render.safe(ESCAPES) == SHOWN
    assert render.safe("你好 👋🏽 e\u0301 ¡ok!") == "你好 👋🏽 e\u0301 ¡ok!"
    assert render.safe("") == ""


@pytest.mark.parametrize(
    "frame",
    [
        Message(7, 3, "127.0.0.1", 5000, "alice", "lobby", 0, 0, f"a{ESCAPES}b"),
        Message(7, 3, "127.0.0.1", 5000, f"n{ESCAPES}", f"r{ESCAPES}", 0, 0, "text"),
        Joined(f"r{ESCAPES}", 3, f"n{ESCAPES}"),
        Left(f"r{ESCAPES}", 3, f"n{ESCAPES}", LeftReason.DISCONNECTED),
        Shutdown(f"why{ESCAPES}"),
    ],
    ids=["message text", "message nick and room", "joined", "left", "shutdown reason"],
)
def test_describe_escapes_every_string_a_peer_chose(frame: Frame) -> None:
    line = render.describe(frame)
    assert SHOWN in line, line
    assert not any(ch in line for ch in CONTROLS), repr(line)


def test_describe_a_message_reads_as_before() -> None:
    msg = Message(7, 3, "127.0.0.1", 5000, "alice", "lobby", 0, 0, "hi")
    assert render.describe(msg) == (
        f"message from #3 (127.0.0.1:5000, alice) in lobby at {render.clock(0)}: hi"
    )


def test_an_ipv6_sender_is_written_in_brackets() -> None:
    msg = Message(7, 3, "::1", 5000, "", "", 0, 0, "hi")
    assert render.describe(msg) == f"message from #3 ([::1]:5000) at {render.clock(0)}: hi"
