"""Frames as one line of text each: the lab's Wireshark annotations, for ``--trace``.

    ->> REQUEST    SEND          id=3  len=18  target=1 text="你好"
    <<- RESPONSE   OK(SEND)      id=3  len=14  message_id=1 target=1
    <<- INDICATION RECEIPT       id=0  len=13  message_id=1 target=1 status=DELIVERED

Pure formatting, no I/O: the server and the clients decide where the lines go (stderr).
Tokens are never shown, not even in the hex dump: a trace is something people paste.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any, Final

from .codec import Event, InvalidFrame, encode
from .errors import error_name
from .messages import (
    ClientInfo,
    ErrorResponse,
    Frame,
    HelloRequest,
    HistoryMode,
    HistoryRequest,
    Left,
    LeftReason,
    Message,
    MessageFlags,
    Receipt,
    Receipts,
    ReceiptStatus,
    RoomFlags,
    RoomInfo,
)
from .printable import json_quoted
from .wire import HEADER_SIZE, MessageClass, MessageType

#: Fields whose integer value has a symbolic name on the wire's side.
ENUM_FIELDS: Final[dict[tuple[type[Frame], str], type[enum.IntEnum] | type[enum.IntFlag]]] = {
    (Receipt, "status"): ReceiptStatus,
    (Receipts, "status"): ReceiptStatus,
    (Left, "reason"): LeftReason,
    (Message, "flags"): MessageFlags,
    (HistoryRequest, "mode"): HistoryMode,
}
#: Fields holding milliseconds since the epoch: shown with their UTC time as well.
EPOCH_MS_FIELDS: Final = frozenset({"epoch_ms", "sent_ms", "connected_ms"})
#: Hex dump: bytes per row (as Wireshark and xxd -g1 show them).
HEX_ROW: Final = 16
#: Longest client or room list rendered record by record; longer ones are summarised.
MAX_LISTED_CLIENTS: Final = 20


def format_trace(
    direction: str, event: Event, raw: bytes | None = None, *, with_hex: bool = False,
    peer: str = "",
) -> str:  # fmt: skip
    """One line for ``event`` (``direction`` is "->>" sent or "<<-" received).

    ``peer`` names the other end (the server traces many); ``raw``, the frame's bytes,
    gives its length and, with ``with_hex``, a hex dump on the lines that follow.
    """
    prefix = f"{direction} {peer} " if peer else f"{direction} "
    if isinstance(event, InvalidFrame):
        line = prefix + _invalid_line(event)
    else:
        if raw is None:
            raw = encode(event)
        line = prefix + _frame_line(event, len(raw) - HEADER_SIZE)
    if with_hex and raw is not None:
        if isinstance(event, HelloRequest) and event.token:
            raw = encode(dataclasses.replace(event, token=_mask(event.token)))
        line += "\n" + hex_dump(raw)
    return line


def hex_dump(data: bytes, indent: str = "    ") -> str:
    """Offset, 16 bytes in hex (two groups of eight) and their printable ASCII, per row."""
    rows = []
    for off in range(0, len(data), HEX_ROW):
        chunk = data[off : off + HEX_ROW]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        rows.append(f"{indent}{off:04x}  {left:<23}  {right:<23}  {text}")
    return "\n".join(rows)


def _frame_line(msg: Frame, length: int) -> str:
    kind = msg.MESSAGE_TYPE.name
    if msg.ANSWERS is not None:
        kind = f"OK({msg.ANSWERS.name})"
    head = f"{msg.MESSAGE_CLASS.name:<10} {kind:<13} id={msg.request_id:<4} len={length:<5}"
    fields = " ".join(f"{name}={value}" for name, value in _fields(msg))
    return f"{head} {fields}".rstrip()


def _invalid_line(event: InvalidFrame) -> str:
    try:
        mclass = MessageClass(event.message_class).name
    except ValueError:
        mclass = f"class={event.message_class}"
    try:
        mtype = MessageType(event.message_type).name
    except ValueError:
        mtype = f"type=0x{event.message_type:04x}"
    error = event.error
    return (
        f"{mclass:<10} {mtype:<13} id={event.request_id:<4} "
        f"INVALID {error.code.name}: {error.message}"
    )


def _fields(msg: Frame) -> list[tuple[str, str]]:
    out = []
    for f in dataclasses.fields(msg):
        if f.name == "request_id":
            continue
        value = getattr(msg, f.name)
        out.append((f.name, _value(msg, f.name, value)))
    return out


def _value(msg: Frame, name: str, value: Any) -> str:
    if isinstance(msg, HelloRequest) and name == "token":
        return '""' if not value else f"<{len(value.encode('utf-8'))} bytes, not shown>"
    if isinstance(msg, ErrorResponse) and name == "code":
        return f"{value}({error_name(value)})"
    symbolic = ENUM_FIELDS.get((type(msg), name))
    if symbolic is not None:
        return _enum_value(symbolic, value)
    if name in EPOCH_MS_FIELDS:
        return f"{value}({_utc(value)})"
    if isinstance(value, str):
        return json_quoted(value)
    if isinstance(value, tuple):
        return _record_list(value)
    return str(value)


def _enum_value(symbolic: type[enum.IntEnum] | type[enum.IntFlag], value: int) -> str:
    try:
        member = symbolic(value)
    except ValueError:
        return f"{value}(unknown)"
    return f"{value}({member.name})" if member.name else f"{value}"


def _record_list(records: tuple[ClientInfo | RoomInfo | int, ...]) -> str:
    shown = [_record(r) for r in records[:MAX_LISTED_CLIENTS]]
    more = len(records) - len(shown)
    if more > 0:
        shown.append(f"... {more} more")
    return f"{len(records)}[{', '.join(shown)}]"


def _record(r: ClientInfo | RoomInfo | int) -> str:
    if isinstance(r, int):  # a message id (ACKS, RECEIPTS)
        return str(r)
    if isinstance(r, RoomInfo):
        member = " member" if r.flags & RoomFlags.MEMBER else ""
        return f"{json_quoted(r.name)} {r.members}{member}"
    return f"#{r.client_id} {host_port(r.ip, r.port)} {json_quoted(r.nick)}"


def host_port(ip: str, port: int) -> str:
    """``ip:port``, with IPv6 addresses in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _utc(epoch_ms: int) -> str:
    try:
        moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return "out of range"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _mask(token: str) -> str:
    return "*" * len(token.encode("utf-8"))
