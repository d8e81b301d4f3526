"""How indications and results look to people (text) and to programs (JSON objects).

Shared by ``listen``, the interactive client and the chat client, so a message reads the
same everywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from switchboard.client import ServerTime
from switchboard.protocol import (
    ClientInfo,
    Frame,
    Joined,
    Left,
    LeftReason,
    Message,
    MessageFlags,
    Receipt,
    ReceiptStatus,
    Shutdown,
    Welcome,
)
from switchboard.protocol.trace import host_port

#: C0 and C1 control characters and DEL, shown escaped: a peer's text must not move the
#: cursor, clear the screen or split one message into several lines.
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})
_SAFE: Final = str.maketrans(_CONTROLS)


def safe(text: str) -> str:
    """``text`` with control characters escaped (one message stays one harmless line).

    For every string a peer or the server chose (texts, nicknames, room names, reasons)
    before it reaches a terminal."""
    return text.translate(_SAFE)


def local_time(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000).astimezone()


def iso(epoch_ms: int) -> str:
    """RFC 3339 in this machine's local zone, with milliseconds."""
    return local_time(epoch_ms).isoformat(timespec="milliseconds")


def clock(epoch_ms: int) -> str:
    return local_time(epoch_ms).strftime("%H:%M:%S")


def server_time(t: ServerTime) -> str:
    """The server's time as it gives it: RFC 3339 in its offset, then its zone's name."""
    return f"{t.iso} ({safe(t.zone)})" if t.zone else t.iso


def sender(msg: Message) -> str:
    who = f"#{msg.sender_id} ({host_port(safe(msg.sender_ip), msg.sender_port)}"
    return who + (f", {safe(msg.sender_nick)})" if msg.sender_nick else ")")


def receipt_status(status: int) -> str:
    return "delivered" if status == ReceiptStatus.DELIVERED else "not-delivered"


def left_reason(reason: int) -> str:
    try:
        return LeftReason(reason).name.lower().replace("_", " ")
    except ValueError:
        return "gone"


def describe(frame: Frame) -> str:
    """One human line for an indication; what peers chose is escaped (``safe``)."""
    if isinstance(frame, Message):
        where = f" in {safe(frame.room)}" if frame.room else ""
        history = " [history]" if frame.flags & MessageFlags.HISTORY else ""
        return f"message from {sender(frame)}{where} at {clock(frame.sent_ms)}{history}: " + safe(
            frame.text
        )
    if isinstance(frame, Receipt):
        return f"message {frame.message_id} to #{frame.target}: {receipt_status(frame.status)}"
    if isinstance(frame, Joined | Left):
        who = safe(frame.nick) if frame.nick else f"#{frame.client_id}"
        if isinstance(frame, Joined):
            return f"{who} (#{frame.client_id}) joined {safe(frame.room)}"
        reason = left_reason(frame.reason)
        return f"{who} (#{frame.client_id}) left {safe(frame.room)} ({reason})"
    if isinstance(frame, Shutdown):
        return f"the server is shutting down: {safe(frame.reason)}"
    if isinstance(frame, Welcome):
        return f"connected to {frame.server_name!r} as client #{frame.client_id}"
    return type(frame).__name__


def to_json(frame: Frame) -> dict[str, Any]:
    """The ``listen --json`` object for an indication."""
    if isinstance(frame, Message):
        return {
            "event": "message",
            "message_id": frame.message_id,
            "from": frame.sender_id,
            "from_ip": frame.sender_ip,
            "from_port": frame.sender_port,
            "nick": frame.sender_nick or None,
            "room": frame.room or None,
            "history": bool(frame.flags & MessageFlags.HISTORY),
            "text": frame.text,
            "sent_at": iso(frame.sent_ms),
        }
    if isinstance(frame, Receipt):
        return {
            "event": "receipt",
            "message_id": frame.message_id,
            "to": frame.target,
            "status": receipt_status(frame.status),
        }
    if isinstance(frame, Joined | Left):
        obj: dict[str, Any] = {
            "event": "joined" if isinstance(frame, Joined) else "left",
            "room": frame.room,
            "id": frame.client_id,
            "nick": frame.nick or None,
        }
        if isinstance(frame, Left):
            obj["reason"] = left_reason(frame.reason)
        return obj
    if isinstance(frame, Shutdown):
        return {"event": "shutdown", "reason": frame.reason}
    if isinstance(frame, Welcome):
        return welcome_json(frame)
    return {"event": type(frame).__name__.lower()}


def welcome_json(w: Welcome) -> dict[str, Any]:
    return {
        "event": "welcome",
        "id": w.client_id,
        "server": w.server_name,
        "version": w.version,
        "heartbeat_ms": w.heartbeat_ms,
        "max_text": w.max_text,
        "max_clients": w.max_clients,
        "ip": w.ip,
        "port": w.port,
    }


def time_json(t: ServerTime) -> dict[str, Any]:
    return {"epoch_ms": t.epoch_ms, "iso": t.iso, "timezone": t.zone}


def client_json(c: ClientInfo, my_id: int) -> dict[str, Any]:
    return {
        "id": c.client_id,
        "ip": c.ip,
        "port": c.port,
        "nick": c.nick or None,
        "connected_at": iso(c.connected_ms),
        "self": c.client_id == my_id,
    }
