"""One handler per request type: it decides the answer; the connection moves the bytes.

A handler takes the server, the asking connection and the request, and returns the
response (or the response and the frames that follow it).  Failing requests raise
RequestFailed, which the server turns into ERROR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchboard.protocol import (
    VERSION,
    BroadcastOk,
    BroadcastRequest,
    ClientInfo,
    ErrorCode,
    Frame,
    HelloOk,
    HelloRequest,
    Joined,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    LeftReason,
    ListOk,
    ListRequest,
    Message,
    MessageFlags,
    NameOk,
    NameRequest,
    NickOk,
    NickRequest,
    PingOk,
    PingRequest,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
)

from .errors import RequestFailed

if TYPE_CHECKING:
    from .app import SwitchboardServer
    from .connection import ClientConnection

Reply = Frame | tuple[Frame, ...]
Handler = Callable[["SwitchboardServer", "ClientConnection", Any], Reply]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hello(server: SwitchboardServer, conn: ClientConnection, req: HelloRequest) -> Reply:
    if req.version < 1:
        raise RequestFailed(ErrorCode.UNSUPPORTED_VERSION, f"protocol version {req.version}")
    if server.tokens:
        server.authenticate(conn, req.token)
    if req.nick:
        server.clients.set_nick(conn, req.nick)
    return HelloOk(min(VERSION, req.version), conn.client_id, conn.nick, request_id=req.request_id)


def time_(server: SwitchboardServer, conn: ClientConnection, req: TimeRequest) -> Reply:
    epoch_ms = now_ms()
    local = time.localtime(epoch_ms / 1000)
    return TimeOk(epoch_ms, local.tm_gmtoff, local.tm_zone, request_id=req.request_id)


def name(server: SwitchboardServer, conn: ClientConnection, req: NameRequest) -> Reply:
    return NameOk(server.config.name, request_id=req.request_id)


def list_(server: SwitchboardServer, conn: ClientConnection, req: ListRequest) -> Reply:
    if req.room:
        room = server.rooms.by_name.get(req.room)
        members = sorted(room.members.values(), key=_by_id) if room else []
    else:
        members = list(server.clients)  # insertion order is id order
    if server.tokens:
        members = [c for c in members if c.authenticated]
    clients = tuple(ClientInfo(c.client_id, c.ip, c.port, c.nick, c.connected_ms) for c in members)
    return ListOk(req.room, clients, request_id=req.request_id)


def _by_id(conn: ClientConnection) -> int:
    return conn.client_id


def _check_text(server: SwitchboardServer, text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > server.config.max_text:
        raise RequestFailed(
            ErrorCode.TEXT_TOO_LONG, f"text is {size} bytes (max {server.config.max_text})"
        )


def send(server: SwitchboardServer, conn: ClientConnection, req: SendRequest) -> Reply:
    _check_text(server, req.text)
    target = server.clients.by_id.get(req.target)
    if target is None or target.closing or not target.authenticated:
        raise RequestFailed(ErrorCode.NO_SUCH_CLIENT, f"no client #{req.target} is connected")
    if target.write_paused:
        raise RequestFailed(
            ErrorCode.RECIPIENT_BUSY, f"client #{req.target} is not reading; try again later"
        )
    message_id = server.next_message_id()
    target.send(
        Message(
            message_id, conn.client_id, conn.ip, conn.port, conn.nick, "", now_ms(), 0, req.text
        )
    )
    server.expect_ack(message_id, sender=conn, target=target)
    if server.events.info_on:
        server.events.event(
            logging.INFO,
            "forward",
            "forward #%d -> #%d message %d (%d chars)",
            conn.client_id,
            target.client_id,
            message_id,
            len(req.text),
            sender=conn.client_id,
            target=target.client_id,
            message_id=message_id,
        )
    return SendOk(message_id, target.client_id, request_id=req.request_id)


def nick(server: SwitchboardServer, conn: ClientConnection, req: NickRequest) -> Reply:
    server.clients.set_nick(conn, req.nick)
    return NickOk(conn.nick, request_id=req.request_id)


def join(server: SwitchboardServer, conn: ClientConnection, req: JoinRequest) -> Reply:
    room, added = server.rooms.join(req.room, conn)
    if added:
        notice = Joined(room.name, conn.client_id, conn.nick)
        for member in room.members.values():
            if member is not conn:
                member.send(notice)
        server.events.event(
            logging.INFO,
            "join",
            "join #%d %s",
            conn.client_id,
            room.name,
            client_id=conn.client_id,
            room=room.name,
        )
    ok = JoinOk(room.name, len(room.members), len(room.history), request_id=req.request_id)
    return (ok, *room.history)


def leave(server: SwitchboardServer, conn: ClientConnection, req: LeaveRequest) -> Reply:
    room = server.rooms.member_room(req.room, conn)
    server.leave_room(room, conn, LeftReason.LEFT)
    return LeaveOk(room.name, request_id=req.request_id)


def broadcast(server: SwitchboardServer, conn: ClientConnection, req: BroadcastRequest) -> Reply:
    room = server.rooms.member_room(req.room, conn)
    _check_text(server, req.text)
    message_id = server.next_message_id()
    sent_ms = now_ms()
    msg = Message(
        message_id, conn.client_id, conn.ip, conn.port, conn.nick, room.name, sent_ms, 0, req.text
    )
    reached = 0
    for member in room.members.values():
        if member is not conn and not member.write_paused:
            member.send(msg)
            reached += 1
    # History replays are marked so that clients can show them apart from live lines.
    room.history.append(
        Message(
            message_id,
            conn.client_id,
            conn.ip,
            conn.port,
            conn.nick,
            room.name,
            sent_ms,
            MessageFlags.HISTORY,
            req.text,
        )
    )
    if server.events.info_on:
        server.events.event(
            logging.INFO,
            "room_message",
            "room %s #%d(%s): %s",
            room.name,
            conn.client_id,
            conn.nick or "-",
            req.text,
            room=room.name,
            sender=conn.client_id,
            nick=conn.nick,
            message_id=message_id,
            reached=reached,
        )
    return BroadcastOk(message_id, reached, request_id=req.request_id)


def ping(server: SwitchboardServer, conn: ClientConnection, req: PingRequest) -> Reply:
    return PingOk(request_id=req.request_id)


#: Request class -> handler.  A newcomer finds where TIME is answered here, in one guess.
HANDLERS: dict[type, Handler] = {
    HelloRequest: hello,
    TimeRequest: time_,
    NameRequest: name,
    ListRequest: list_,
    SendRequest: send,
    NickRequest: nick,
    JoinRequest: join,
    LeaveRequest: leave,
    BroadcastRequest: broadcast,
    PingRequest: ping,
}
