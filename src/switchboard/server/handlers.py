"""What the server answers to each request: one answer per request type, in one table.

Every frame a connection reads is answered here and nowhere else: the connection's split loop
(``ClientConnection.data_received``, server/connection.py) checks the frame's header and
calls ``conn.table[word]``, the answer for that header word in the connection's state.

- TIME: ``time_`` (from ``protocol.fastpath.ServerClock``'s pre-encoded answer).
- SEND: ``send`` (forwarded as a MESSAGE, or refused: bad layout, TEXT_TOO_LONG,
  NO_SUCH_CLIENT, RECIPIENT_BUSY).  The log level never changes which code answers.
- ACK and ACKS: ``ack`` and ``acks`` (never answered; the sender gets a RECEIPT, or, if it
  negotiated protocol version 2, one RECEIPTS for many: ``settle``).
- LIST, PING, PONG: ``list_fast``, ``ping``, ``pong`` (raw bytes in, pre-encoded frames out).
- The other requests: the message handlers (``HANDLERS``: a decoded request in, the response
  out, or RequestFailed, which the server turns into ERROR), through ``_decoded``.

``tables`` builds one table per state, and the connection swaps its table when its state
changes (h11's ``_respond_to_state_changes``): in HANDSHAKE (a token server before a valid
HELLO) every request but HELLO is ``auth_required``.  The rate limit, tracing and shutdown
are tables that wrap these (``_rate_limited``, ``_traced``, ``shutting_down``), chosen when
the server starts or begins to shut down; nothing else gates a request.
- With a store written off the loop (SQLite; server/history.py), some answers come later, in
  the place their request had (``Peer.reserve_answer``): BROADCAST once its line's group
  commit is done (``lines_committed``), HISTORY and a cold room's JOIN once their read on the
  store's reader thread is (``history``'s ``answered``, ``room_warmed``).  With the memory
  store everything is answered at once.  On a cluster node (``Server.shared_history``)
  BROADCAST is answered once its line is stored and ordered in Redis, with the id the room's
  order gave it (``line_ordered``), and HISTORY once its page is read from there.

A handler decides; the connection moves the bytes; the directory remembers.  This module
knows the server and the connection only through ``Server`` and ``registry.Peer``, and
clients and rooms only through ``directory.Directory`` (``Server.directory``; SEND reads its
fast map ``client_by_id`` first).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from switchboard import defaults
from switchboard.display import safe
from switchboard.protocol import (
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
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
    ReceiptStatus,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
    encode,
)
from switchboard.protocol.codec import HEADER_WORDS, decode_payload
from switchboard.protocol.fastpath import (
    KEY_ACK,
    KEY_ACKS,
    KEY_LIST,
    KEY_PING_REQUEST,
    KEY_PONG,
    KEY_SEND,
    KEY_TIME,
    RECEIPT_HEAD,
    SEND_FRAME_HEAD,
    SEND_OK_MIDDLE,
    SEND_OK_PREFIX,
    TIME_OK_PREFIX,
    WORD_ACK,
    WORD_FIRST_NON_REQUEST,
    WORD_HELLO,
    WORD_SEND,
    WORD_TIME,
    ServerClock,
    client_record,
    encode_list_ok,
    encode_message,
    encode_message_fields,
    encode_ping_ok,
    encode_receipts,
    encode_send_ok,
    header_word,
    message_packer,
    pack_receipt,
    pack_send_ok,
    parse_acks,
    parse_list,
    parse_send,
    sender_block,
    unpack_ack,
    unpack_send_frame,
    unpack_send_head,
)

from .config import ServerConfig
from .directory import Directory, Listed
from .errors import RequestFailed, StopReading
from .history import (
    MAX_ID,
    GroupCommit,
    HistoryPage,
    HistoryQuery,
    HistoryReads,
    HistoryStore,
    HistoryUnavailable,
    SharedHistory,
)
from .logs import EventLog
from .metrics import MAX_RECEIPT_SAMPLES, RECEIPT_BUCKETS, ServerMetrics
from .registry import NO_ACKS, NO_OUT, Peer, ReservedSlot, Room, awaiting_of
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
    #: The directory's map of this process's clients by id (``LocalDirectory.client_by_id``),
    #: where SEND looks up its target in one dict lookup before asking the directory.
    client_by_id: dict[int, Peer]
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
    #: On a cluster node, the store that orders and keeps room lines (its Redis): BROADCAST
    #: and HISTORY go through it (``line_ordered``); None on a single server.
    shared_history: SharedHistory | None
    #: The highest id of a room line committed and delivered: reads of the store stop
    #: there, so that no line is both read from it and delivered live.
    delivered_id: int
    events: EventLog
    #: TIME's answer, encoded once per millisecond.
    clock: ServerClock
    #: The request rate limit (requests/s per connection) and burst (``_rate_limited``).
    rate: float
    burst: float
    #: Seconds of refill one request costs (1 / rate).
    rate_step: float
    #: ``trace(direction, connection, event, raw)`` when tracing is on (``_traced``).
    trace: Callable[[str, Peer, Frame | InvalidFrame, bytes], None] | None
    #: The counters /metrics exports: added to once per answer call or run, never per frame
    #: where a run's frames can be counted at once.
    metrics: ServerMetrics

    def authenticate(self, conn: Peer, token: str) -> None: ...
    def dispatch(self, conn: Peer, event: Frame | InvalidFrame) -> None: ...
    def refuse(self, conn: Peer, code: ErrorCode, request_id: int) -> None: ...
    def leave_room(self, room: Room, conn: Peer, reason: LeftReason) -> None: ...
    def reply_error(self, conn: Peer, request_id: int, code: ErrorCode, message: str) -> None: ...
    def schedule_flush(self, conn: Peer) -> None: ...
    def history_failed(self, reason: str) -> None: ...
    def client_event(
        self, conn: Peer, kind: str, level: int, event: str, msg: str, *args: Any, **fields: Any
    ) -> None: ...


Reply = Frame | tuple[Frame, ...]
Handler = Callable[[Server, Peer, Any], Reply]
Buffer = bytes | bytearray
#: A table entry: ``answer(server, conn, request_id, buf, start, end, bound)`` answers the
#: frame whose payload is ``buf[start:end]`` (and, for a run answer, the frames of its kind
#: that follow, complete before ``bound``) and returns where the next frame starts.
Answer = Callable[[Server, Peer, int, Buffer, int, int, int], int]

_unpack_header = HEADER_WORDS.unpack_from
_iter_headers = HEADER_WORDS.iter_unpack
#: An ACK frame whole: its header words and its message id (22 bytes).
_ACK_FRAMES = struct.Struct("!HIIIQ")
_ACK_FRAME = _ACK_FRAMES.size
_iter_acks = _ACK_FRAMES.iter_unpack
_monotonic = time.monotonic
_bucket_of = bisect.bisect_left
_WORD_LIST = header_word(KEY_LIST)
_WORD_PING_REQUEST = header_word(KEY_PING_REQUEST)
_WORD_PONG = header_word(KEY_PONG)
_WORD_ACKS = header_word(KEY_ACKS)
_READY = ConnectionState.READY
#: No sender (settle's "the sender before"): never a Peer, nor None.
_NOBODY = object()
_DELIVERED = int(ReceiptStatus.DELIVERED)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def hello(server: Server, conn: Peer, req: HelloRequest) -> Reply:
    if req.version < 1:
        raise RequestFailed(ErrorCode.UNSUPPORTED_VERSION, f"protocol version {req.version}")
    if server.tokens:
        server.authenticate(conn, req.token)
    if req.nick:
        _set_nick(server, conn, req.nick)
    version = min(PROTOCOL_VERSION, req.version)
    # Version 2: this client's receipts come in RECEIPTS frames (``settle``).
    conn.receipts_batched = version >= 2
    return HelloOk(version, conn.client_id, conn.nick, request_id=req.request_id)


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
    if target is None and (elsewhere := server.directory.nick_elsewhere(req.nick)):
        # Another cluster node's client: answered (in this place) once that node has it.
        server.message_ids = message_id = server.message_ids + 1
        server.directory.send_elsewhere(
            conn, req.request_id, elsewhere, message_id, text, nick=req.nick
        )
        return ()
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
            server.directory.member_count(room),
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
        members = server.directory.member_count(room)
        waiter = (conn, conn.reserve_answer(), req.request_id, members)
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
    members = server.directory.member_count(room)
    ok = JoinOk(room.name, members, len(replay), request_id=req.request_id)
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
    shared = server.shared_history
    if reads is None and shared is None:  # the memory store: the room's cache, at once
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
        if page is None and isinstance(error, RequestFailed):  # the cluster's Redis
            if error.code == ErrorCode.HISTORY_UNAVAILABLE:
                server.history_failed(f"cannot read the history of {room.name!r}: {error}")
            refusal = ErrorResponse.of(error.code, error.message, request_id=request_id)
            conn.fill_answer(slot, encode(refusal))
        elif page is None:
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

    if shared is not None:
        # Up to what the node has delivered to this room's members (and its own stored
        # lines): later lines reach this member live, after the answer.
        shared.read_page(room.name, query, answered, conn.client_id)
        return ()
    assert reads is not None

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
    frames = page.frames
    ok = HistoryOk(
        room.name,
        page.epoch or server.history.epoch,
        int(page.more),
        len(page.lines) if frames is None else len(frames),
        request_id=request_id,
    )
    if frames is not None:  # stored ready to send (a cluster's Redis)
        return encode(ok) + b"".join(frames)
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
    shared = server.shared_history
    # On a cluster node the line's id is given by the room's order in Redis (0 until then).
    if shared is None:
        server.message_ids = message_id = server.message_ids + 1
    else:
        message_id = 0
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
    if shared is not None:  # stored, ordered and delivered by the cluster (``line_ordered``)
        shared.check_line(conn.client_id)
        shared.add_line(PendingLine(conn, conn.reserve_answer(), room, frame, line, req.request_id))
        return ()
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
        slot: ReservedSlot,
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


def line_ordered(
    server: Server, pending: PendingLine, message_id: int, error: RequestFailed | None
) -> None:
    """A cluster node's line is stored and ordered in Redis with id ``message_id`` (its
    members, on every node, get it from the room's stream), or it failed: the sender hears
    which."""
    conn = pending.conn
    if error is not None:
        if error.code == ErrorCode.HISTORY_UNAVAILABLE:
            server.history_failed(f"cannot store a line of {pending.room.name!r}: {error}")
        refusal = ErrorResponse.of(error.code, error.message, request_id=pending.request_id)
        conn.fill_answer(pending.slot, encode(refusal))
        return
    room = pending.room
    line = dataclasses.replace(pending.message, message_id=message_id)
    reached = max(0, server.directory.member_count(room) - 1)
    ok = _broadcast_done(server, conn, room, line, reached, pending.request_id)
    conn.fill_answer(pending.slot, encode(ok))


def _broadcast_done(
    server: Server, conn: Peer, room: Room, line: Message, reached: int, request_id: int
) -> BroadcastOk:
    """The log line and the answer of a BROADCAST whose line went out."""
    message_id = line.message_id
    sent_ms = line.sent_ms
    metrics = server.metrics
    metrics.broadcasts += 1
    metrics.broadcast_deliveries += reached
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


# --- the answers a table holds: raw bytes in, raw bytes out -----------------------------------
# Every table entry is an ``Answer``: it gets one complete frame (its header checked by the
# split loop: ``codec.HEADER_WORDS``) and returns where the next frame starts.  The three
# commonest frames (TIME, SEND, ACK) come in runs (a pipelining client writes many in one go),
# so their answers also take the frames of the same kind that follow, complete before
# ``bound`` (the split loop's next pressure check), and return after the last one they took:
# one call per run instead of one per frame (docs/BENCHMARKS.md, "Where the server's time
# goes").  A frame continues a run only if its header is exactly that of its kind (magic,
# word, a length its kind may have), which implies the split loop's check.


def time_(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    """TIME, and the TIMEs that follow it: one struct call each on the clock's pre-encoded
    answer, read once per run (a run takes well under a millisecond, the answer's
    resolution).  A TIME with a payload is BAD_PAYLOAD."""
    if start != end:
        server.metrics.frames[WORD_TIME] += 1
        server.reply_error(conn, request_id, ErrorCode.BAD_PAYLOAD, "TIME carries no payload")
        return end
    pack, tail = server.clock.now()
    append = conn.out.append
    append(pack(TIME_OK_PREFIX, request_id, tail))
    # The headers that may follow, read by one iterator over a copy of the whole frames
    # before bound (a few KB at most): no struct call per frame.
    pos = end
    for magic, word, request_id, length in _iter_headers(
        buf[end : end + (bound - end) // HEADER_SIZE * HEADER_SIZE]
    ):
        if word != WORD_TIME or length or magic != MAGIC:
            break
        append(pack(TIME_OK_PREFIX, request_id, tail))
        pos += HEADER_SIZE
    server.metrics.frames[WORD_TIME] += 1 + (pos - end) // HEADER_SIZE
    return pos


def send(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    """SEND, and the SENDs that follow it: each forwarded as a MESSAGE and answered OK, or
    refused.  Well-formed ASCII text to a READY client that is reading and has room in its
    unacknowledged-message budget is forwarded here with one struct call per frame; any other
    SEND (bad layout, TEXT_TOO_LONG, non-ASCII to validate, NO_SUCH_CLIENT, RECIPIENT_BUSY)
    takes ``_send_checked``, which decides in the spec's order.  At INFO each forward is also
    logged (``log_forward``): the level never picks the code that answers.

    A target is looked up and checked once for the SENDs to it in a row (a client writes a
    burst to one peer): nothing in the fast path can change its state, its write queue or
    its ledger, and its budget (``room``) is counted down per message; ``_send_checked``
    can, so the target is looked up again after it."""
    by_id = server.client_by_id
    max_text = server.max_text
    max_unacked = server.max_unacked
    log_forwards = server.events.info_on
    append = conn.out.append
    schedule_flush = server.schedule_flush
    # This client's MESSAGE fields at this run's time, and their packer (one per run).
    pack_message, message_prefix, message_base, block = message_packer(
        conn.direct_fields(), now_ms(), 0
    )
    # The ids given out: counted here, stored in the server before anything else reads it.
    first_id = message_id = server.message_ids + 1
    message_id -= 1
    refused = 0
    # A frame starting past these does not end before bound: past the first, nor a SEND
    # with its target and text length (read with its header in one struct call).
    last_header = bound - HEADER_SIZE
    last_send = bound - SEND_FRAME_HEAD
    looked_up = -1  # the target id the cached target (or its absence) is for
    room = 0  # messages the cached target may still be sent (0: none, or no target)
    target_out: list[bytes] = NO_OUT
    awaiting: dict[int, Peer] = NO_ACKS
    if end - start >= 8:
        target_id, text_len = unpack_send_head(buf, start)
    else:  # no target: the slow path answers it
        target_id = text_len = 0
    while True:
        # A payload under 8 bytes has no target: it is never looked up, and it takes the
        # slow path (room 0, or a text_len read from the next frame's bytes, >= 0, that
        # cannot equal its negative end - start - 8).
        if target_id != looked_up and end - start >= 8:
            looked_up = target_id
            room = 0
            target = by_id.get(target_id)
            if target is not None and target.state is _READY and not target.write_paused:
                room = max_unacked - len(target.awaiting_ack)
                if room > 0:
                    awaiting = target.awaiting_ack
                    if awaiting is NO_ACKS:  # its first since it was idle
                        awaiting = target.awaiting_ack = {}
                    target_out = target.out
                    if not target_out and not target.in_batch:
                        schedule_flush(target)
                        if target_out is NO_OUT:  # idle until now: a list of its own
                            target_out = target.out = []
        if (
            room > 0
            and text_len == end - start - 8
            and text_len <= max_text
            and (text := buf[start + 8 : end]).isascii()  # ASCII is valid UTF-8
        ):
            message_id += 1
            room -= 1
            target_out.append(
                pack_message(message_prefix, message_base + text_len, message_id, block, text_len)
                + text
            )
            awaiting[message_id] = conn
            append(pack_send_ok(SEND_OK_PREFIX, request_id, SEND_OK_MIDDLE, message_id, target_id))
            if log_forwards:
                server.message_ids = message_id
                log_forward(server, conn, target_id, message_id, text_len)
        else:
            server.message_ids = message_id
            _send_checked(server, conn, request_id, buf, start, end)
            refused += 1 - (server.message_ids - message_id)
            message_id = server.message_ids
            looked_up = -1  # anything may have changed: look the next target up again
            room = 0
            if conn.state is not _READY or conn.write_paused:
                pos = end  # its ERROR passed its mark (or its hard limit): the loop decides
                break
            append = conn.out.append  # a SEND to another node queues later answers anew
        pos = end
        if pos <= last_send:
            magic, word, request_id, length, target_id, text_len = unpack_send_frame(buf, pos)
        elif pos <= last_header:  # too short to be a SEND with a target: the slow path's
            magic, word, request_id, length = _unpack_header(buf, pos)
            target_id = text_len = room = 0
        else:
            break
        start = pos + HEADER_SIZE
        end = start + length
        if word != WORD_SEND or end > bound or magic != MAGIC:
            break
    server.message_ids = message_id
    # Its first forwarded message is timed to its RECEIPT.
    metrics = server.metrics
    metrics.frames[WORD_SEND] += message_id - first_id + 1 + refused
    if message_id >= first_id:
        samples = metrics.receipt_samples  # inline: a call per run cost 1 % of a message
        if len(samples) < MAX_RECEIPT_SAMPLES:
            samples[first_id] = _monotonic()
    return pos


def _send_checked(
    server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int
) -> None:
    """A SEND that ``send`` could not forward on sight: refused with the first rule it
    breaks, in the spec's order, or forwarded after its UTF-8 is validated."""
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
    if target is None and server.directory.reaches(target_id):
        # Another cluster node's client: answered when that node has handed it over.
        server.message_ids = message_id = server.message_ids + 1
        try:
            server.directory.send_elsewhere(conn, request_id, target_id, message_id, text)
        except RequestFailed as failure:
            server.reply_error(conn, request_id, failure.code, failure.message)
        return
    if target is None or target.state is not _READY:
        server.reply_error(
            conn, request_id, ErrorCode.NO_SUCH_CLIENT, f"no client #{target_id} is connected"
        )
        return
    try:
        message_id = forward_direct(server, conn, target, text)
    except RequestFailed as failure:
        server.reply_error(conn, request_id, failure.code, failure.message)
        return
    # conn is in its data_received batch (answers run nowhere else) and not closing (the
    # batch stops at once when it is): its answer joins the batch's single write.
    conn.out.append(encode_send_ok(request_id, message_id, target_id))


def ack(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    """ACK, and the ACKs that follow it: one per delivered message, never answered; each
    message's sender hears DELIVERED (``settle``).  A malformed ACK (not a u64) is ignored."""
    if end - start != 8:
        server.metrics.frames[WORD_ACK] += 1
        return end
    acked = [unpack_ack(buf, start)[0]]
    # The frames that may follow, each read whole (header and id) by one iterator over a
    # copy of the 22-byte slots before bound, as TIME's run does.
    pos = end
    for magic, word, _, length, message_id in _iter_acks(
        buf[end : end + (bound - end) // _ACK_FRAME * _ACK_FRAME]
    ):
        if word != WORD_ACK or length != 8 or magic != MAGIC:
            break
        acked.append(message_id)
        pos += _ACK_FRAME
    server.metrics.frames[WORD_ACK] += len(acked)
    settle(server, conn, acked)
    return pos


def acks(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    """ACKS (protocol version 2): many delivered messages in one frame, settled as ACK's
    are.  A malformed one is ignored, as an indication is never answered."""
    server.metrics.frames[_WORD_ACKS] += 1
    acked = parse_acks(buf, start, end)
    if acked:
        settle(server, conn, acked)
    return end


def settle(server: Server, conn: Peer, acked: Sequence[int]) -> None:
    """The messages ``acked`` reached ``conn``: their senders hear DELIVERED, once each.  A
    sender that negotiated version 2 gets one RECEIPTS frame for all of its messages here,
    any other a RECEIPT per message.  An id that is unknown, settled, not ``conn``'s, or
    whose sender has gone changes nothing."""
    metrics = server.metrics
    samples = metrics.receipt_samples
    if samples:
        # A sampled SEND is the first of its run (metrics.py), and its recipient acknowledges
        # in order: looked for at the start of each batch only, not at every id.
        sent = samples.pop(acked[0], None)
        if sent is not None:
            elapsed = _monotonic() - sent
            metrics.receipt_buckets[_bucket_of(RECEIPT_BUCKETS, elapsed)] += 1
            metrics.receipt_sum += elapsed
    pop = conn.awaiting_ack.pop
    client_id = conn.client_id
    batches: dict[Peer, list[int]] | None = None
    # The ids of one sender come in a row (a client acknowledges what one read brought, and
    # a burst comes from one sender): while the sender is the one before's, its id joins
    # that sender's RECEIPTS at once.  A version-1 sender is never remembered so (each of
    # its ids is a RECEIPT of its own), nor is a gone one.
    last: object = _NOBODY
    ids: list[int] = []
    for message_id in acked:
        sender = pop(message_id, None)
        if sender is last:
            ids.append(message_id)
            continue
        # A sender is READY until it closes (it could not SEND before), and an identity
        # test is cheaper than an IntEnum comparison.
        if sender is None or sender.state is not _READY:
            continue
        if sender.receipts_batched:
            if batches is None:
                batches = {}
            known = batches.get(sender)
            if known is None:
                ids = batches[sender] = [message_id]
            else:
                ids = known
                ids.append(message_id)
            last = sender
            continue
        last = _NOBODY
        sender_out = sender.out
        if not sender_out and not sender.in_batch:
            server.schedule_flush(sender)
            if sender_out is NO_OUT:  # idle until now: a list of its own
                sender_out = sender.out = []
        sender_out.append(pack_receipt(RECEIPT_HEAD, message_id, client_id, _DELIVERED))
    if batches:
        for sender, ids in batches.items():
            send_receipts(server, sender.client_id, client_id, _DELIVERED, ids)


def send_receipts(
    server: Server, sender_id: int, target: int, status: int, message_ids: list[int]
) -> None:
    """RECEIPTS to ``sender_id`` for ``message_ids`` to ``target``, MAX_IDS_PER_FRAME a frame."""
    step = defaults.MAX_IDS_PER_FRAME
    for first in range(0, len(message_ids), step):
        frame = encode_receipts(target, status, message_ids[first : first + step])
        server.directory.deliver(sender_id, frame)


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
    awaiting_of(target)[message_id] = conn
    server.metrics.sample_send(message_id)
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
    bound: int,
) -> int:
    """LIST without ClientInfo objects: each record is the member's cached sender block and
    its connect time (profile: a 1,000-client LIST spent ~4 ms building and encoding
    1,000 ClientInfo objects field by field)."""
    server.metrics.frames[_WORD_LIST] += 1
    room = parse_list(buf, start, end)
    if room is None:  # malformed: the general decoder names the problem
        event = decode_payload(KEY_LIST, request_id, buf, start, end)
        problem = (
            event.error
            if isinstance(event, InvalidFrame)
            else ProtocolError(ErrorCode.BAD_PAYLOAD, "LIST carries one str16 of UTF-8")
        )
        server.reply_error(conn, request_id, problem.code, problem.message)
        return end
    members: list[Listed]
    if room:
        found = server.directory.room(room.decode("utf-8"))
        if found is None and server.directory.list_elsewhere(conn, request_id, room):
            return end  # a cluster's room with no member on this node: answered later
        members = server.directory.members(found) if found else []
    else:
        members = server.directory.listed()  # in id order, every node's on a cluster
    if server.tokens:
        members = [c for c in members if c.authenticated]
    records = [client_record(c.sender_fields(), c.connected_ms) for c in members]
    conn.send_raw(encode_list_ok(request_id, room, records))
    return end


def ping(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    server.metrics.frames[_WORD_PING_REQUEST] += 1
    if start != end:
        server.reply_error(conn, request_id, ErrorCode.BAD_PAYLOAD, "PING carries no payload")
    else:
        conn.send_raw(encode_ping_ok(request_id))
    return end


def pong(
    server: Server,
    conn: Peer,
    request_id: int,
    buf: Buffer,
    start: int,
    end: int,
    bound: int,
) -> int:
    """Receiving it was the point: the connection's last_seen is already updated."""
    server.metrics.frames[_WORD_PONG] += 1
    return end


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

#: Frame key -> the answer that reads its raw bytes (the rest are decoded: ``HANDLERS``).
RAW_ANSWERS: dict[int, Answer] = {
    KEY_TIME: time_,
    KEY_SEND: send,
    KEY_ACK: ack,
    KEY_ACKS: acks,
    KEY_LIST: list_fast,
    KEY_PING_REQUEST: ping,
    KEY_PONG: pong,
}
#: The answers that take runs of frames (the rest answer one frame and return its end).
RUNS: frozenset[Answer] = frozenset({time_, send, ack})
#: The size of every frame after the first in a run, for the answers whose runs go on only
#: over frames of one size (a TIME has no payload, an ACK one u64): how many frames a run
#: took is then a division, not a walk over their headers (``count_frames``).
RUN_FRAME_SIZES: dict[Answer, int] = {time_: HEADER_SIZE, ack: HEADER_SIZE + 8}


# --- the tables: header word -> the answer, one table per state, wrapped by the gates -------


def _decoded(key: int) -> Answer:
    """The table's entry for a request answered by a message handler (``HANDLERS``): its
    payload decoded, then answered by ``SwitchboardServer.dispatch`` (ERROR if malformed).
    Also the entry for words no request type has (``OTHER``): the decoder names them."""

    counted = header_word(key) if key else OTHER  # any other word is one "unknown"

    def answer(
        server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int, bound: int
    ) -> int:
        server.metrics.frames[counted] += 1
        word = _unpack_header(buf, start - HEADER_SIZE)[1]
        server.dispatch(conn, decode_payload(word & 0xFFFFFF, request_id, buf, start, end))
        if conn.answering_later:
            raise StopReading(end)  # nothing more is read until that answer is given
        return end

    answer.__qualname__ = answer.__name__ = f"decoded_{key:06x}" if key else "other"
    return answer


def auth_required(
    server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int, bound: int
) -> int:
    """Every request but HELLO before a token server has seen a valid one: refused, closed."""
    server.refuse(conn, ErrorCode.AUTH_REQUIRED, request_id)
    return end


def shutting_down(
    server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int, bound: int
) -> int:
    """Every request once the server is shutting down."""
    server.refuse(conn, ErrorCode.SHUTTING_DOWN, request_id)
    return end


def _rate_limited(answer: Answer) -> Answer:
    """``answer`` behind the connection's token bucket (``Server.rate`` requests/s, bursts of
    ``Server.burst``): a request with no token left is RATE_LIMITED.  The bucket is kept as
    one number, the time it is full again (the generic cell rate algorithm: a request
    moves it ``1 / rate`` later, and ``burst - (full_at - now) * rate`` tokens are left), so
    a connection holds one float and the check is one subtraction; a run answer is given a
    bound within which no more frames than tokens can end (a frame is at least a header),
    and charged for the frames it took."""
    runs = answer in RUNS
    frame_size = RUN_FRAME_SIZES.get(answer, 0)

    def gate(
        server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int, bound: int
    ) -> int:
        now = _monotonic()
        full_at = conn.bucket_full_at
        if full_at < now:
            full_at = now
        tokens = server.burst - (full_at - now) * server.rate
        if tokens < 1.0:
            server.refuse(conn, ErrorCode.RATE_LIMITED, request_id)
            return end
        if not runs:
            conn.bucket_full_at = full_at + server.rate_step
            return answer(server, conn, request_id, buf, start, end, end)
        pos = start - HEADER_SIZE
        limit = pos + int(tokens) * HEADER_SIZE
        if limit < bound:
            bound = limit if limit > end else end
        stop = answer(server, conn, request_id, buf, start, end, bound)
        taken = 1 + (stop - end) // frame_size if frame_size else count_frames(buf, pos, stop)
        conn.bucket_full_at = full_at + taken * server.rate_step
        return stop

    gate.__qualname__ = gate.__name__ = f"rate_limited_{answer.__name__}"
    return gate


def count_frames(buf: Buffer, pos: int, stop: int) -> int:
    """How many frames start in ``buf[pos:stop]`` (complete ones, their headers checked)."""
    frames = 0
    while pos < stop:
        pos += HEADER_SIZE + _unpack_header(buf, pos)[3]
        frames += 1
    return frames


def _traced(answer: Answer) -> Answer:
    """``answer`` with every frame it gets traced first (``Server.trace``), refused ones
    too: one frame per call, so that the trace shows each before its answer."""

    def trace(
        server: Server, conn: Peer, request_id: int, buf: Buffer, start: int, end: int, bound: int
    ) -> int:
        tracer = server.trace
        if tracer is not None:
            word = _unpack_header(buf, start - HEADER_SIZE)[1]
            event = decode_payload(word & 0xFFFFFF, request_id, buf, start, end)
            tracer("<<-", conn, event, bytes(buf[start - HEADER_SIZE : end]))
        return answer(server, conn, request_id, buf, start, end, end)

    trace.__qualname__ = trace.__name__ = f"traced_{answer.__name__}"
    return trace


#: The key under which a table holds the answer for words it has no entry for (no header
#: word is 0: its version byte is at least 1).
OTHER: Final = 0

#: What a connection answers by: header word -> answer, and ``OTHER``.
Table = dict[int, Answer]


def _wrap(table: Table, gate: Callable[[Answer], Answer], requests_only: bool) -> Table:
    return {
        word: gate(answer) if word < WORD_FIRST_NON_REQUEST or not requests_only else answer
        for word, answer in table.items()
    }


def tables(
    *, rate_limited: bool = False, traced: bool = False, closing: bool = False
) -> dict[ConnectionState, Table]:
    """The tables a connection answers by, by state (a server builds its own, so that a test
    may wrap an entry without touching another server's).  READY: every request type, ACK
    and PONG, and ``OTHER`` for the rest (decoded, so that the decoder names the problem).
    HANDSHAKE (a token server before a valid HELLO): HELLO and the indications as in READY,
    every other request, and ``OTHER``, AUTH_REQUIRED.

    The gates are tables that wrap these, never second implementations: ``rate_limited``
    puts every request behind the connection's token bucket, ``closing`` (the server is
    shutting down) refuses every request, and ``traced`` shows every frame to the server's
    tracer before it is answered (outermost: refused frames are traced too)."""
    ready: Table = {header_word(key): answer for key, answer in RAW_ANSWERS.items()}
    for request_class in HANDLERS:
        key = (MessageClass.REQUEST << 16) | request_class.MESSAGE_TYPE
        ready.setdefault(header_word(key), _decoded(key))
    ready[OTHER] = _decoded(OTHER)
    if closing:
        ready = _wrap(ready, lambda answer: shutting_down, requests_only=True)
    elif rate_limited:
        ready = _wrap(ready, _rate_limited, requests_only=True)
    handshake: Table = {
        word: (answer if word == WORD_HELLO or word >= WORD_FIRST_NON_REQUEST else auth_required)
        for word, answer in ready.items()
    }
    handshake[OTHER] = auth_required
    by_state = {ConnectionState.HANDSHAKE: handshake, ConnectionState.READY: ready}
    if traced:
        for state, table in by_state.items():
            by_state[state] = _wrap(table, _traced, requests_only=False)
    return by_state
