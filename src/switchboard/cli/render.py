"""How indications and results look to people (text) and to programs (JSON objects).

Shared by ``listen``, the interactive client and the chat client, so a message reads the
same everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Final

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from switchboard.client import ServerTime
from switchboard.display import safe as safe  # the CLI says render.safe
from switchboard.protocol import (
    ClientInfo,
    Frame,
    Joined,
    Left,
    LeftReason,
    Message,
    MessageFlags,
    NickChanged,
    Receipt,
    ReceiptStatus,
    RoomFlags,
    RoomInfo,
    Shutdown,
    Welcome,
)
from switchboard.protocol.trace import host_port


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


def describe(frame: Frame, *, missed: bool = False) -> str:
    """One human line for an indication; what peers chose is escaped (``safe``).  ``missed``:
    a room line said while we were away (from the server's history, after a reconnection)."""
    if isinstance(frame, Message):
        where = f" in {safe(frame.room)}" if frame.room else ""
        history = " [history]" if frame.flags & MessageFlags.HISTORY else ""
        history = " [missed]" if missed else history
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
    if isinstance(frame, NickChanged):
        return nick_changed(frame)
    if isinstance(frame, Shutdown):
        return f"the server is shutting down: {safe(frame.reason)}"
    if isinstance(frame, Welcome):
        return f"connected to '{safe(frame.server_name)}' as client #{frame.client_id}"
    return type(frame).__name__


def to_json(frame: Frame, *, missed: bool = False) -> dict[str, Any]:
    """The ``listen --json`` object for an indication (``missed``: as for ``describe``)."""
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
            "missed": missed,
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
    if isinstance(frame, NickChanged):
        return {
            "event": "nick_changed",
            "id": frame.client_id,
            "old_nick": frame.old_nick or None,
            "nick": frame.new_nick,
        }
    if isinstance(frame, Shutdown):
        return {"event": "shutdown", "reason": frame.reason}
    if isinstance(frame, Welcome):
        return welcome_json(frame)
    return {"event": type(frame).__name__.lower()}


def nick_changed(frame: NickChanged) -> str:
    """``alice (#3) is now known as carolyn``"""
    old = safe(frame.old_nick) if frame.old_nick else "a client without a nickname"
    return f"{old} (#{frame.client_id}) is now known as {safe(frame.new_nick)}"


def rooms_lines(rooms: list[RoomInfo]) -> list[str]:
    """One line per room, ``  lobby  3 members  (you are in it)``, after a count line."""
    width = max((len(safe(r.name)) for r in rooms), default=0)
    lines = [f"{len(rooms)} room(s)" + (":" if rooms else "")]
    for r in rooms:
        members = f"{r.members} member" + ("" if r.members == 1 else "s")
        mine = "  (you are in it)" if r.flags & RoomFlags.MEMBER else ""
        lines.append(f"  {safe(r.name).ljust(width)}  {members}{mine}")
    return lines


def room_json(r: RoomInfo) -> dict[str, Any]:
    return {"name": r.name, "members": r.members, "member": bool(r.flags & RoomFlags.MEMBER)}


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


# --- the list of clients ---------------------------------------------------------------------

#: The table's columns; the last one marks the row that is us.
CLIENT_COLUMNS: Final = ("id", "ip", "port", "nickname", "connected since", "")
#: ``--format tsv`` (and ``list`` into a pipe): the header line's names.
CLIENT_TSV_HEADER: Final = ("id", "ip", "port", "nickname", "connected_since", "self")


def client_cells(c: ClientInfo, my_id: int) -> tuple[str, str, str, str, str, str]:
    """One client's row as text (the nickname escaped: a peer chose it)."""
    return (
        str(c.client_id),
        c.ip,
        str(c.port),
        safe(c.nick) or "-",
        iso(c.connected_ms),
        "<- you" if c.client_id == my_id else "",
    )


def clients_tsv(clients: Sequence[ClientInfo], my_id: int) -> list[str]:
    """A header line, then one tab-separated line per client (no escape codes, no title):
    for ``cut -f``, ``awk -F'\t'`` and spreadsheets.  A nickname never holds a tab or a
    newline (``safe`` escapes control characters)."""
    lines = ["\t".join(CLIENT_TSV_HEADER)]
    for c in clients:
        cells = client_cells(c, my_id)
        lines.append("\t".join([*cells[:5], "yes" if c.client_id == my_id else "no"]))
    return lines


def clients_view(
    console: Console, clients: Sequence[ClientInfo], my_id: int, title: str
) -> RenderableType:
    """The clients as a table, or, when the table does not fit ``console``'s width, as one
    block of labelled lines per client (psql's expanded display): ids, addresses and ports
    are never cut or ellipsised, and what is too long for a line wraps onto the next."""
    table = Table(title=Text(title))  # Text: never read as markup
    for column in CLIENT_COLUMNS:
        table.add_column(column, justify="right" if column in ("id", "port") else "left")
    for c in clients:
        # Text, not str: rich reads a str as markup, and a nickname like "[/bold]" is a peer's.
        row = [Text(cell) for cell in client_cells(c, my_id)]
        table.add_row(*row, style="bold" if c.client_id == my_id else None)
    # Measured as if the terminal were unbounded: console.measure() clamps to its width.
    natural = Measurement.get(console, console.options.update_width(1_000_000), table)
    if natural.maximum <= console.width:
        return table
    blocks: list[RenderableType] = [Text(title, style="italic")]
    for c in clients:
        cells = client_cells(c, my_id)
        record = Table.grid(padding=(0, 2))
        record.add_column(no_wrap=True)
        record.add_column(overflow="fold")
        labels = ("id", "ip", "port", "nickname", "since")
        for label, value in zip(labels, cells[:5], strict=True):
            record.add_row(label, Text(value), style="bold" if c.client_id == my_id else None)
        if c.client_id == my_id:
            record.add_row("", "(you)", style="bold")
        blocks += [Text(""), record]
    return Group(*blocks)
