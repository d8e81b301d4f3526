"""docs/PROTOCOL.md's tables agree with the code: type codes, error codes, every payload table.

The golden vectors (test_protocol_golden.py) pin the bytes; these tests pin the prose tables a
client author reads, so that a field added, renamed or reordered in messages.py, or a code
added to wire.py or errors.py, fails here until the specification says the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.protocol_strategies import payload_fields
from switchboard.protocol import (
    ALL_MESSAGES,
    CLOSING_CODES,
    ClientInfo,
    ErrorCode,
    MessageClass,
    MessageType,
    RoomInfo,
    wire,
)
from switchboard.protocol.messages import RecordListKind

SPEC = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
#: Part 1 only: a later part (the UDP chat room) has tables of its own.
PART1 = SPEC.split("\n# Part 2", 1)[0].split("\n## Part 2", 1)[0]

FIXED_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "i32": 4, "i64": 8}

#: Where each payload table starts: a heading or bold label just before it.
TABLE_ANCHORS: dict[str, str] = {
    "HelloRequest": "#### HELLO (`0x01`)",
    "ListRequest": "#### LIST (`0x04`)",
    "SendRequest": "#### SEND (`0x05`)",
    "NickRequest": "#### NICK (`0x06`)",
    "JoinRequest": "#### JOIN (`0x07`) and LEAVE (`0x08`)",
    "LeaveRequest": "#### JOIN (`0x07`) and LEAVE (`0x08`)",
    "BroadcastRequest": "#### BROADCAST (`0x09`)",
    "SendNickRequest": "#### SEND_NICK (`0x0B`)",
    "RoomsRequest": "#### ROOMS (`0x0C`)",
    "HistoryRequest": "#### HISTORY (`0x0D`)",
    "HelloOk": "**HelloOk**",
    "TimeOk": "**TimeOk**",
    "NameOk": "**NameOk**",
    "ListOk": "**ListOk**",
    "SendOk": "**SendOk**",
    "NickOk": "**NickOk**",
    "JoinOk": "**JoinOk**",
    "LeaveOk": "**LeaveOk**",
    "BroadcastOk": "**BroadcastOk**",
    "SendNickOk": "**SendNickOk**",
    "RoomsOk": "**RoomsOk**",
    "HistoryOk": "**HistoryOk**",
    "ErrorResponse": "#### ERROR (`0x41`)",
    "Welcome": "#### WELCOME (`0x80`",
    "Message": "#### MESSAGE (`0x81`",
    "Ack": "#### ACK (`0x82`",
    "Receipt": "#### RECEIPT (`0x83`",
    "Joined": "#### JOINED (`0x84`",
    "Left": "#### LEFT (`0x85`",
    "Shutdown": "#### SHUTDOWN (`0x88`",
    "NickChanged": "#### NICK_CHANGED (`0x89`",
    "Acks": "#### ACKS (`0x8A`",
    "Receipts": "#### RECEIPTS (`0x8B`",
    "ClientInfo": "### The ClientInfo record",
    "RoomInfo": "### The RoomInfo record",
}


def table_after(anchor: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``anchor``."""
    start = PART1.index(anchor)
    rows: list[list[str]] = []
    fenced = False
    for line in PART1[start:].splitlines()[1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            continue  # byte diagrams are drawn with "|" too
        elif line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) >= 2, f"no table after {anchor!r}"
    return rows[2:]  # drop the header row and the |---| row


def kind_name(kind: wire.FieldKind) -> str:
    return "list" if isinstance(kind, RecordListKind) else kind.name


def expected_rows(cls: type) -> list[tuple[str, str, str]]:
    """(offset, field, kind) as the spec should show them: numeric while offsets are fixed."""
    offset: int | None = 2 if getattr(cls, "ANSWERS", None) is not None else 0
    rows = []
    for name, kind in payload_fields(cls):
        rows.append(("var" if offset is None else str(offset), name, f"`{kind_name(kind)}`"))
        size = FIXED_SIZES.get(kind.name)
        offset = None if offset is None or size is None else offset + size
    return rows


def documented_rows(cls: type) -> list[tuple[str, str, str]]:
    rows = []
    for offset, field, kind, *_ in table_after(TABLE_ANCHORS[cls.__name__]):
        rows.append(("var" if not offset.isdigit() else offset, field, kind))
    return rows


PAYLOAD_CLASSES = [cls for cls in [*ALL_MESSAGES, ClientInfo, RoomInfo] if payload_fields(cls)]


@pytest.mark.parametrize("cls", PAYLOAD_CLASSES, ids=lambda cls: cls.__name__)
def test_payload_table_lists_every_field_in_wire_order(cls: type) -> None:
    expected = expected_rows(cls)
    documented = documented_rows(cls)
    # A non-numeric offset ("v", "v+4", "w") stands for any offset after a variable field.
    assert documented == expected


def test_every_message_with_fields_has_a_table() -> None:
    assert {cls.__name__ for cls in PAYLOAD_CLASSES} == set(TABLE_ANCHORS)


@pytest.mark.parametrize(
    "cls",
    [cls for cls in ALL_MESSAGES if not payload_fields(cls)],
    ids=lambda cls: cls.__name__,
)
def test_messages_without_fields_are_documented_as_empty(cls: type) -> None:
    if cls.ANSWERS is not None:  # type: ignore[attr-defined]
        paragraph = PART1[PART1.index(f"**{cls.__name__}**") :].split("\n\n")[0]
        assert "no fields" in paragraph
    else:
        mtype = cls.MESSAGE_TYPE  # type: ignore[attr-defined]
        heading = re.compile(rf"^####.*\b{mtype.name} \(`0x{mtype.value:02X}`", re.MULTILINE)
        match = heading.search(PART1)
        assert match is not None, f"no heading for {mtype.name}"
        assert PART1[match.start() :].split("\n\n")[1].startswith("Empty payloads")


def test_message_type_table_matches_wire() -> None:
    rows = table_after("## Message classes and types")
    documented = {row[1]: (int(row[0].strip("`"), 16), row[2]) for row in rows}
    classes = {
        cls.MESSAGE_TYPE.name: cls.MESSAGE_CLASS  # type: ignore[attr-defined]
        for cls in ALL_MESSAGES
    }
    assert set(documented) == {t.name for t in MessageType}
    for mtype in MessageType:
        code, mclass = documented[mtype.name]
        assert code == mtype.value, mtype.name
        expected = classes[mtype.name]
        assert mclass == f"{MessageClass(expected).name.lower()} ({int(expected)})", mtype.name


def test_error_code_table_matches_errors_py() -> None:
    rows = table_after("## Error codes")
    documented = {int(row[0]): (row[1], row[2]) for row in rows}
    assert sorted(documented) == sorted(int(code) for code in ErrorCode)
    for code in ErrorCode:
        name, closes = documented[code]
        assert name == code.name
        assert closes == ("yes" if code in CLOSING_CODES else "no"), code.name


def test_header_table_matches_the_struct() -> None:
    rows = table_after("Every frame is a 14-byte header")
    sizes = [int(row[1]) for row in rows]
    offsets = [int(row[0]) for row in rows]
    assert sum(sizes) == wire.HEADER_SIZE == 14
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert f'"{wire.HEADER.format}"' in PART1
    assert f"0x{wire.MAGIC:04x}" in PART1.lower()
