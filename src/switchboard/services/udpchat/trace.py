"""UDP chat datagrams as one line of text each, for ``switchboard udpchat join --trace``:

    20:14:03.120 ->> JOIN      seq=1 len=160 nick="alice" padding=146
    20:14:03.121 <<- WELCOME   seq=1 len=37  nick="alice" token=8f3a… members=0 expiry_ms=20000
    20:14:05.002 <<- RELAY     seq=1 len=22  nick="bob" timestamp_ms=1765051245001
                     (20:14:05.001 UTC) text="hi"       (one line, wrapped here)

Pure formatting, no I/O (the client decides where the lines go: stderr).  Session tokens
show their first two bytes only: a trace is something people paste, and a token speaks for
its member.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Final

from switchboard.protocol.printable import json_quoted
from switchboard.protocol.trace import hex_dump

from .codec import (
    ChatErrorCode,
    DatagramError,
    DatagramType,
    Error,
    Left,
    LeftReason,
    decode,
)

#: The widest type name (KEEPALIVE), for aligned columns.
_TYPE_WIDTH: Final = max(len(t.name) for t in DatagramType)


def format_datagram(
    direction: str, data: bytes, *, at: dt.datetime | None = None, with_hex: bool = False
) -> str:
    """One line for the datagram ``data`` (``direction``: "->>" sent, "<<-" received),
    stamped with ``at`` (local time) when given, and its hex dump below with ``with_hex``."""
    stamp = f"{at:%H:%M:%S}.{at.microsecond // 1000:03d} " if at is not None else ""
    try:
        datagram = decode(data)
    except DatagramError as exc:
        line = f"{stamp}{direction} {'INVALID':<{_TYPE_WIDTH}} len={len(data)}  {exc}"
    else:
        name = DatagramType[type(datagram).__name__.upper()].name
        fields = " ".join(
            f"{f.name}={_value(datagram, f.name, getattr(datagram, f.name))}"
            for f in dataclasses.fields(datagram)
            if f.name != "seq"
        )
        head = f"{stamp}{direction} {name:<{_TYPE_WIDTH}} seq={datagram.seq}"
        line = f"{head} len={len(data):<4} {fields}"
    if with_hex:
        line += "\n" + hex_dump(_masked(data))
    return line.rstrip()


def _value(datagram: object, name: str, value: Any) -> str:
    if isinstance(value, bytes):  # a session token
        return value[:2].hex() + "…"
    if isinstance(value, str):
        return json_quoted(value)  # a peer's: the one escaping policy
    if name == "timestamp_ms":
        when = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        return f"{value} ({when:%H:%M:%S}.{when.microsecond // 1000:03d} UTC)"
    if isinstance(datagram, Error) and name == "code":
        return _enum_name(ChatErrorCode, value)
    if isinstance(datagram, Left) and name == "reason":
        return _enum_name(LeftReason, value)
    return str(value)


def _enum_name(enum_class: type[ChatErrorCode] | type[LeftReason], value: int) -> str:
    try:
        return enum_class(value).name
    except ValueError:
        return str(value)


def _masked(data: bytes) -> bytes:
    """``data`` with all but the first two bytes of a session token zeroed, for hex dumps."""
    try:
        datagram = decode(data)
    except DatagramError:
        return data
    token = getattr(datagram, "token", None)
    if not isinstance(token, bytes) or not token:
        return data
    at = data.find(token)
    return data[: at + 2] + bytes(len(token) - 2) + data[at + len(token) :]
