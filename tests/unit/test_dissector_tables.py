"""The Wireshark dissector's tables agree with the code: every message's fields in wire order
with their kinds, the value strings (types, error codes, statuses, reasons), and the UDP chat
datagram types.  Pure text checks of tools/wireshark/switchboard.lua; the e2e test
(tests/e2e/test_dissector.py) runs the dissector itself on captures."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from switchboard.protocol import messages, wire
from switchboard.protocol.errors import ErrorCode
from switchboard.protocol.messages import (
    ALL_MESSAGES,
    CLIENT_LIST,
    ClientInfo,
    LeftReason,
    ReceiptStatus,
    RecordListKind,
    RoomInfo,
)
from switchboard.protocol.wire import AddressFamily, MessageClass, MessageType
from switchboard.services.udpchat import codec as udp

LUA = (Path(__file__).resolve().parents[2] / "tools" / "wireshark" / "switchboard.lua").read_text(
    encoding="utf-8"
)
FIELD = re.compile(r'\{"(\w+)", "(\w+)"\}')


def kinds_of(cls: type) -> list[tuple[str, str]]:
    """``cls``'s payload fields in wire order (as the codec compiles them), with the kind
    names the Lua tables use."""
    return [
        (name, _list_kind(kind) if isinstance(kind, RecordListKind) else _lua_kind(kind.name))
        for name, kind in messages._field_kinds(cls)
    ]


def _lua_kind(name: str) -> str:
    return "id_list" if name == "ids" else name


def _list_kind(kind: RecordListKind) -> str:
    return "client_list" if kind is CLIENT_LIST else "room_list"


def lua_calls(function: str) -> dict[str, list[str]]:
    """Each ``function(...)`` line of the Lua file, by its first argument."""
    out = {}
    for line in LUA.splitlines():
        match = re.match(rf"{function}\((0x[0-9A-Fa-f]+), (.*)\)$", line)
        if match:
            out[match.group(1).lower()] = [match.group(2)]
    return out


def lua_table(name: str) -> dict[int, str]:
    """A ``local NAME = { [k] = "v", ... }`` value string of the Lua file."""
    match = re.search(rf"local {name} = \{{(.*?)\n?\}}\n", LUA, re.S)
    assert match, f"no table {name} in the dissector"
    return {
        int(k, 0): v for k, v in re.findall(r'\[(0x[0-9A-Fa-f]+|\d+)\] = "(\w+)"', match.group(1))
    }


def test_every_message_has_its_fields_in_wire_order() -> None:
    requests_and_indications = lua_calls("msg")
    oks = lua_calls("ok")
    for cls in ALL_MESSAGES:
        if cls.ANSWERS is not None:
            entry = oks.pop(f"0x{int(cls.ANSWERS):02x}")[0]
            head = re.match(r'"(\w+)"', entry)
            assert head and head.group(1) == cls.__name__
        else:
            entry = requests_and_indications.pop(f"0x{int(cls.MESSAGE_TYPE):02x}")[0]
            head = re.match(r'"(\w+)", (\w+), "(\w+)"', entry)
            assert head, entry
            assert head.groups() == (cls.MESSAGE_TYPE.name, cls.MESSAGE_CLASS.name, cls.__name__)
        assert FIELD.findall(entry) == kinds_of(cls), cls.__name__
    assert not requests_and_indications, (
        f"the dissector knows extra types {requests_and_indications}"
    )
    assert not oks, f"the dissector knows extra OK results {oks}"


def test_the_client_record_matches() -> None:
    match = re.search(r"local CLIENT_INFO = (\{.*\})\n", LUA)
    assert match
    assert FIELD.findall(match.group(1)) == kinds_of(ClientInfo)


def test_the_room_record_matches() -> None:
    match = re.search(r"local ROOM_INFO = (\{.*\})\n", LUA)
    assert match
    assert FIELD.findall(match.group(1)) == kinds_of(RoomInfo)


@pytest.mark.parametrize(
    ("table", "enum_class"),
    [
        ("TYPES", MessageType),
        ("CLASSES", MessageClass),
        ("ERROR_CODES", ErrorCode),
        ("RECEIPT_STATUS", ReceiptStatus),
        ("LEFT_REASONS", LeftReason),
        ("U_TYPES", udp.DatagramType),
        ("U_ERROR_CODES", udp.ChatErrorCode),
        ("U_LEFT_REASONS", udp.LeftReason),
    ],
)
def test_value_strings_match_the_enums(table: str, enum_class: type[enum.IntEnum]) -> None:
    expected = {int(member): member.name for member in enum_class}
    if enum_class is MessageClass:
        expected = {k: v.capitalize() for k, v in expected.items()}
    assert lua_table(table) == expected


def test_constants_match() -> None:
    assert f"local HEADER_SIZE = {wire.HEADER_SIZE}\n" in LUA
    assert f"local MAGIC = 0x{wire.MAGIC:04X}" in LUA
    assert f"local VERSION = {wire.VERSION}\n" in LUA
    assert f"local U_HEADER_SIZE = {udp.HEADER_SIZE}\n" in LUA
    assert f"local U_MAGIC = 0x{int.from_bytes(udp.MAGIC, 'big'):04X}" in LUA
    assert f"local U_TOKEN_SIZE = {udp.TOKEN_SIZE}\n" in LUA
    sizes = {int(k): int(v) for k, v in re.findall(r"\[(\d)\] = (\d+)", _line("ADDRESS_SIZES"))}
    assert sizes == {AddressFamily.NONE: 0, AddressFamily.IPV4: 4, AddressFamily.IPV6: 16}


def _line(name: str) -> str:
    return next(line for line in LUA.splitlines() if line.startswith(f"local {name} = "))


def test_udp_layouts_cover_every_datagram_type() -> None:
    layouts = {
        int(k, 0): ident for k, ident in re.findall(r'\[(0x\w+)\] = \{ ident = "(\w+)"', LUA)
    }
    assert set(layouts) == {int(t) for t in udp.DatagramType}
    # Identity per type, as codec.encode writes it: a token for the member's requests, no
    # identity for ACK and SHUTDOWN, a nickname otherwise.
    token_types = {udp.DatagramType.LEAVE, udp.DatagramType.CHAT, udp.DatagramType.KEEPALIVE}
    bare_types = {udp.DatagramType.ACK, udp.DatagramType.SHUTDOWN}
    for kind in udp.DatagramType:
        want = "token" if kind in token_types else "none" if kind in bare_types else "nick"
        assert layouts[int(kind)] == want, kind.name
