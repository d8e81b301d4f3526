"""SEND and ACK through real sockets, at both of the server's log levels.

Every SEND is answered by ``handlers.send``, through the connection's table: a well-formed
ASCII SEND to a client that can take it on sight, every other one after its checks.  Which
code answers never depends on the log level: each test runs with the ``switchboard.server``
logger at WARNING and at INFO (where every forward is logged too) and must see exactly the
same frames.  Requests are pipelined (one ``sendall``) so that they land in one
``data_received`` batch, where ``handlers.send`` takes runs of SENDs with per-run state (the
MESSAGE time and the sender's fields).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.peers import RawPeer, header, request_frame
from support.servers import ServerThread, queued_bytes, shrink_send_buffer
from switchboard.protocol import (
    Ack,
    ErrorCode,
    ErrorResponse,
    Event,
    HelloOk,
    HelloRequest,
    Message,
    MessageClass,
    MessageType,
    NickOk,
    NickRequest,
    Ping,
    Receipt,
    ReceiptStatus,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
)
from switchboard.server import handlers
from switchboard.server.states import ConnectionState

WAIT_S = 5.0
SERVER_LOGGER = "switchboard.server"
PATHS = ("warning", "info")


class _Collect(logging.Handler):
    """Keeps the server's log records (its "forward" events tell the paths apart)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Forwarding:
    """Starts servers at one log level, and checks that they are at it."""

    path: str
    factory: Callable[..., ServerThread]
    log: _Collect
    servers: list[ServerThread] = field(default_factory=list)

    def start(self, **settings: Any) -> ServerThread:
        st = self.factory(**settings)
        # The server reads the level once (EventLog.refresh), on its own loop.
        st.call(st.server.events.refresh)
        self.check(st)
        self.servers.append(st)
        return st

    def check(self, st: ServerThread) -> None:
        """The server logs at this test's level (it reads it once, EventLog.refresh)."""
        assert st.call(lambda: st.server.events.info_on) is (self.path == "info")

    def forwards(self) -> int:
        """How many forwards the server logged (at INFO, every one), in full or
        in the counts of summarised lines (logs.RepeatedEvents)."""
        for st in self.servers:
            st.call(st.server.flush_log_counts)
        return sum(
            1 if r.__dict__["event"] == "forward" else r.__dict__["count"]
            for r in self.log.records
            if getattr(r, "event", "") == "forward" or getattr(r, "of", "") == "forward"
        )

    def assert_forwards(self, delivered: int) -> None:
        for st in self.servers:
            self.check(st)
        assert self.forwards() == (delivered if self.path == "info" else 0)


@pytest.fixture(params=PATHS)
def forwarding(
    request: pytest.FixtureRequest, server_factory: Callable[..., ServerThread]
) -> Iterator[Forwarding]:
    logger = logging.getLogger(SERVER_LOGGER)
    saved = logger.level
    collect = _Collect()
    logger.setLevel(logging.INFO if request.param == "info" else logging.WARNING)
    logger.addHandler(collect)
    try:
        yield Forwarding(request.param, server_factory, collect)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(saved)


# --- helpers --------------------------------------------------------------------------------


def take(peer: RawPeer, count: int, timeout: float = WAIT_S) -> list[Event]:
    """The next ``count`` frames ``peer`` receives (heartbeat PINGs skipped)."""
    deadline = time.monotonic() + timeout
    got: list[Event] = []
    while len(got) < count:
        event = peer.next(max(0.0, deadline - time.monotonic()))
        assert event is not None, f"connection closed after {got!r}"
        if not isinstance(event, Ping):
            got.append(event)
    return got


def assert_nothing_pending(peer: RawPeer, request_id: int = 900) -> None:
    """``peer`` is still served and nothing was queued for it: a TIME's answer comes next."""
    peer.send(TimeRequest(request_id=request_id))
    event = take(peer, 1)[0]
    assert isinstance(event, TimeOk) and event.request_id == request_id, event


def kinds(events: list[Event]) -> list[tuple[str, int]]:
    """(type, request id) of each frame, for readable order comparisons."""
    return [(type(e).__name__, e.request_id) for e in events]


def error_code(event: Event) -> int:
    assert isinstance(event, ErrorResponse), event
    assert event.message, "an ERROR always says what went wrong"
    assert event.name == ErrorCode(event.code).name
    return event.code


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_message(
    msg: Event,
    *,
    message_id: int,
    sender: RawPeer,
    nick: str,
    text: str,
    sent_between: tuple[int, int],
) -> None:
    """A direct MESSAGE from ``sender``, every field checked."""
    assert isinstance(msg, Message), msg
    assert sender.welcome is not None
    assert (msg.message_id, msg.sender_id, msg.sender_nick) == (
        message_id,
        sender.client_id,
        nick,
    )
    # The sender's address as the server sees it (its WELCOME), which is the socket's own.
    assert (msg.sender_ip, msg.sender_port) == (sender.welcome.ip, sender.welcome.port)
    assert msg.sender_port == sender.sock.getsockname()[1]
    assert (msg.room, msg.flags, msg.text) == ("", 0, text)
    # Same host, same clock: the server stamped it between our send and our receive (a
    # margin for wall-clock steps).
    low, high = sent_between
    assert low - 2000 <= msg.sent_ms <= high + 2000, (low, msg.sent_ms, high)


def set_nick(peer: RawPeer, nick: str, request_id: int = 800) -> None:
    peer.send(NickRequest(nick, request_id=request_id))
    ok = take(peer, 1)[0]
    assert isinstance(ok, NickOk) and (ok.nick, ok.request_id) == (nick, request_id), ok


def send_frame(target: int, text: bytes, request_id: int, *, declared: int | None = None) -> bytes:
    """A SEND built by hand: any bytes as text, any declared text length."""
    size = len(text) if declared is None else declared
    return request_frame(MessageType.SEND, request_id, struct.pack("!II", target, size) + text)


def ack_frame(payload: bytes) -> bytes:
    return header(MessageClass.INDICATION, MessageType.ACK, 0, len(payload)) + payload


MAX_TEXT = 64
NON_ASCII = "你好 ünïcode"


# --- 1. a pipelined batch of SENDs: delivered ones and every refusal, in order ----------------


def test_a_batch_of_sends_is_answered_in_order_and_delivered(forwarding: Forwarding) -> None:
    st = forwarding.start(max_text=MAX_TEXT)
    with RawPeer(st.port) as a, RawPeer(st.port) as b:
        set_nick(a, "amy")
        missing = b.client_id + 1000
        at_limit = "L" * MAX_TEXT
        t0 = now_ms()
        a.send(
            SendRequest(b.client_id, "hello b", request_id=1),
            SendRequest(b.client_id, NON_ASCII, request_id=2),
            SendRequest(missing, "anyone?", request_id=3),
            SendRequest(b.client_id, "x" * (MAX_TEXT + 1), request_id=4),
            # Short in characters, too long in bytes (2 bytes each).
            SendRequest(b.client_id, "é" * (MAX_TEXT // 2 + 1), request_id=5),
            send_frame(b.client_id, b"\xc3\x28", 6),  # invalid UTF-8
            send_frame(b.client_id, b"hi!", 7, declared=2),  # a byte after the text
            send_frame(b.client_id, b"hi", 8, declared=3),  # text longer than the payload
            request_frame(MessageType.SEND, 9, b"\x00\x00"),  # no room for the target
            SendRequest(a.client_id, "note to self", request_id=10),
            SendRequest(b.client_id, at_limit, request_id=11),
            SendRequest(b.client_id, "bye b", request_id=12),
            TimeRequest(request_id=13),
        )
        # A: 12 answers and a TIME, in request order, with its own MESSAGE among them.
        got = take(a, 14)
        t1 = now_ms()
        to_self = [e for e in got if isinstance(e, Message)]
        answers = [e for e in got if not isinstance(e, Message)]
        assert kinds(answers) == [
            ("SendOk", 1),
            ("SendOk", 2),
            ("ErrorResponse", 3),
            ("ErrorResponse", 4),
            ("ErrorResponse", 5),
            ("ErrorResponse", 6),
            ("ErrorResponse", 7),
            ("ErrorResponse", 8),
            ("ErrorResponse", 9),
            ("SendOk", 10),
            ("SendOk", 11),
            ("SendOk", 12),
            ("TimeOk", 13),
        ]
        assert [error_code(e) for e in answers[2:9]] == [
            ErrorCode.NO_SUCH_CLIENT,
            ErrorCode.TEXT_TOO_LONG,
            ErrorCode.TEXT_TOO_LONG,
            ErrorCode.BAD_PAYLOAD,
            ErrorCode.BAD_PAYLOAD,
            ErrorCode.BAD_PAYLOAD,
            ErrorCode.BAD_PAYLOAD,
        ]
        oks = [e for e in answers if isinstance(e, SendOk)]
        targets = [b.client_id, b.client_id, a.client_id, b.client_id, b.client_id]
        assert [ok.target for ok in oks] == targets
        ids = [ok.message_id for ok in oks]
        assert ids == sorted(set(ids)), f"message ids not increasing: {ids}"
        # B: exactly the delivered messages, in order, nothing else.
        texts = ["hello b", NON_ASCII, at_limit, "bye b"]
        for msg, message_id, text in zip(take(b, 4), ids[:2] + ids[3:], texts, strict=True):
            assert_message(
                msg, message_id=message_id, sender=a, nick="amy", text=text, sent_between=(t0, t1)
            )
        assert len(to_self) == 1
        assert_message(
            to_self[0],
            message_id=ids[2],
            sender=a,
            nick="amy",
            text="note to self",
            sent_between=(t0, t1),
        )
        assert_nothing_pending(b)
        assert_nothing_pending(a)
        # Neither was disconnected by anything in the batch.
        assert st.call(lambda: sorted(st.server.client_by_id)) == [a.client_id, b.client_id]
    forwarding.assert_forwards(delivered=5)


# --- 2. ACKs: one RECEIPT per delivered message, nothing for any other ACK -------------------


def test_acks_produce_exactly_one_delivered_receipt_each(forwarding: Forwarding) -> None:
    st = forwarding.start()
    with RawPeer(st.port) as a, RawPeer(st.port) as b:
        a.send(
            *[SendRequest(b.client_id, f"m{i}", request_id=i) for i in range(1, 5)],
            SendRequest(a.client_id, "mine", request_id=5),
        )
        got = take(a, 6)
        own = [e for e in got if isinstance(e, Message)]
        oks = [e for e in got if isinstance(e, SendOk)]
        assert [ok.request_id for ok in oks] == [1, 2, 3, 4, 5] and len(own) == 1
        to_b = [ok.message_id for ok in oks[:4]]
        to_a = oks[4].message_id
        assert [m.message_id for m in take(b, 4) if isinstance(m, Message)] == to_b
        # B acknowledges three of its four in one write; A hears DELIVERED for each, in order.
        b.send(*[Ack(mid) for mid in to_b[:3]])
        receipts = take(a, 3)
        assert [(r.message_id, r.target, r.status) for r in receipts if isinstance(r, Receipt)] == [
            (mid, b.client_id, ReceiptStatus.DELIVERED) for mid in to_b[:3]
        ]
        # ACKs that settle nothing: twice the same, an unknown id, the message A sent to
        # itself, and malformed ones (one of them starts with the id still awaited).
        b.send(
            Ack(to_b[0]),
            Ack(to_b[2]),
            Ack(to_b[3] + 1000),
            Ack(to_a),
            ack_frame(struct.pack("!Q", to_b[3]) + b"\x00"),
            ack_frame(struct.pack("!Q", to_b[3])[:7]),
            ack_frame(b""),
        )
        # B is still served (not closed), and A got nothing from any of them.
        assert_nothing_pending(b, 901)
        assert_nothing_pending(a, 902)
        # What they did not settle is still awaited: the last message to B, and A's own.
        b.send(Ack(to_b[3]))
        a.send(Ack(to_a))
        got = take(a, 2)
        assert sorted(
            (r.message_id, r.target, r.status) for r in got if isinstance(r, Receipt)
        ) == [
            (to_b[3], b.client_id, ReceiptStatus.DELIVERED),
            (to_a, a.client_id, ReceiptStatus.DELIVERED),
        ]
        assert_nothing_pending(a, 903)
        assert st.call(lambda: [len(c.awaiting_ack) for c in st.server.client_by_id.values()]) == [
            0,
            0,
        ]
    forwarding.assert_forwards(delivered=5)


# --- 3. a NICK in the middle of a batch shows in the MESSAGEs after it ------------------------


def test_a_nick_inside_a_pipelined_batch_applies_to_the_sends_after_it(
    forwarding: Forwarding,
) -> None:
    st = forwarding.start()
    with RawPeer(st.port) as a, RawPeer(st.port) as b:
        set_nick(a, "amy")
        set_nick(b, "bob")
        a.send(
            SendRequest(b.client_id, "one", request_id=1),
            NickRequest("zed", request_id=2),
            SendRequest(b.client_id, "two", request_id=3),
            TimeRequest(request_id=4),
            SendRequest(b.client_id, "three", request_id=5),
            NickRequest("bob", request_id=6),  # taken: refused, the nick stays "zed"
            SendRequest(b.client_id, "four", request_id=7),
            NickRequest("amy", request_id=8),  # free again since the rename
            SendRequest(b.client_id, "five", request_id=9),
        )
        answers = take(a, 9)
        assert kinds(answers) == [
            ("SendOk", 1),
            ("NickOk", 2),
            ("SendOk", 3),
            ("TimeOk", 4),
            ("SendOk", 5),
            ("ErrorResponse", 6),
            ("SendOk", 7),
            ("NickOk", 8),
            ("SendOk", 9),
        ]
        assert error_code(answers[5]) == ErrorCode.NICK_IN_USE
        got = take(b, 5)
        assert [(m.text, m.sender_nick) for m in got if isinstance(m, Message)] == [
            ("one", "amy"),
            ("two", "zed"),
            ("three", "zed"),
            ("four", "zed"),
            ("five", "amy"),
        ]
        assert_nothing_pending(b)
    forwarding.assert_forwards(delivered=5)


def test_a_hello_nick_inside_a_pipelined_batch_applies_too(forwarding: Forwarding) -> None:
    st = forwarding.start()
    with RawPeer(st.port) as a, RawPeer(st.port) as b:
        a.send(
            SendRequest(b.client_id, "before", request_id=1),
            HelloRequest(nick="hal", request_id=2),
            SendRequest(b.client_id, "after", request_id=3),
        )
        assert kinds(take(a, 3)) == [("SendOk", 1), ("HelloOk", 2), ("SendOk", 3)]
        got = take(b, 2)
        assert [(m.text, m.sender_nick) for m in got if isinstance(m, Message)] == [
            ("before", ""),
            ("after", "hal"),
        ]
    forwarding.assert_forwards(delivered=2)


# --- 4. a sender gone before its recipient ACKs ----------------------------------------------


def test_an_ack_after_the_sender_left_produces_nothing(forwarding: Forwarding) -> None:
    st = forwarding.start()
    with RawPeer(st.port) as b:
        a = RawPeer(st.port)
        a.send(*[SendRequest(b.client_id, f"m{i}", request_id=i) for i in range(1, 4)])
        oks = take(a, 3)
        ids = [ok.message_id for ok in oks if isinstance(ok, SendOk)]
        assert len(ids) == 3
        assert [m.message_id for m in take(b, 3) if isinstance(m, Message)] == ids
        a.close()
        st.wait_for(lambda s: a.client_id not in s.directory.client_by_id)
        # A third client is connected before B acknowledges A's messages: the ACKs must
        # reach neither it nor anyone else (ids are never reused, receipts go to senders).
        with RawPeer(st.port) as c:
            b.send(*[Ack(mid) for mid in ids], Ack(ids[0]))
            assert_nothing_pending(b, 901)
            assert_nothing_pending(c, 902)
            assert st.call(lambda: len(st.server.client_by_id[b.client_id].awaiting_ack)) == 0
            # The server goes on forwarding, both ways, with receipts.
            c.send(SendRequest(b.client_id, "from c", request_id=1))
            ok = take(c, 1)[0]
            assert isinstance(ok, SendOk) and ok.target == b.client_id
            msg = take(b, 1)[0]
            assert isinstance(msg, Message) and (msg.text, msg.sender_id) == ("from c", c.client_id)
            b.send(Ack(ok.message_id), SendRequest(c.client_id, "from b", request_id=2))
            receipt = take(c, 1)[0]
            assert isinstance(receipt, Receipt)
            assert (receipt.message_id, receipt.target, receipt.status) == (
                ok.message_id,
                b.client_id,
                ReceiptStatus.DELIVERED,
            )
            back = take(b, 1)[0]
            assert isinstance(back, SendOk) and back.request_id == 2
            msg = take(c, 1)[0]
            assert isinstance(msg, Message) and (msg.text, msg.sender_id) == ("from b", b.client_id)
            c.send(Ack(msg.message_id))
            receipt = take(b, 1)[0]
            assert isinstance(receipt, Receipt) and receipt.message_id == msg.message_id
    forwarding.assert_forwards(delivered=5)


# --- 5. a recipient that does not read: RECIPIENT_BUSY ---------------------------------------

BIG = "z" * 4000


def test_sends_to_a_recipient_that_does_not_read_are_busy(forwarding: Forwarding) -> None:
    high_water = 64 * 1024
    st = forwarding.start(write_high_water=high_water, write_hard_limit=64 * 1024 * 1024)
    with RawPeer(st.port) as a, RawPeer(st.port) as b, RawPeer(st.port, rcvbuf=4096) as slow:

        def paused() -> bool:
            return st.call(lambda: st.server.directory.client_by_id[slow.client_id].write_paused)

        shrink_send_buffer(st, slow.client_id)
        # Fill the slow reader's outbound buffer, batch by batch, until the server has
        # paused writing to it (bounded: 40 x 20 x 4 KB is 50 times the high-water mark;
        # with the small send buffer the first batch is enough).
        forwarded: list[int] = []
        request_id = 0
        for _ in range(40):
            batch = range(request_id + 1, request_id + 21)
            request_id += 20
            a.send(*[SendRequest(slow.client_id, BIG, request_id=i) for i in batch])
            answers = take(a, len(batch))
            assert [e.request_id for e in answers] == list(batch)
            for e in answers:
                if isinstance(e, SendOk):
                    forwarded.append(e.message_id)
                else:
                    assert error_code(e) == ErrorCode.RECIPIENT_BUSY
            if paused():
                break
        assert paused(), "the server never paused writing to a client that does not read"
        assert len(forwarded) >= high_water // len(BIG)
        # Paused: SENDs to it are busy, ASCII and not; others are forwarded as usual.
        a.send(
            SendRequest(slow.client_id, "short", request_id=1001),
            SendRequest(slow.client_id, NON_ASCII, request_id=1002),
            SendRequest(b.client_id, "fine", request_id=1003),
            SendRequest(slow.client_id, "again", request_id=1004),
        )
        answers = take(a, 4)
        assert kinds(answers) == [
            ("ErrorResponse", 1001),
            ("ErrorResponse", 1002),
            ("SendOk", 1003),
            ("ErrorResponse", 1004),
        ]
        assert {error_code(answers[i]) for i in (0, 1, 3)} == {ErrorCode.RECIPIENT_BUSY}
        msg = take(b, 1)[0]
        assert isinstance(msg, Message) and msg.text == "fine"
        assert paused()
        # The reader catches up: every forwarded message, in order, none of the refused.
        for message_id in forwarded:
            msg = slow.expect(Message, timeout=10)
            assert (msg.message_id, msg.text) == (message_id, BIG)
        st.wait_for(lambda s: not s.directory.client_by_id[slow.client_id].write_paused, timeout=10)
        a.send(SendRequest(slow.client_id, "welcome back", request_id=2001))
        ok = take(a, 1)[0]
        assert isinstance(ok, SendOk) and ok.request_id == 2001
        msg = slow.expect(Message)
        assert (msg.message_id, msg.text) == (ok.message_id, "welcome back")
    forwarding.assert_forwards(delivered=len(forwarded) + 2)


# --- 6. a recipient that has not authenticated is not there ----------------------------------

TOKEN = "s3cret-forwarding-token"


def test_a_recipient_that_has_not_authenticated_is_no_such_client(
    forwarding: Forwarding, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n", encoding="utf-8")
    st = forwarding.start(auth_token_file=str(tokens))
    with RawPeer(st.port) as a, RawPeer(st.port) as b, RawPeer(st.port) as stranger:
        a.send(HelloRequest(token=TOKEN, request_id=1))
        b.send(HelloRequest(token=TOKEN, request_id=1))
        for peer in (a, b):
            assert isinstance(take(peer, 1)[0], HelloOk)
        # The stranger has an id (its WELCOME) but no HELLO yet: it cannot be reached.
        a.send(
            SendRequest(stranger.client_id, "psst", request_id=2),
            SendRequest(b.client_id, "hi b", request_id=3),
            SendRequest(stranger.client_id, NON_ASCII, request_id=4),
        )
        answers = take(a, 3)
        assert kinds(answers) == [("ErrorResponse", 2), ("SendOk", 3), ("ErrorResponse", 4)]
        assert error_code(answers[0]) == error_code(answers[2]) == ErrorCode.NO_SUCH_CLIENT
        msg = take(b, 1)[0]
        assert isinstance(msg, Message) and msg.text == "hi b"
        # Once it has presented its token, it is reachable.
        stranger.send(HelloRequest(token=TOKEN, request_id=1))
        assert isinstance(take(stranger, 1)[0], HelloOk)
        a.send(SendRequest(stranger.client_id, "now?", request_id=5))
        assert kinds(take(a, 1)) == [("SendOk", 5)]
        msg = take(stranger, 1)[0]
        assert isinstance(msg, Message) and msg.text == "now?"
    forwarding.assert_forwards(delivered=2)


# --- 7. a recipient that is closing but not yet gone -----------------------------------------


def test_a_recipient_that_is_closing_is_no_such_client(forwarding: Forwarding) -> None:
    st = forwarding.start()
    count = 40
    with RawPeer(st.port) as a, RawPeer(st.port) as c, RawPeer(st.port, rcvbuf=4096) as b:
        shrink_send_buffer(st, b.client_id)
        # B, which does not read, sends itself 160 KB, then a frame with a bad magic: the
        # server closes it gracefully, which waits for those bytes to drain, so B stays
        # registered while closing (below the 256 KB high-water mark: not write-paused).
        b.send(
            *[SendRequest(b.client_id, BIG, request_id=i) for i in range(1, count + 1)],
            header(MessageClass.REQUEST, MessageType.TIME, 99, 0, magic=0x4745),
        )

        def closing_not_gone() -> bool:
            conn = st.server.directory.client_by_id.get(b.client_id)
            return (
                conn is not None and conn.state is ConnectionState.CLOSING and not conn.write_paused
            )

        st.wait_for(lambda s: closing_not_gone())
        a.send(
            SendRequest(b.client_id, "still there?", request_id=1),
            SendRequest(b.client_id, NON_ASCII, request_id=2),
            SendRequest(c.client_id, "hi c", request_id=3),
        )
        answers = take(a, 3)
        assert st.call(closing_not_gone), "B left before the SENDs to it were answered"
        assert kinds(answers) == [("ErrorResponse", 1), ("ErrorResponse", 2), ("SendOk", 3)]
        assert error_code(answers[0]) == error_code(answers[1]) == ErrorCode.NO_SUCH_CLIENT
        msg = take(c, 1)[0]
        assert isinstance(msg, Message) and msg.text == "hi c"
        # B reads at last: its own messages and answers, the ERROR, then the close.
        seen = b.expect_closed(timeout=10)
        assert [type(e).__name__ for e in seen if not isinstance(e, Ping)] == [
            "Message",
            "SendOk",
        ] * count + ["ErrorResponse"]
        assert error_code(seen[-1]) == ErrorCode.BAD_FRAME
        st.wait_for(lambda s: b.client_id not in s.directory.client_by_id)
        assert_nothing_pending(a)
    forwarding.assert_forwards(delivered=count + 1)


# --- 8. one big write of SENDs to a recipient that does not read: busy per message ------------


def test_one_big_write_of_sends_gets_recipient_busy_per_message(forwarding: Forwarding) -> None:
    # 2,400 SENDs of 4 KB (9.6 MB) in one write, far more than one read: the busy check must
    # hold for each message, not only between the reads' batches, so that the recipient is
    # paused before its queue passes the hard limit and never dropped for someone else's burst.
    high_water, hard_limit, count = 16 * 1024, 32 * 1024, 2_400
    st = forwarding.start(write_high_water=high_water, write_hard_limit=hard_limit, heartbeat=60.0)
    with RawPeer(st.port) as a, RawPeer(st.port, rcvbuf=4096) as slow:
        shrink_send_buffer(st, slow.client_id)
        a.send(*[SendRequest(slow.client_id, BIG, request_id=i) for i in range(1, count + 1)])
        answers = take(a, count, timeout=60)
        settled = [e for e in answers if isinstance(e, Receipt)]
        assert not settled, f"{len(settled)} receipts: the recipient was dropped for the burst"
        assert [e.request_id for e in answers] == list(range(1, count + 1))
        forwarded = [e.message_id for e in answers if isinstance(e, SendOk)]
        busy = [e for e in answers if not isinstance(e, SendOk)]
        assert busy, "no RECIPIENT_BUSY for 9.6 MB sent to a client that does not read"
        assert {error_code(e) for e in busy} == {ErrorCode.RECIPIENT_BUSY}
        # Not dropped: it stayed within the limits, paused at the high-water mark.
        assert slow.client_id in st.client_ids(), "the recipient was dropped for the burst"
        assert st.call(lambda: st.server.directory.client_by_id[slow.client_id].write_paused)
        queued = queued_bytes(st, slow.client_id)
        assert queued <= hard_limit, queued
        # It reads: every forwarded message, in order; then it is served as usual.
        for message_id in forwarded:
            msg = slow.expect(Message, timeout=10)
            assert (msg.message_id, msg.text) == (message_id, BIG)
        assert_nothing_pending(slow)
    forwarding.assert_forwards(delivered=len(forwarded))


# --- 9. the log level never picks the code that answers ---------------------------------------


def test_the_log_level_does_not_pick_which_code_answers_a_send(forwarding: Forwarding) -> None:
    """Every SEND is answered by the table's SEND entry, ``handlers.send``, at INFO as at
    WARNING (a well-formed ASCII SEND once skipped it whenever INFO was off: production and
    benchmarks ran different code).  Two SENDs in one write are one run: one call."""
    st = forwarding.start()
    word = (1 << 24) | (MessageClass.REQUEST << 16) | MessageType.SEND
    handed: list[tuple[int, int]] = []

    def count_handler_sends() -> None:
        original = st.server.tables[ConnectionState.READY][word]
        # handlers.send itself, or behind the rate limit's table (on by default).
        assert original is handlers.send or original.__name__ == "rate_limited_send", original

        def counted(server: Any, conn: Any, request_id: int, *rest: Any) -> int:
            before = len(handed)
            handed.append((request_id, -1))
            stop: int = original(server, conn, request_id, *rest)
            handed[before] = (request_id, stop)
            return stop

        st.server.tables[ConnectionState.READY][word] = counted

    st.call(count_handler_sends)
    with RawPeer(st.port) as a, RawPeer(st.port) as b:
        frames = send_frame(b.client_id, b"plain", 1) + send_frame(
            b.client_id, NON_ASCII.encode("utf-8"), 2
        )
        a.sock.sendall(frames)
        answers = take(a, 2)
        assert [type(e).__name__ for e in answers] == ["SendOk", "SendOk"], answers
        assert [m.text for m in take(b, 2) if isinstance(m, Message)] == ["plain", NON_ASCII]
        # One call for the run, or two if TCP split the write: through send either way.
        assert [request_id for request_id, _ in handed] in ([1], [1, 2]), handed
    forwarding.assert_forwards(delivered=2)
