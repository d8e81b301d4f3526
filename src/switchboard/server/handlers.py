"""What the server answers to each request: one handler per request type.

Where each request is answered (and nowhere else):

- TIME: a well-formed one in the split loop, ``ClientConnection.data_received`` in
  server/connection.py, from ``protocol.fastpath.ServerClock``; one with a payload in
  ``time_`` here (BAD_PAYLOAD).
- SEND: well-formed ASCII text to a READY client that is reading, forwarded in the split loop;
  every other SEND, and every refusal (bad layout, TEXT_TOO_LONG, NO_SUCH_CLIENT,
  RECIPIENT_BUSY), in ``send`` here.  The log level never changes which of the two answers.
- ACK: only in the split loop (it is never answered; the sender gets a RECEIPT).
- Everything else by the connection's table (``tables``: header word -> function, one
  table per state, swapped on the state's change): in READY the fast handlers below (PING,
  LIST, PONG: raw bytes in, pre-encoded frames out) and the message handlers (``HANDLERS``:
  a decoded request in, the response out, or RequestFailed, which the server turns into
  ERROR); in HANDSHAKE (a token server before a valid HELLO) ``auth_required`` for every
  request but HELLO.  Rate limits and shutdown are refused in the split loop, before any
  table (``SwitchboardServer.refuse``).
- With a store written off the loop (SQLite; server/history.py), some answers come later, in
  the place their request had (``Peer.reserve_answer``): BROADCAST once its line's group
  commit is done (``lines_committed``), HISTORY and a cold room's JOIN once their read on the
  store's reader thread is (``history``'s ``answered``, ``room_warmed``).  With the memory
  store everything is answered at once.

A handler decides; the connection moves the bytes; the directory remembers.  This module
knows the server and the connection only through ``Server`` and ``registry.Peer``, and
clients and rooms only through ``directory.Directory`` (``Server.directory``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from switchboard import defaults
from switchboard.display import safe
from switchboard.protocol import (
    VERSION,
    BroadcastOk,
    BroadcastRequest,
    ErrorCode,
    ErrorResponse,
    Frame,
    HelloOk,
    HelloRequest,
    HistoryMode,
    HistoryOk,
    HistoryRequest,
    InvalidFrame,
    Joined,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    LeftReason,
    Message,
    MessageClass,
    MessageFlags,
    NameOk,
    NameRequest,
    NickChanged,
    NickOk,
    NickRequest,
    ProtocolError,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
    encode,
)
from switchboard.protocol.codec import decode_payload
from switchboard.protocol.fastpath import (
    KEY_LIST,
    KEY_PING_REQUEST,
    KEY_PONG,
    KEY_SEND,
    KEY_TIME,
    WORD_FIRST_NON_REQUEST,
    WORD_HELLO,
    client_record,
    encode_list_ok,
    encode_message,
    encode_message_fields,
    encode_ping_ok,
    encode_send_ok,
    header_word,
    parse_list,
    parse_send,
    sender_block,
)

from .config import ServerConfig
from .directory import Directory
from .errors import RequestFailed
from .history import (
    MAX_ID,
    GroupCommit,
    HistoryPage,
    HistoryQuery,
    HistoryReads,
    HistoryStore,
    HistoryUnavailable,
)
from .logs import EventLog
from .registry import Peer, Room
from .states import ConnectionState


class Server(Protocol):
    """What the handlers use of the server (server.app.Server implements it):
    the directory, the limits, the message ids, and the way answers and log lines go out."""

    config: ServerConfig
    tokens: frozenset[bytes]
    max_text: int
    max_unacked: int
    #: Who is connected and in which rooms, and how frames reach them: handlers reach
    #: clients and rooms only through it.
    directory: Directory
    #: The last message id given out (ids count up from 1 and are never reused; with a
    #: durable store, from the highest id it holds).
    message_ids: int
    #: Where room lines are remembered (server/history.py), and, for a store written off
    #: the loop, its group commits (None: lines are stored at once).
    history: HistoryStore
    commits: GroupCommit | None
    #: Its reads off the loop (HISTORY pages, a cold room's replay), when it is written off
    #: the loop too (None: the memory store, answered at once); and how many HISTORY reads
    #: each connection (by id) has under way.
    history_reads: HistoryReads | None
    reads_in_flight: dict[int, int]
    #: The highest id of a room line committed and delivered: reads of the store stop
    #: there, so that no line is both read from it and delivered live.
    delivered_id: int
    events: EventLog

    def authenticate(self, conn: Peer, token: str) -> None: ...
    def dispatch(self, conn: Peer, event: Frame | InvalidFrame) -> None: ...
    def refuse(self, conn: Peer, code: ErrorCode, request_id: int) -> None: ...
    def leave_room(self, room: Room, conn: Peer, reason: LeftReason) -> None: ...
    def reply_error(self, conn: Peer, request_id: int, code: ErrorCode, message: str) -> None: ...
    def history_failed(self, reason: str) -> None: ...
    def client_event(
        self, conn: Peer, kind: str, level: int, event: str, msg: str, *args: Any, **fields: Any
    ) -> None: ...


Reply = Frame | tuple[Frame, ...]
Handler = Callable[[Server, Peer, Any], Reply]
Buffer = bytes | bytearray
FastHandler = Callable[[Server, Peer, int, Buffer, int, int], None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hello(server: Server, conn: Peer, req: HelloRequest) -> Reply:
    if req.version < 1:
        raise RequestFailed(ErrorCode.UNSUPPORTED_VERSION, f"protocol version {req.version}")
    if server.tokens:
        server.authenticate(conn, req.token)
    if req.nick:
        _set_nick(server, conn, req.nick)
    return HelloOk(min(VERSION, req.version), conn.client_id, conn.nick, request_id=req.request_id)


def name(server: Server, conn: Peer, req: NameRequest) -> Reply:
    return NameOk(server.config.name, request_id=req.request_id)


def _check_text(server: Server, text: str) -> None:
    size = len(text.encode("utf-8"))
    if size > server.config.max_text:
        raise RequestFailed(
            ErrorCode.TEXT_TOO_LONG, f"text is {size} bytes (max {server.config.max_text})"
        )


def nick(server: Server, conn: Peer, req: NickRequest) -> Reply:
    _set_nick(server, conn, req.nick)
    return NickOk(conn.nick, request_id=req.request_id)


def _set_nick(server: Server, conn: Peer, new_nick: str) -> None:
    """Take the nickname and tell everyone who shares a room with ``conn``: NICK_CHANGED,
    once per member however many rooms they share (IRC's NICK), not to ``conn`` itself."""
    old = conn.nick
    server.directory.rename(conn, new_nick)
    if conn.nick == old or not conn.rooms:
        return
    notice = encode(NickChanged(conn.client_id, old, conn.nick))  # once for every member
    server.directory.deliver_to_rooms_of(conn, notice)


def send_nick(server: Server, conn: Peer, req: SendNickRequest) -> Reply:
    """SEND to whoever holds the nickname now: looked up and forwarded in one step, so the
    message cannot reach a client that took the nickname after the sender looked it up."""
    text = req.text.encode("utf-8")
    if len(text) > server.max_text:
        raise RequestFailed(ErrorCode.TEXT_TOO_LONG, _too_long(len(text), server.max_text))
    target = server.directory.by_nick(req.nick)
    if target is None or target.state is not ConnectionState.READY:
        raise RequestFailed(ErrorCode.NO_SUCH_CLIENT, f"nobody is connected as {_shown(req.nick)}")
    message_id = forward_direct(server, conn, target, text)
    return SendNickOk(message_id, target.client_id, request_id=req.request_id)


def _shown(nick: str) -> str:
    """``nick`` quoted for an ERROR and the log: escaped, and cut to the longest nickname there
    can be (the field could hold 64 KiB, and its escaped form would not fit an ERROR)."""
    limit = defaults.MAX_NICK_CHARS
    if len(nick) <= limit:
        return repr(nick)
    return f"{nick[:limit]!r}... ({len(nick)} characters: no nickname is longer than {limit})"


def rooms(server: Server, conn: Peer, req: RoomsRequest) -> Reply:
    """One page of the rooms, in name order (IRC's LIST), at most MAX_ROOMS_LISTED."""
    page, more = server.directory.rooms_page(req.after, defaults.MAX_ROOMS_LISTED)
    mine = conn.rooms
    records = tuple(
        RoomInfo(
            room.name,
            len(room.members),
            RoomFlags.MEMBER if room.name in mine else RoomFlags.NONE,
        )
        for room in page
    )
    return RoomsOk(server.directory.room_count(), int(more), records, request_id=req.request_id)


#: The most a history MESSAGE can take on the wire besides its text: the header and the fixed
#: fields with their length prefixes (about 50 bytes), the longest sender address (45
#: characters of IPv6 with a zone), nickname and room name (32 characters of up to 4 bytes
#: each): about 350.  A JOIN replays at most (hard limit - high-water mark) / (max text +
#: this) messages, the newest.
MESSAGE_SIZE_MAX = 512


def join(server: Server, conn: Peer, req: JoinRequest) -> Reply:
    room, added = server.directory.join(req.room, conn)
    if added:
        notice = encode(Joined(room.name, conn.client_id, conn.nick))  # once for every member
        server.directory.deliver_room(room, notice, skip=conn)
        server.client_event(
            conn,
            "join",
            logging.INFO,
            "join",
            "join #%d %s",
            conn.client_id,
            room.name,
            client_id=conn.client_id,
            room=room.name,
        )
    reads = server.history_reads
    if not room.warm and reads is not None:
        # A room coming to life: its replay is read from the store off the loop, and this
        # answer keeps its place meanwhile (what the room says from now on is queued after
        # it, live: the replay stops at the lines delivered before this JOIN).
        waiter = (conn, conn.reserve_answer(), req.request_id, len(room.members))
        waiters = room.waiting
        if waiters is None:
            room.waiting = [(*waiter, server.delivered_id)]
            key, count, through = room.key, server.config.history, server.delivered_id
            history_store = server.history
            reads.submit(
                lambda: history_store.latest(key, count, through),
                lambda lines, error: room_warmed(server, room, lines, error),
            )
        else:
            waiters.append((*waiter, server.delivered_id))
        return ()
    if not room.warm:
        _warm(server, room)
    replay = _replay(server, room, MAX_ID)
    ok = JoinOk(room.name, len(room.members), len(replay), request_id=req.request_id)
    return (ok, *replay)


def _replay(server: Server, room: Room, through: int) -> list[Message]:
    """What a JOIN replays: the newest lines of the room's cache up to id ``through`` that
    fit one answer and are not past their age."""
    history = [m for m in room.history if m.message_id <= through]
    # The replay is one answer, queued whole: a longer one would take the joiner past its hard
    # limit before it could read a byte, and drop it for the server's own answer.
    cfg = server.config
    fits = (cfg.write_hard_limit - cfg.write_high_water) // (cfg.max_text + MESSAGE_SIZE_MAX)
    skipped = max(0, len(history) - fits)
    if cfg.history_max_age and history:
        # Lines past their age are deleted from the store; a live room's cache may still
        # hold them: not replayed either.
        cutoff = now_ms() - int(cfg.history_max_age * 1000)
        old = 0
        for line in history:
            if line.sent_ms >= cutoff:
                break
            old += 1
        skipped = max(skipped, old)
    return history[skipped:]


def room_warmed(
    server: Server, room: Room, lines: list[Message] | None, error: BaseException | None
) -> None:
    """A cold room's newest stored lines have been read (``reads.submit``'s callback): they
    go before what its cache got meanwhile, and each JOIN waiting for them is answered."""
    room.warm = True
    waiting, room.waiting = room.waiting or [], None
    if error is not None:
        server.history_failed(f"cannot read the history of {room.name!r}: {error}")
    elif lines and room.members:  # a room emptied meanwhile keeps no cache
        server.directory.record_older(room, [_named(line, room) for line in lines])
    for conn, slot, request_id, members, through in waiting:
        replay = _replay(server, room, through)
        ok = JoinOk(room.name, members, len(replay), request_id=request_id)
        conn.fill_answer(slot, encode(ok) + encode_lines(replay, room.name_utf8))


def _named(line: Message, room: Room) -> Message:
    """``line`` naming the room as it is named now (it may have been stored under a
    look-alike name before a restart)."""
    return line if line.room == room.name else dataclasses.replace(line, room=room.name)


def _warm(server: Server, room: Room) -> None:
    """Fill a room's replay cache from a store read on the loop (the memory store: it has
    nothing beyond the cache, so this only marks the room warm)."""
    room.warm = True
    try:
        newest = server.history.latest(room.key, server.config.history, server.delivered_id)
    except HistoryUnavailable as exc:
        server.history_failed(f"cannot read the history of {room.name!r}: {exc}")
        return
    for line in newest:
        server.directory.record(room, _named(line, room))


def history(server: Server, conn: Peer, req: HistoryRequest) -> Reply:
    """One page of a room's stored history, to its members only (a non-member, and a room
    that does not exist, get NOT_IN_ROOM alike: nothing says which rooms have history)."""
    room = server.directory.member_room(req.room, conn)
    try:
        mode = HistoryMode(req.mode)
    except ValueError:
        raise RequestFailed(ErrorCode.BAD_PAYLOAD, f"unknown HISTORY mode {req.mode}") from None
    if (mode is not HistoryMode.BETWEEN and req.until) or (
        mode is HistoryMode.LATEST and req.anchor
    ):
        raise RequestFailed(
            ErrorCode.BAD_PAYLOAD,
            f"HISTORY {mode.name} takes no {'until' if req.until else 'anchor'}",
        )
    cfg = server.config
    # The answer is queued whole, as JOIN's replay: within the write limits whatever the page.
    budget = cfg.write_hard_limit - cfg.write_high_water
    limit = min(req.limit or defaults.MAX_HISTORY_PAGE, defaults.MAX_HISTORY_PAGE)
    limit = max(1, min(limit, budget // MESSAGE_SIZE_MAX // 2))
    max_bytes = max(
        cfg.max_text, min(defaults.HISTORY_PAGE_BYTES, budget - limit * MESSAGE_SIZE_MAX)
    )
    query = HistoryQuery(mode, req.anchor, req.until, limit, max_bytes)
    store = server.history
    reads = server.history_reads
    if reads is None:  # the memory store: the room's cache, at once
        page = store.page(room.key, room.history, query, MAX_ID)
        conn.send_raw(history_answer(server, room, page, req.request_id))
        return ()
    # Off the loop; the answer keeps its place.  Read once the BROADCASTs taken before it
    # are committed (a page asked after one's OK has the line), up to what is delivered
    # then: what is committed later reaches this member live.
    in_flight = server.reads_in_flight
    waiting = in_flight.get(conn.client_id, 0)
    if waiting >= defaults.MAX_HISTORY_READS:
        raise RequestFailed(
            ErrorCode.RATE_LIMITED,
            f"{waiting} HISTORY requests are being answered; wait for their answers",
        )
    in_flight[conn.client_id] = waiting + 1
    slot = conn.reserve_answer()
    key, request_id = room.key, req.request_id

    def answered(page: HistoryPage | None, error: BaseException | None) -> None:
        left = in_flight.pop(conn.client_id, 1) - 1
        if left:
            in_flight[conn.client_id] = left
        if page is None:
            reason = str(error) if isinstance(error, HistoryUnavailable) else repr(error)
            server.history_failed(f"cannot read the history of {room.name!r}: {reason}")
            refusal = ErrorResponse.of(
                ErrorCode.HISTORY_UNAVAILABLE,
                f"the history store cannot be read: {reason}",
                request_id=request_id,
            )
            conn.fill_answer(slot, encode(refusal))
        else:
            conn.fill_answer(slot, history_answer(server, room, page, request_id))

    def read() -> None:
        through = server.delivered_id
        reads.submit(lambda: store.page(key, (), query, through), answered)

    commits = server.commits
    if commits is None:
        read()
    else:
        commits.after_pending(read)
    return ()


def history_answer(server: Server, room: Room, page: HistoryPage, request_id: int) -> bytes:
    """HistoryOk and the page's MESSAGEs, encoded."""
    ok = HistoryOk(
        room.name, server.history.epoch, int(page.more), len(page.lines), request_id=request_id
    )
    return encode(ok) + encode_lines(page.lines, room.name_utf8)


def encode_lines(lines: list[Message], room: bytes) -> bytes:
    """History MESSAGEs on the fast path (sender blocks encoded once per page, not once per
    line), each naming the room as the server names it now (``room``: a look-alike name it
    was stored under before a restart is the same room): a 1,000-line page took 6.5 ms
    encoded message by message, 1.1 ms so."""
    senders: dict[tuple[int, str, int, str], bytes] = {}
    out = []
    for m in lines:
        key = (m.sender_id, m.sender_ip, m.sender_port, m.sender_nick)
        sender = senders.get(key)
        if sender is None:
            sender = senders[key] = sender_block(*key)
        text = m.text.encode("utf-8")
        out.append(encode_message(m.message_id, sender, room, m.sent_ms, m.flags, text))
    return b"".join(out)


def leave(server: Server, conn: Peer, req: LeaveRequest) -> Reply:
    room = server.directory.member_room(req.room, conn)
    server.leave_room(room, conn, LeftReason.LEFT)
    return LeaveOk(room.name, request_id=req.request_id)


def broadcast(server: Server, conn: Peer, req: BroadcastRequest) -> Reply:
    room = server.directory.member_room(req.room, conn)
    _check_text(server, req.text)
    server.message_ids = message_id = server.message_ids + 1
    sent_ms = now_ms()
    text = req.text.encode("utf-8")
    frame = encode_message(message_id, conn.sender_fields(), room.name_utf8, sent_ms, 0, text)
    # History replays are marked so that clients can show them apart from live lines.
    line = Message(
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
    commits = server.commits
    if commits is not None:
        # Delivered and answered once committed (``lines_committed``); the answer's place
        # is kept, so that the answers to the requests behind it wait for it.
        commits.add(PendingLine(conn, conn.reserve_answer(), room, frame, line, req.request_id))
        return ()
    reached = server.directory.deliver_room(room, frame, skip=conn, skip_paused=True)
    server.directory.record(room, line)
    return _broadcast_done(server, conn, room, line, reached, req.request_id)


class PendingLine:
    """A BROADCAST waiting for its line's transaction: who asked, where the answer goes, and
    what to deliver to whom once it is committed."""

    __slots__ = ("conn", "frame", "message", "request_id", "room", "slot")

    def __init__(
        self,
        conn: Peer,
        slot: bytearray,
        room: Room,
        frame: bytes,
        message: Message,
        request_id: int,
    ) -> None:
        self.conn = conn
        self.slot = slot
        self.room = room
        self.frame = frame
        self.message = message
        self.request_id = request_id


def lines_committed(server: Server, batch: list[PendingLine], error: BaseException | None) -> None:
    """A group commit's outcome (``GroupCommit``'s ``on_done``): committed, each line goes to
    its room's members and its sender gets OK; failed, nobody sees the lines and each sender
    gets HISTORY_UNAVAILABLE."""
    if error is not None:
        reason = str(error) if isinstance(error, HistoryUnavailable) else repr(error)
        server.history_failed(f"cannot store {len(batch)} line(s): {reason}")
        for pending in batch:
            message = f"the line was neither stored nor delivered: {reason}"
            pending.conn.fill_answer(
                pending.slot,
                encode(
                    ErrorResponse.of(
                        ErrorCode.HISTORY_UNAVAILABLE, message, request_id=pending.request_id
                    )
                ),
            )
        return
    directory = server.directory
    for pending in batch:
        room = pending.room
        conn = pending.conn
        reached = directory.deliver_room(room, pending.frame, skip=conn, skip_paused=True)
        if room.members:  # a room that has emptied meanwhile keeps no cache
            directory.record(room, pending.message)
        ok = _broadcast_done(server, conn, room, pending.message, reached, pending.request_id)
        conn.fill_answer(pending.slot, encode(ok))
    server.delivered_id = batch[-1].message.message_id


def _broadcast_done(
    server: Server, conn: Peer, room: Room, line: Message, reached: int, request_id: int
) -> BroadcastOk:
    """The log line and the answer of a BROADCAST whose line went out."""
    message_id = line.message_id
    sent_ms = line.sent_ms
    if server.events.info_on:
        # The log line's own timestamp is within a millisecond of sent_ms (logged too, in
        # the JSON format).  Line breaks, control and bidi characters are escaped (as every
        # command prints peers' strings), so that a message cannot forge or reverse log lines.
        shown = safe(line.text)
        server.client_event(
            conn,
            "room_message",
            logging.INFO,
            "room_message",
            "room %s #%d(%s): %s",
            room.name,
            conn.client_id,
            conn.nick or "-",
            shown,
            room=room.name,
            sender=conn.client_id,
            nick=conn.nick,
            message_id=message_id,
            sent_ms=sent_ms,
            reached=reached,
        )
    return BroadcastOk(message_id, reached, request_id=request_id)


# --- the fast path: raw bytes in, raw bytes out -----------------------------------------------
# The requests and indications that dominate a busy server skip message objects: a fast
# handler gets the frame's request id and payload offsets and writes pre-encoded frames.


def time_(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
) -> None:
    """TIME with a payload.  A well-formed TIME never gets here: the split loop
    (Peer.data_received) answers it inline from ``server.clock``."""
    server.reply_error(conn, request_id, ErrorCode.BAD_PAYLOAD, "TIME carries no payload")


def send(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
) -> None:
    try:
        target_id, text = parse_send(buf, start, end)
    except ProtocolError as exc:
        server.reply_error(conn, request_id, exc.code, exc.message)
        return
    max_text = server.max_text
    if len(text) > max_text:
        server.reply_error(
            conn, request_id, ErrorCode.TEXT_TOO_LONG, _too_long(len(text), max_text)
        )
        return
    target = server.directory.client(target_id)
    if target is None or target.state is not ConnectionState.READY:
        server.reply_error(
            conn, request_id, ErrorCode.NO_SUCH_CLIENT, f"no client #{target_id} is connected"
        )
        return
    try:
        message_id = forward_direct(server, conn, target, text)
    except RequestFailed as failure:
        server.reply_error(conn, request_id, failure.code, failure.message)
        return
    # conn is in its data_received batch (fast handlers run nowhere else) and not closing
    # (the batch stops at once when it is): its answer joins the batch's single write.
    conn.out.append(encode_send_ok(request_id, message_id, target_id))


def _too_long(size: int, max_text: int) -> str:
    return f"text is {size} bytes (max {max_text})"


def forward_direct(server: Server, conn: Peer, target: Peer, text: Buffer) -> int:
    """Forward a direct MESSAGE from ``conn`` to ``target`` (SEND and SEND_NICK, once the
    target is known); its message id.  RECIPIENT_BUSY when the target is not reading."""
    target_id = target.client_id
    if target.write_paused:
        raise RequestFailed(
            ErrorCode.RECIPIENT_BUSY, f"client #{target_id} is not reading; try again later"
        )
    if len(target.awaiting_ack) >= server.max_unacked:
        raise RequestFailed(
            ErrorCode.RECIPIENT_BUSY,
            f"client #{target_id} has not acknowledged {len(target.awaiting_ack)} messages; "
            "try again later",
        )
    server.message_ids = message_id = server.message_ids + 1
    server.directory.deliver(
        target_id, encode_message_fields(message_id, conn.direct_fields(), now_ms(), 0, text)
    )
    # Awaiting the target's ACK: one dict entry on the target, no tuple, no shared table.
    target.awaiting_ack[message_id] = conn
    if server.events.info_on:
        log_forward(server, conn, target_id, message_id, len(text))
    return message_id


def log_forward(
    server: Server,
    conn: Peer,
    target_id: int,
    message_id: int,
    size: int,
) -> None:
    """The INFO line of one forwarded direct MESSAGE (summarised when it repeats)."""
    server.client_event(
        conn,
        "forward",
        logging.INFO,
        "forward",
        "forward #%d -> #%d message %d (%d bytes)",
        conn.client_id,
        target_id,
        message_id,
        size,
        sender=conn.client_id,
        target=target_id,
        message_id=message_id,
    )


def list_fast(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
) -> None:
    """LIST without ClientInfo objects: each record is the member's cached sender block and
    its connect time (profile: a 1,000-client LIST spent ~4 ms building and encoding
    1,000 ClientInfo objects field by field)."""
    room = parse_list(buf, start, end)
    if room is None:  # malformed: the general decoder names the problem
        event = decode_payload(KEY_LIST, request_id, buf, start, end)
        problem = (
            event.error
            if isinstance(event, InvalidFrame)
            else ProtocolError(ErrorCode.BAD_PAYLOAD, "LIST carries one str16 of UTF-8")
        )
        server.reply_error(conn, request_id, problem.code, problem.message)
        return
    if room:
        found = server.directory.room(room.decode("utf-8"))
        members = server.directory.members(found) if found else []
    else:
        members = list(server.directory.clients())  # in id order
    if server.tokens:
        members = [c for c in members if c.authenticated]
    records = [client_record(c.sender_fields(), c.connected_ms) for c in members]
    conn.send_raw(encode_list_ok(request_id, room, records))


def ping(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
) -> None:
    if start != end:
        server.reply_error(conn, request_id, ErrorCode.BAD_PAYLOAD, "PING carries no payload")
        return
    conn.send_raw(encode_ping_ok(request_id))


def pong(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
) -> None:
    """Receiving it was the point: the connection's last_seen is already updated."""


#: Request class -> handler, for requests decoded into message objects.
HANDLERS: dict[type[Frame], Handler] = {
    HelloRequest: hello,
    NameRequest: name,
    NickRequest: nick,
    JoinRequest: join,
    LeaveRequest: leave,
    BroadcastRequest: broadcast,
    SendNickRequest: send_nick,
    RoomsRequest: rooms,
    HistoryRequest: history,
}

#: Frame key -> fast handler.  TIME, SEND and PING requests are answered here, and the
#: client's ACK and PONG indications land here.
FAST_HANDLERS: dict[int, FastHandler] = {
    KEY_TIME: time_,
    KEY_SEND: send,
    KEY_LIST: list_fast,
    KEY_PING_REQUEST: ping,
    KEY_PONG: pong,
}


# --- the tables: header word -> the function that answers it, one table per state ----------


def _decoded(key: int) -> FastHandler:
    """The table's entry for a request answered by a message handler (``HANDLERS``): its
    payload decoded, then answered by ``SwitchboardServer.dispatch`` (ERROR if malformed)."""

    def answer(
        server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int
    ) -> None:
        server.dispatch(conn, decode_payload(key, request_id, buf, start, end))

    return answer


def auth_required(
    server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int
) -> None:
    """Every request but HELLO before a token server has seen a valid one: refused, closed."""
    server.refuse(conn, ErrorCode.AUTH_REQUIRED, request_id)


#: What a connection's table may hold; the split loop takes TIME, SEND and ACK first (see
#: this module's docstring) and the words no table holds go to ``SwitchboardServer.dispatch``.
Table = dict[int, FastHandler]


def tables() -> dict[ConnectionState, Table]:
    """The tables a connection answers by, by state (a server builds its own, so that a test
    may wrap an entry without touching another server's).  READY: every request type and
    PONG.  HANDSHAKE: the same words, each request but HELLO refused with AUTH_REQUIRED (a
    word no table holds is refused there too: ``handshake.get(word, auth_required)``)."""
    ready: Table = {header_word(key): fast for key, fast in FAST_HANDLERS.items()}
    for request_class in HANDLERS:
        key = (MessageClass.REQUEST << 16) | request_class.MESSAGE_TYPE
        ready.setdefault(header_word(key), _decoded(key))
    handshake: Table = {
        word: (answer if word == WORD_HELLO or word >= WORD_FIRST_NON_REQUEST else auth_required)
        for word, answer in ready.items()
    }
    return {ConnectionState.HANDSHAKE: handshake, ConnectionState.READY: ready}
