"""One ClientConnection per client: it feeds bytes to the decoder and writes frames.

It holds no global state (the server does); it moves bytes through a transport
(server/transport.py: TCP or TLS today, any carrier of bytes next), keeps the
per-connection facts and its state (server/states.py), and flow-controls its transport.
It decides nothing about requests: its split loop checks each frame's header and hands the
frame to the answer its header word has in the connection's table (server/handlers.py says
where each request is answered), which may take the run of frames of its kind that follow.

Back-pressure: what is queued for a client (its ``out`` list, then its transport's buffer)
is bounded by the write limits whatever a batch holds.  Frames queued through send/send_raw
are counted (``out_bytes``) and written to the transport once they reach ``server.flush_at``,
and the split loop writes what its answers queued every PRESSURE_CHECK_BYTES of requests, so
that a transport's high-water mark (``pause_writing``) is seen within the batch that passes
it: a SEND after that gets RECIPIENT_BUSY, message by message.  A client whose own answers
pass the mark stops being read, and the rest of the batch it sent is kept unprocessed in the
decoder until its transport drains below the low-water mark (``resume_writing``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from switchboard import defaults
from switchboard.protocol import (
    HEADER_SIZE,
    MAGIC,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    InvalidFrame,
    LeftReason,
    ProtocolError,
    encode,
)
from switchboard.protocol.codec import FIRST_HEADER_WORD, HEADER_WORDS, LAST_HEADER_WORD
from switchboard.protocol.fastpath import direct_fields, sender_block

from .errors import StopReading
from .handlers import OTHER, Server, Table
from .logs import RepeatedEvents
from .registry import NO_ACKS, NO_OUT, NO_ROOMS, Peer
from .states import TRANSITIONS, ConnectionState, initial_state
from .transport import Transport

#: ``trace(direction, connection, event, raw)``: called for every frame when tracing is on;
#: ``raw`` is the frame's bytes as they crossed the wire (header included).
Tracer = Callable[[str, Peer, Frame | InvalidFrame, bytes], None]


class ConnectionServer(Server, Protocol):
    """What a connection uses of the server (server.app.SwitchboardServer implements it),
    besides what its handlers use: admission and release, the tables, tracing of what it
    writes, and the shared write queue."""

    #: handlers.tables(): the table a connection answers by in each state.
    tables: dict[ConnectionState, Table]
    flush_at: int
    #: The largest payload a header may announce (config.max_frame less the header), one int
    #: for every connection's split loop and decoder.
    max_payload: int
    #: time.time() less time.monotonic() when the server started: a monotonic time's wall
    #: clock time.
    wall_offset: float
    #: Connections with frames queued outside their own batch (written by flush_pending).
    dirty: list[Peer]

    def admit(self, conn: ClientConnection) -> None: ...
    def release(self, conn: ClientConnection) -> None: ...
    def flush_pending(self) -> None: ...
    def trace_bytes(self, direction: str, conn: Peer, data: bytes) -> None: ...


_monotonic = time.monotonic
_unpack_header = HEADER_WORDS.unpack_from
_READY = ConnectionState.READY
_HANDSHAKE = ConnectionState.HANDSHAKE
_HELD = ConnectionState.HELD
_CLOSING = ConnectionState.CLOSING
_CLOSED = ConnectionState.CLOSED
#: Bytes of requests the split loop takes between two writes of what it has queued (for its
#: own client and, through ``server.flush_pending``, for the clients it forwarded to) and a
#: look at its own client's high-water mark.  What the run answers queue without counting it
#: (OK(TIME), OK(SEND), forwarded MESSAGEs, RECEIPTs) is at most a few times the requests it
#: came from, so only some kilobytes of it queue unlooked-at: a SEND's busy check is never
#: more than 4 KB of requests behind.  The cost is one comparison per frame, and the writes
#: only in batches over 4 KB.
PRESSURE_CHECK_BYTES = 4096
#: Seconds one batch may run before it yields to the other connections (defaults.py says why);
#: looked at after each table call (one frame, or one run of TIMEs, SENDs or ACKs) and at
#: each pressure check.
BATCH_TIME_SLICE_S = defaults.BATCH_TIME_SLICE_S


class ClientConnection(asyncio.Protocol):
    """The server's side of one client connection."""

    __slots__ = (
        "answering_later",
        "auth_hold",
        "authenticated",
        "awaiting_ack",
        "bucket_full_at",
        "client_id",
        "close_reason",
        "decoder",
        "in_batch",
        "ip",
        "last_seen",
        "left_reason",
        "log_runs",
        "nick",
        "opened_at",
        "out",
        "out_bytes",
        "partial_since",
        "pinged",
        "port",
        "receipts_batched",
        "released",
        "reserved",
        "rooms",
        "sender",
        "server",
        "state",
        "table",
        "transport",
        "write_paused",
    )

    def __init__(self, server: ConnectionServer) -> None:
        self.server = server
        self.transport: Transport | None = None
        #: The partial frame received and not complete yet, if any: None (the usual case)
        #: until a read ends inside a frame, so that an idle connection holds no decoder
        #: and no buffer (``_decoder``), and again once it has been idle for an interval
        #: (``shed``).
        self.decoder: FrameDecoder | None = None
        self.client_id = 0
        self.ip = ""
        self.port = 0
        self.nick = ""
        self.last_seen = 0.0
        self.pinged = False
        #: NO_OUT (shared, empty) until something is queued, and again once it is written
        #: outside a batch; during a batch a list of its own, that the handlers append to.
        self.out: list[bytes] = NO_OUT
        #: Bytes queued in ``out`` through send/send_raw since the last flush, written out
        #: once they reach ``server.flush_at`` (what the run answers queue directly is not
        #: counted: it writes it every PRESSURE_CHECK_BYTES of requests).
        self.out_bytes = 0
        #: Answers reserved and not filled yet (``reserve_answer``), oldest first, each with
        #: what was queued after it; None (the usual case) when there are none.
        self.reserved: deque[ReservedAnswer] | None = None
        #: While answers are reserved: what may be written before the first of them (None:
        #: nothing).
        self.released: list[bytes] | None = None
        #: A request is being answered later (server.answer_later): nothing more is read.
        self.answering_later = False
        self.rooms: set[str] | frozenset[str] = NO_ROOMS
        #: This client's MESSAGE sender fields, pre-encoded (None: to be rebuilt).
        self.sender: bytes | None = None
        #: MESSAGEs sent to this client that it has not acknowledged yet: id -> sender (one
        #: dict entry per message; an empty dict is also smaller than an empty set).
        #: NO_ACKS (shared, never written) until the first MESSAGE is forwarded to it.
        self.awaiting_ack: dict[int, Peer] = NO_ACKS
        #: Its receipts in RECEIPTS frames: set by a HELLO that negotiates version 2.
        self.receipts_batched = False
        #: Where it is in its life (server/states.py: the transitions and their rules).
        self.state = initial_state(bool(server.tokens))
        #: header word -> the function that answers it, swapped with the state (handlers.tables).
        self.table = server.tables[self.state]
        self.close_reason = "closed by peer"
        self.left_reason = LeftReason.DISCONNECTED
        self.write_paused = False
        #: True while data_received runs: replies queued then are written at its end.
        self.in_batch = False
        #: False until HELLO presents a valid token, on servers that require one (set by
        #: ``authenticate``, the HANDSHAKE -> READY transition; LIST shows only these).
        self.authenticated = not server.tokens
        #: Seconds its last HELLO was held before its token was checked (server.auth).
        self.auth_hold = 0.0
        #: Its repeated log lines being summarised (server.client_event); None: none yet.
        self.log_runs: RepeatedEvents | None = None
        #: monotonic time of connect, and since when a frame has been half-received (0: none).
        self.opened_at = 0.0
        self.partial_since = 0.0
        #: Its request rate limit, as the time its token bucket is full again (handlers.
        #: _rate_limited): full from the start, one float shared by every connection.
        self.bucket_full_at = 0.0

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport | Transport) -> None:
        # asyncio's and uvloop's transports (which implement asyncio.Transport without
        # subclassing it) have every method of ours; any other carrier passes its own.
        self.transport = carrier = cast(Transport, transport)
        peer = carrier.get_extra_info("peername")
        if peer:
            # Interned: the connections from one address share one string (idle memory).
            self.ip, self.port = sys.intern(peer[0]), peer[1]
        # TCP keepalive is not set here: accepted sockets inherit it from their listener
        # (transport.enable_keepalive), which saves a socket object and four setsockopt
        # calls per connection.
        carrier.set_write_buffer_limits(high=self.server.config.write_high_water)
        self.last_seen = self.opened_at = _monotonic()
        self.server.admit(self)

    def data_received(self, data: bytes) -> None:
        # The hot path: split frames, check each header once, and hand each frame to the
        # answer its word has in this connection's table (server/handlers.py); an answer
        # may take a run of frames of its kind and returns where the next frame starts.  The
        # split loop is inlined because a generator per batch cost more than the work it
        # split (docs/BENCHMARKS.md, "Where the server's time goes"); the decoder still
        # decides what a bad header is (reject) and keeps partial frames.
        self.last_seen = now = _monotonic()
        self.pinged = False
        server = self.server
        server.metrics.bytes_in += len(data)
        if self.state > _READY:  # held, or closing: nothing more is read
            return
        decoder = self.decoder
        if self.write_paused:
            # Read before the pause took effect: kept with the rest, for resume_writing.
            if decoder is None:
                decoder = self._decoder()
            decoder.keep(decoder.split_input(data)[0], 0)
            return
        table = self.table
        buf: bytes | bytearray = data
        pos = 0
        held = False  # stopped with requests left: back-pressure, or the time slice is up
        self.in_batch = True
        if self.out is NO_OUT:  # the answers' list, kept (not replaced) until the batch ends
            self.out = []
        try:
            if decoder is not None:
                buf, pos = decoder.split_input(data)
            size = len(buf)
            # Frames ending past ``bound`` need more data, or are due for a pressure check:
            # one comparison per frame for both (answers that take runs stop there too).
            bound = pos + PRESSURE_CHECK_BYTES
            if bound > size:
                bound = size
            max_payload = server.max_payload
            while size - pos >= HEADER_SIZE:
                magic, word, request_id, length = _unpack_header(buf, pos)
                # The header is checked before waiting for the payload, as frames() does.
                if (
                    magic != MAGIC
                    or not FIRST_HEADER_WORD <= word <= LAST_HEADER_WORD
                    or length > max_payload
                ):
                    (decoder or self._decoder()).reject(buf, pos)
                start = pos + HEADER_SIZE
                end = start + length
                if end > bound:
                    if end > size:
                        break
                    # What the batch queued so far goes out, so that the transports' marks
                    # see it (pause_writing); past its own mark, this frame and the rest
                    # wait in the decoder until the client has read (resume_writing).
                    if server.dirty:
                        server.flush_pending()
                    if self.out or self.released:
                        self.flush()
                    if self.state > _READY:  # dropped by that write: past its hard limit
                        return
                    if self.write_paused or _monotonic() - now > BATCH_TIME_SLICE_S:
                        held = True
                        break
                    bound = end + PRESSURE_CHECK_BYTES
                    if bound > size:
                        bound = size
                try:
                    answer = table[word]
                except KeyError:
                    answer = table[OTHER]
                pos = answer(server, self, request_id, buf, start, end, bound)
                if self.state > _READY:  # closed, or its HELLO is held (server._hold_hello)
                    return
                if self.write_paused or _monotonic() - now > BATCH_TIME_SLICE_S:
                    held = True  # its answers passed the mark, or its turn is over
                    break
                table = self.table  # HELLO may have moved it on (HANDSHAKE -> READY)
            if pos < size:
                if held:  # complete requests wait on us, not on the peer
                    self.partial_since = 0.0
                    if not self.write_paused:
                        self._yield_turn()
                elif not self.partial_since:
                    self.partial_since = now
            else:
                self.partial_since = 0.0
        except StopReading as stop:  # a request answered later: the rest waits for it
            pos = stop.resume_at
            self.partial_since = 0.0
            if self.transport is not None:
                self.transport.pause_reading()
        except ProtocolError as err:
            self.fail(err.code, err.message, request_id=err.request_id)
        except Exception:  # a server bug must not take the connection's peers down with it
            logging.getLogger("switchboard.server").exception(
                "internal error handling #%d", self.client_id
            )
            self.fail(ErrorCode.INTERNAL_ERROR, "internal server error")
        finally:
            # The partial frame left, if any (nothing once failed).
            decoder = self.decoder
            if decoder is not None:
                decoder.keep(buf, pos)
            elif pos < len(buf):
                self._decoder().keep(buf, pos)
            self.in_batch = False
            if self.out or self.released:
                self.flush()  # this batch's replies (and answers given meanwhile), one write

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.state < _CLOSING:
            self.close_reason = f"connection lost ({exc.__class__.__name__}: {exc})"
        self._enter(_CLOSED)
        self._drop_queued()
        self.server.release(self)

    def pause_writing(self) -> None:
        # The peer is not reading: stop reading its requests, whose answers would pile up.
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        # Below the low-water mark: the peer is reading, so it is alive, and what it sent
        # before the pause (kept in the decoder) is processed next, before anything new.
        self.write_paused = False
        transport = self.transport
        if transport is None or self.state > _READY:
            return
        self.last_seen = _monotonic()
        self.pinged = False
        transport.resume_reading()
        if self.buffered:
            # Not from here: a transport may call this from inside a write.
            asyncio.get_running_loop().call_soon(self._process_held)

    @property
    def tokens(self) -> float:
        """The requests its rate limit lets through now (its token bucket's level)."""
        server = self.server
        due = self.bucket_full_at - _monotonic()
        return server.burst - due * server.rate if due > 0 else server.burst

    @property
    def connected_ms(self) -> int:
        """When it connected, in milliseconds since the epoch: its monotonic ``opened_at``
        on the wall clock of the server's start (no int kept per connection; a later step
        of the wall clock does not move it)."""
        return int((self.opened_at + self.server.wall_offset) * 1000)

    def _decoder(self) -> FrameDecoder:
        """The connection's decoder, made on first need (a read that ends inside a frame, a
        bad header)."""
        decoder = self.decoder
        if decoder is None:
            decoder = self.decoder = FrameDecoder(max_frame=self.server.config.max_frame)
        return decoder

    @property
    def buffered(self) -> int:
        """Bytes received and not processed yet: a partial frame, or requests held back."""
        decoder = self.decoder
        return 0 if decoder is None else decoder.buffered

    def shed(self) -> None:
        """Give back what an idle connection keeps only for its next burst: an empty
        decoder and an empty acknowledgement ledger (the heartbeat calls this once a
        client has been silent for an interval; both are made again on first need)."""
        decoder = self.decoder
        if decoder is not None and not decoder.buffered and not decoder.failed:
            self.decoder = None
        if not self.awaiting_ack:
            self.awaiting_ack = NO_ACKS

    def _yield_turn(self) -> None:
        """Let the other connections be served before this one's next requests."""
        if self.transport is not None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._process_held)

    def _process_held(self) -> None:
        """The requests held back (back-pressure, or the end of a time slice), unless this
        client has been paused again or closed meanwhile."""
        if self.state > _READY or self.write_paused or self.in_batch or self.transport is None:
            return
        self.transport.resume_reading()
        self.data_received(b"")

    # --- writing -----------------------------------------------------------------------------

    def send(self, msg: Frame) -> None:
        """Queue ``msg``; the server flushes every connection's queue once per loop pass."""
        if self.state < _CLOSING:
            self.send_raw(encode(msg))

    def sender_fields(self) -> bytes:
        """The pre-encoded sender part of MESSAGEs from this client."""
        sender = self.sender
        if sender is None:
            sender = self.sender = sender_block(self.client_id, self.ip, self.port, self.nick)
        return sender

    def direct_fields(self) -> bytes:
        """The pre-encoded sender and empty room of direct MESSAGEs from this client (read
        once per batch of SENDs: not worth a cache of its own)."""
        return direct_fields(self.sender_fields())

    def send_raw(self, data: bytes) -> None:
        """Queue already-encoded frames (written at once when the queue reaches
        ``server.flush_at``, so that the transport's limits see them)."""
        if self.state >= _CLOSING:
            return
        out = self.out
        if not out:
            if out is NO_OUT:
                out = self.out = []
            if not self.in_batch:
                self.server.schedule_flush(self)
        out.append(data)
        queued = self.out_bytes + len(data)
        if queued < self.server.flush_at:
            self.out_bytes = queued
        else:
            self.flush()

    def flush(self) -> None:
        if self.reserved is not None:
            self._flush_released()  # what waits behind an answer not given yet stays
            return
        out = self.out
        self.out_bytes = 0
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if self.in_batch:
            out.clear()  # the batch's answers go on appending to this list
        else:
            self.out = NO_OUT  # an idle connection keeps no list (send_raw makes one)
        transport = self.transport
        if transport is not None and self.state < _CLOSING:
            self._write(transport, data)

    def _write(self, transport: Transport, data: bytes) -> None:
        server = self.server
        if server.trace is not None:
            server.trace_bytes("->>", self, data)  # traced as it leaves, decoded again
        server.metrics.bytes_out += len(data)
        transport.write(data)
        if self.write_paused:
            pending = transport.get_write_buffer_size()
            if pending > server.config.write_hard_limit:
                server.metrics.slow_reader_drops += 1
                self.abort(f"too slow: {pending} bytes unsent")

    def _flush_released(self) -> None:
        released = self.released
        self.out_bytes = 0
        if not released:
            return
        self.released = None
        transport = self.transport
        if transport is not None and self.state < _CLOSING:
            self._write(transport, b"".join(released))

    # --- answers given later, in their place ----------------------------------------------

    def reserve_answer(self) -> ReservedAnswer:
        """Keep the current request's place among this connection's answers: what is queued
        from now on (answers, MESSAGEs) waits until ``fill_answer`` gives this one, so that
        answers still come in request order (docs/PROTOCOL.md)."""
        slot = ReservedAnswer()
        reserved = self.reserved
        if reserved is None:
            reserved = self.reserved = deque()
            if self.out:  # what came before goes out at the next flush, as usual
                self.released = self.out
                if not self.in_batch:
                    self.server.schedule_flush(self)
        reserved.append(slot)
        self.out = slot.after
        return slot

    def fill_answer(self, slot: ReservedAnswer, data: bytes) -> None:
        """Give the reserved answer; it and whatever waited behind it, up to the next answer
        not given yet, are written."""
        slot.data = data
        reserved = self.reserved
        if reserved is None or self.state >= _CLOSING or reserved[0].data is None:
            return  # (or an earlier answer is still to come: this one waits for it)
        ready = self.released
        pending_flush = bool(ready)  # scheduled when it was filled
        if ready is None:
            ready = self.released = []
        while reserved and reserved[0].data is not None:
            done = reserved.popleft()
            ready.append(done.data)  # type: ignore[arg-type]  # not None: checked above
            ready += done.after
        if not reserved:  # the last one's followers were ``out``: all of it may go now
            self.reserved = None
            self.released = None
            self.out = ready
        if not pending_flush and not self.in_batch:
            self.server.schedule_flush(self)  # one write for every answer a batch gives

    # --- transitions (server/states.py has their table) ---------------------------------------

    def _enter(self, new: ConnectionState) -> None:
        if new is not self.state:
            if new not in TRANSITIONS[self.state]:
                raise RuntimeError(f"{self!r}: no transition from {self.state.name} to {new.name}")
            self.state = new
            self.take_table()

    def take_table(self) -> None:
        """Answer by the server's table for this state (h11's _respond_to_state_changes swaps
        its readers the same way); states that read nothing keep the last one, which they
        never consult.  Also called when the server swaps its tables (shutdown)."""
        self.table = self.server.tables.get(self.state, self.table)

    def authenticate(self) -> None:
        """HELLO presented a valid token: HANDSHAKE -> READY."""
        self.authenticated = True
        self._enter(_READY)

    def hold(self) -> None:
        """Its HELLO is held (the failed-HELLO throttle): HANDSHAKE -> HELD.  Nothing more is
        read until ``end_hold``; the requests pipelined behind the HELLO stay in the decoder."""
        self._enter(_HELD)
        if self.transport is not None:
            self.transport.pause_reading()

    def end_hold(self) -> bool:
        """HELD -> HANDSHAKE, to answer the held HELLO; False if it closed meanwhile."""
        if self.state is not _HELD or self.transport is None or self.transport.is_closing():
            return False
        self._enter(_HANDSHAKE)
        return True

    def go_on_reading(self) -> None:
        """After a held HELLO's answer: read again, starting with the requests kept."""
        if self.state <= _READY and self.transport is not None:
            self.transport.resume_reading()
            self.data_received(b"")

    # --- closing -----------------------------------------------------------------------------

    def fail(self, code: ErrorCode, message: str, *, request_id: int = 0) -> None:
        """Answer with ERROR ``code`` and close (for the codes that close the connection)."""
        self.send(ErrorResponse.of(code, message, request_id=request_id))
        self.server.metrics.count_error(code)
        kind = "protocol error" if code <= ErrorCode.BAD_PAYLOAD else "closed"
        self.close(f"{kind}: {code.name} ({message})")

    def close(self, reason: str, left_reason: LeftReason = LeftReason.DISCONNECTED) -> None:
        """Flush what is queued, then close gracefully."""
        if self.state >= _CLOSING:
            return
        reserved = self.reserved
        if reserved is not None:
            # Closing: the answers still waiting are given up, not what follows them (the
            # ERROR or SHUTDOWN that says why the connection closes).
            kept = self.released or []
            for slot in reserved:
                if slot.data is not None:
                    kept.append(slot.data)
                kept += slot.after
            self.reserved = self.released = None
            self.out = kept
        self.flush()
        self._enter(_CLOSING)
        self.close_reason = reason
        self.left_reason = left_reason
        if self.transport is not None:
            self.transport.close()

    def abort(self, reason: str, left_reason: LeftReason = LeftReason.DISCONNECTED) -> None:
        """Close at once, dropping anything unsent (dead or hopelessly slow peers)."""
        if self.state < _CLOSING:
            self._enter(_CLOSING)
            self.close_reason = reason
            self.left_reason = left_reason
        self._drop_queued()
        if self.transport is not None:
            self.transport.abort()

    def _drop_queued(self) -> None:
        """Nothing queued is written any more (the connection is gone or dropped)."""
        # Dropped inside its own batch (a write there passed the hard limit), its answer
        # may still be appended to ``out`` (a SEND to itself: _send_checked's OK): a list of
        # its own, never written, not the shared NO_OUT, which has no append.
        self.out = [] if self.in_batch else NO_OUT
        self.out_bytes = 0
        self.reserved = self.released = None

    def __repr__(self) -> str:
        return f"<ClientConnection #{self.client_id} {self.ip}:{self.port}>"


class ReservedAnswer:
    """The place of an answer given later (``ClientConnection.reserve_answer``)."""

    __slots__ = ("after", "data")

    def __init__(self) -> None:
        self.data: bytes | None = None
        #: What was queued after it, written once it is given.
        self.after: list[bytes] = []
