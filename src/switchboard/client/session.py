"""The client's protocol state, sans I/O: shared by the blocking and the asyncio client.

    session = ClientSession()
    data = session.prepare(TimeRequest())     # -> (request_id, bytes to write)
    for event in session.receive(chunk):      # Reply(request_id, result | error) or indications
        ...
    session.take_outgoing()                   # automatic ACKs and PONGs to write

It matches responses to requests by id (checking that an OK answers the type asked),
answers PING with PONG and acknowledges every direct MESSAGE: with one ACKS for all the
MESSAGEs of one read when the server speaks protocol version 2 (its WELCOME says so), else
with an ACK each.  A RECEIPTS (version 2) is handed on as one RECEIPT per message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Final

from switchboard.defaults import HEARTBEAT_MISSES, MAX_IDS_PER_FRAME
from switchboard.protocol import (
    Ack,
    Acks,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    HistoryOk,
    InvalidFrame,
    Message,
    MessageClass,
    MessageFlags,
    MessageType,
    Ping,
    Pong,
    Receipt,
    Receipts,
    Shutdown,
    TimeOk,
    Welcome,
    encode,
)
from switchboard.protocol.codec import Event

from .errors import ProtocolRejected, ServerError, from_response

#: Frames the client accepts from its server.  Larger than the server's own limit on what
#: it accepts (64 KiB by default): a LIST of thousands of clients legitimately exceeds it.
CLIENT_MAX_FRAME: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A HISTORY answer with its lines: the HistoryOk and the MESSAGEs that followed it
    (oldest first), gathered by the session so that they never mix with live indications."""

    ok: HistoryOk
    lines: tuple[Message, ...]

    @property
    def epoch(self) -> int:
        return self.ok.epoch

    @property
    def more(self) -> bool:
        return bool(self.ok.more)


@dataclass(frozen=True, slots=True)
class Reply:
    """The outcome of request ``request_id``: the OK result, or the error to raise."""

    request_id: int
    result: Frame | HistoryPage | ServerError


@dataclass(frozen=True, slots=True)
class ConnectionFault:
    """An ERROR with request id 0: about the connection (SERVER_FULL, BAD_FRAME ...)."""

    error: ServerError


SessionEvent = Reply | ConnectionFault | Frame


@dataclass(frozen=True, slots=True)
class ServerTime:
    """The server's clock: epoch milliseconds, its UTC offset and zone name."""

    epoch_ms: int
    utc_offset_s: int
    zone: str

    @classmethod
    def from_ok(cls, ok: TimeOk) -> ServerTime:
        return cls(ok.epoch_ms, ok.utc_offset_s, ok.zone)

    @property
    def datetime(self) -> dt.datetime:
        offset = dt.timedelta(seconds=self.utc_offset_s)
        tz = dt.timezone(offset, self.zone) if self.zone else dt.timezone(offset)
        return dt.datetime.fromtimestamp(self.epoch_ms / 1000, tz)

    @property
    def iso(self) -> str:
        """RFC 3339 with milliseconds and the server's offset."""
        return self.datetime.isoformat(timespec="milliseconds")


class ClientSession:
    """Request ids, pending requests, automatic replies; bytes in and out, no I/O."""

    __slots__ = (
        "_acked",
        "_gathering",
        "_next_id",
        "_outgoing",
        "auto_ack",
        "decoder",
        "pending",
        "welcome",
    )

    def __init__(self, *, max_frame: int = CLIENT_MAX_FRAME, auto_ack: bool = True) -> None:
        self.decoder = FrameDecoder(max_frame=max_frame)
        self.auto_ack = auto_ack
        #: request id -> the request's type, for requests awaiting their response.
        self.pending: dict[int, MessageType] = {}
        self.welcome: Welcome | None = None
        self._next_id = 1
        self._outgoing: list[tuple[Frame, bytes]] = []
        #: Ids of the MESSAGEs of the read being taken, acknowledged by one ACKS at its end.
        self._acked: list[int] = []
        #: A HistoryOk whose MESSAGEs are arriving: (its request id, the OK, those so far).
        self._gathering: tuple[int, HistoryOk, list[Message]] | None = None

    def prepare(self, request: Frame) -> tuple[int, Frame, bytes]:
        """Give ``request`` a fresh id; returns (id, the request with it, its bytes)."""
        request_id = self._next_id
        self._next_id = 1 if request_id >= 0xFFFFFFFF else request_id + 1
        msg = dataclasses.replace(request, request_id=request_id)
        data = encode(msg)
        self.pending[request_id] = msg.MESSAGE_TYPE
        return request_id, msg, data

    @property
    def silence_limit(self) -> float | None:
        """Seconds without any frame from the server after which it is presumed gone.

        An idle client is PINGed every heartbeat interval (``WELCOME.heartbeat_ms``) and a
        busy one gets answers, so three silent intervals (the server's own rule for its
        clients) mean the server or the path to it is dead.  None before WELCOME.
        """
        if self.welcome is None or self.welcome.heartbeat_ms <= 0:
            return None
        return HEARTBEAT_MISSES * self.welcome.heartbeat_ms / 1000

    def forget(self, request_id: int) -> None:
        """Stop waiting for ``request_id`` (its caller gave up)."""
        self.pending.pop(request_id, None)

    def receive(self, data: bytes) -> list[tuple[Event | None, SessionEvent | None]]:
        """Decode ``data``; for each frame, the decoded event and what it means to the caller
        (a RECEIPTS is one entry for the frame, with no meaning, then one per message with no
        frame of its own: ``(None, Receipt)``).

        Raises ProtocolError when the server's bytes cannot be framed (the connection is
        then unusable).
        """
        self.decoder.feed(data)
        out: list[tuple[Event | None, SessionEvent | None]] = []
        for event in self.decoder:
            if isinstance(event, Receipts):
                out.append((event, None))
                for message_id in event.message_ids:
                    receipt = Receipt(message_id, event.target, event.status)
                    out.append((None, self._interpret(receipt)))
                continue
            out.append((event, self._interpret(event)))
        if self._acked:
            acked, self._acked = self._acked, []
            for first in range(0, len(acked), MAX_IDS_PER_FRAME):
                acks = Acks(tuple(acked[first : first + MAX_IDS_PER_FRAME]))
                self._outgoing.append((acks, encode(acks)))
        return out

    @property
    def batches_acks(self) -> bool:
        """Whether MESSAGEs are acknowledged with ACKS: the server speaks version 2."""
        return self.welcome is not None and self.welcome.version >= 2

    def take_outgoing(self) -> list[tuple[Frame, bytes]]:
        """Automatic ACKs and PONGs produced by ``receive``, with their bytes, to write now."""
        out, self._outgoing = self._outgoing, []
        return out

    def _interpret(self, event: Event) -> SessionEvent | None:
        if isinstance(event, InvalidFrame):
            if event.message_class == MessageClass.RESPONSE and event.request_id in self.pending:
                del self.pending[event.request_id]
                err = ProtocolRejected(
                    int(event.error.code),
                    event.error.code.name,
                    f"bad response from server: {event.error.message}",
                )
                return Reply(event.request_id, err)
            return None  # an indication this version does not know: ignore it
        if event.MESSAGE_CLASS == MessageClass.RESPONSE:
            reply = self._response(event)
            if (
                isinstance(reply, Reply)
                and isinstance(reply.result, HistoryOk)
                and reply.result.count
            ):
                # Its lines follow it at once (the server queues them together).
                self._gathering = (reply.request_id, reply.result, [])
                return None
            if isinstance(reply, Reply) and isinstance(reply.result, HistoryOk):
                return Reply(reply.request_id, HistoryPage(reply.result, ()))
            return reply
        gathering = self._gathering
        if gathering is not None and isinstance(event, Message):
            request_id, ok, lines = gathering
            lines.append(event)
            if len(lines) < ok.count:
                return None
            self._gathering = None
            return Reply(request_id, HistoryPage(ok, tuple(lines)))
        if isinstance(event, Message):
            if self.auto_ack and not event.room and not event.flags & MessageFlags.HISTORY:
                if self.batches_acks:
                    self._acked.append(event.message_id)
                else:
                    ack = Ack(event.message_id)
                    self._outgoing.append((ack, encode(ack)))
        elif isinstance(event, Ping):
            pong = Pong()
            self._outgoing.append((pong, encode(pong)))
            return None
        elif isinstance(event, Welcome):
            self.welcome = event
        return event

    def _response(self, event: Frame) -> SessionEvent | None:
        request_id = event.request_id
        if isinstance(event, ErrorResponse):
            error = from_response(event)
            if request_id == 0:
                return ConnectionFault(error)
            if self.pending.pop(request_id, None) is None:
                return None
            return Reply(request_id, error)
        asked = self.pending.pop(request_id, None)
        if asked is None:
            return None  # a response to a request we gave up on
        if asked != event.ANSWERS:
            err = ProtocolRejected(
                int(ErrorCode.BAD_PAYLOAD),
                "BAD_PAYLOAD",
                f"server answered a {asked.name} request with an OK for "
                f"{event.ANSWERS.name if event.ANSWERS else '?'}",
            )
            return Reply(request_id, err)
        return Reply(request_id, event)


def shutdown_reason(msg: Shutdown) -> str:
    return f"server shut down: {msg.reason}" if msg.reason else "server shut down"


def silence_reason(limit: float) -> str:
    """Why the connection is declared lost after ``silence_limit`` seconds of silence."""
    return (
        f"the server stopped answering: nothing received for {limit:g}s "
        f"({HEARTBEAT_MISSES} heartbeat intervals)"
    )
