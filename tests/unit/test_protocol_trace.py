"""``--trace`` lines: every message type formats, names are symbolic, tokens never show."""

from __future__ import annotations

import dataclasses
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from support.protocol_strategies import any_message, message_strategy
from switchboard.protocol import (
    ALL_MESSAGES,
    HEADER_SIZE,
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Frame,
    HelloRequest,
    InvalidFrame,
    Left,
    ListOk,
    Message,
    NickChanged,
    ProtocolError,
    Receipt,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    SendNickRequest,
    SendRequest,
    TimeOk,
    encode,
)
from switchboard.protocol.trace import format_trace, hex_dump

HEX_ROW = re.compile(r"^    ([0-9a-f]{4,8})  ([0-9a-f ]{48})  (.{1,16})$")


def undump(dump: str) -> bytes:
    """The bytes a hex dump shows, and a check that its offsets count up by 16."""
    out = bytearray()
    for line in dump.splitlines():
        match = HEX_ROW.match(line)
        assert match, line
        assert int(match.group(1), 16) == len(out)
        row = bytes.fromhex(match.group(2).replace(" ", ""))
        assert len(match.group(3)) == len(row)
        out += row
    return bytes(out)


@settings(max_examples=5 * len(ALL_MESSAGES), deadline=None)
@given(st.sampled_from(ALL_MESSAGES).flatmap(message_strategy))
def test_every_message_type_has_a_trace_line(msg: Frame) -> None:
    cls = type(msg)
    line = format_trace("->>", msg)
    kind = cls.MESSAGE_TYPE.name if cls.ANSWERS is None else f"OK({cls.ANSWERS.name})"
    assert re.match(rf"->> {cls.MESSAGE_CLASS.name} +{re.escape(kind)} +id={msg.request_id} ", line)
    for f in dataclasses.fields(msg):
        if f.name != "request_id":
            assert f" {f.name}=" in line


@settings(max_examples=200, deadline=None)  # 64 KiB texts make long hex dumps
@given(any_message())
def test_trace_shows_length_fields_and_a_faithful_hex_dump(msg: Frame) -> None:
    raw = encode(msg)
    first, *rest = format_trace("<<-", msg, raw, with_hex=True).split("\n")
    assert "\n" not in first
    assert f"len={len(raw) - HEADER_SIZE}" in first
    if isinstance(msg, HelloRequest) and msg.token:
        assert f"token=<{len(msg.token.encode())} bytes, not shown>" in first
    else:
        assert undump("\n".join(rest)) == raw


def test_fields_by_name_with_symbolic_values() -> None:
    line = format_trace("->>", SendRequest(5, "你好 👋", request_id=3))
    assert re.search(r'REQUEST +SEND +id=3 +len=19 +target=5 text="你好 👋"$', line)
    error = ErrorResponse.of(ErrorCode.NO_SUCH_CLIENT, "no client #9", request_id=4)
    assert "code=6(NO_SUCH_CLIENT)" in format_trace("<<-", error)
    assert "status=2(NOT_DELIVERED)" in format_trace("<<-", Receipt(1, 5, 2))
    assert "reason=2(DISCONNECTED)" in format_trace("<<-", Left("lobby", 3, "bob", 2))
    message = Message(7, 3, "::1", 5000, "bob", "lobby", 1_700_000_000_123, 1, "hi")
    line = format_trace("<<-", message)
    assert "flags=1(HISTORY)" in line
    assert "sent_ms=1700000000123(2023-11-14T22:13:20.123Z)" in line
    assert 'sender_ip="::1" sender_port=5000' in line
    assert "epoch_ms=0(1970-01-01T00:00:00.000Z)" in format_trace("<<-", TimeOk(0, 0, "UTC"))


def test_strings_show_unprintable_code_points_escaped() -> None:
    """A right-to-left override, a C1 CSI or a tag character in a peer's text is shown as
    its code point: it cannot reverse or colour the trace line."""
    line = format_trace("->>", SendRequest(5, "a\u202eb\x9bc\U000e0041\n", request_id=3))
    assert line.endswith('text="a\\u202eb\\u009bc\\U000e0041\\n"'), line
    assert line.isprintable()


def test_unknown_codes_and_values_are_shown_as_numbers() -> None:
    error = ErrorResponse(999, "FUTURE_CODE", "from a newer server")
    assert "code=999(ERROR_999)" in format_trace("<<-", error)
    assert "status=9(unknown)" in format_trace("<<-", Receipt(1, 5, 9))


def test_client_lists_show_records_and_summarise_long_ones() -> None:
    clients = tuple(
        ClientInfo(i, "127.0.0.1" if i % 2 else "::1", 40000 + i, f"n{i}", 0) for i in range(1, 31)
    )
    line = format_trace("<<-", ListOk("", clients, request_id=2))
    assert 'clients=30[#1 127.0.0.1:40001 "n1", #2 [::1]:40002 "n2",' in line
    assert "#20 [::1]:40020" in line
    assert "#21 " not in line
    assert "... 10 more]" in line


def test_room_lists_nick_changes_and_send_by_nickname() -> None:
    rooms = (RoomInfo("chess", 1, RoomFlags.NONE), RoomInfo("大厅", 2, RoomFlags.MEMBER))
    line = format_trace("<<-", RoomsOk(2, 0, rooms, request_id=7))
    assert line.startswith("<<- RESPONSE   OK(ROOMS)     id=7")
    assert 'total=2 more=0 rooms=2["chess" 1, "大厅" 2 member]' in line
    many = tuple(RoomInfo(f"r{i}", 1, 0) for i in range(25))
    assert "... 5 more]" in format_trace("<<-", RoomsOk(25, 0, many, request_id=1))
    line = format_trace("<<-", NickChanged(3, "alice", "carolyn"))
    assert line.endswith(
        'NICK_CHANGED  id=0    len=20    client_id=3 old_nick="alice" new_nick="carolyn"'
    )
    line = format_trace("->>", SendNickRequest("bob", "hi", request_id=4))
    assert 'SEND_NICK     id=4    len=11    nick="bob" text="hi"' in line


def test_tokens_never_show_in_text_or_hex() -> None:
    hello = HelloRequest(nick="bob", token="s3cret-t0ken", request_id=1)
    raw = encode(hello)
    trace = format_trace("->>", hello, raw, with_hex=True, peer="#3 127.0.0.1:4444")
    assert "s3cret" not in trace
    assert "token=<12 bytes, not shown>" in trace
    shown = undump(trace.split("\n", 1)[1])
    assert len(shown) == len(raw)
    assert b"s3cret" not in shown
    assert b"*" * 12 in shown
    assert trace.startswith("->> #3 127.0.0.1:4444 REQUEST")
    assert 'token=""' in format_trace("->>", HelloRequest(nick="bob"))


def test_invalid_frames_name_their_error() -> None:
    event = InvalidFrame(1, 0x99, 7, ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown type 0x99"))
    line = format_trace("<<-", event, with_hex=True)
    assert re.search(r"REQUEST +type=0x0099 +id=7 +INVALID UNKNOWN_TYPE: unknown type 0x99", line)
    assert "\n" not in line  # no bytes to dump: the raw frame is not known
    odd = InvalidFrame(9, 0x41, 1, ProtocolError(ErrorCode.BAD_PAYLOAD, "short"))
    assert "class=9 " in format_trace("<<-", odd)


def test_hex_dump_layout() -> None:
    data = bytes(range(0x41, 0x41 + 20))
    assert hex_dump(data).splitlines() == [
        "    0000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP",
        "    0010  51 52 53 54                                       QRST",
    ]
    assert hex_dump(b"\x00\x7f") == "    0000  00 7f" + " " * 45 + ".."
