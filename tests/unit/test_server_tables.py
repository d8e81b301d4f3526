"""The handler tables and the gates that wrap them, through a connection driven by a fake
transport (no sockets): every frame is answered by its table entry and by nothing else, and
the rate limit, tracing and shutdown are tables wrapping the READY and HANDSHAKE tables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.dispatch import TOKEN, Harness
from support.peers import request_frame
from switchboard.protocol import (
    Ack,
    ErrorCode,
    ErrorResponse,
    Event,
    Frame,
    HelloOk,
    HelloRequest,
    InvalidFrame,
    Message,
    MessageType,
    PingRequest,
    Receipts,
    ReceiptStatus,
    SendRequest,
    TimeRequest,
    encode,
)
from switchboard.protocol.fastpath import WORD_ACK, WORD_SEND, WORD_TIME
from switchboard.server import ClientConnection
from switchboard.server.handlers import OTHER, ack, count_frames, send, tables, time_
from switchboard.server.states import ConnectionState

READY = ConnectionState.READY


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def make_harness(token_file: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**settings: Any) -> Harness:
        made.append(Harness(token_file, **settings))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


def _ready(harness: Harness) -> tuple[ClientConnection, Any, Any]:
    conn, transport, decoder = harness.connect()
    answers = harness.ask(conn, transport, decoder, HelloRequest(token=TOKEN, request_id=1))
    assert [type(e) for e in answers] == [HelloOk], answers
    return conn, transport, decoder


def _batch(conn: ClientConnection, harness: Harness, frames: list[Frame]) -> None:
    harness.feed(conn, b"".join(encode(f) for f in frames))


def _answers(harness: Harness, transport: Any, decoder: Any) -> list[tuple[str, int]]:
    return [(_kind(e), getattr(e, "request_id", 0)) for e in harness.read(transport, decoder)]


def _kind(event: Event) -> str:
    if isinstance(event, ErrorResponse):
        return ErrorCode(event.code).name
    return type(event).__name__


# --- nothing but the table answers ------------------------------------------------------------


def test_time_send_and_ack_are_answered_only_by_their_table_entries(
    make_harness: Callable[..., Harness],
) -> None:
    """Each of the three commonest frames reaches its entry in the READY table, and a run of
    them is one call: replace the entries and nothing answers them any more."""
    harness = make_harness()
    a, ta, da = _ready(harness)
    b, tb, db = _ready(harness)
    seen: list[tuple[str, int]] = []
    table = harness.server.tables[READY]
    for word, name in ((WORD_TIME, "time"), (WORD_SEND, "send"), (WORD_ACK, "ack")):

        def silent(
            _s: Any, _c: Any, rid: int, buf: Any, st: int, end: int, bd: int, *, name: str = name
        ) -> int:
            seen.append((name, rid))
            return end

        table[word] = silent
    _batch(a, harness, [TimeRequest(request_id=2), TimeRequest(request_id=3)])
    _batch(a, harness, [SendRequest(b.client_id, "hi", request_id=4)])
    _batch(b, harness, [Ack(99)])
    assert seen == [("time", 2), ("time", 3), ("send", 4), ("ack", 0)], seen
    assert harness.read(ta, da) == [] and harness.read(tb, db) == []


def test_runs_take_every_frame_of_their_kind_in_one_call(
    make_harness: Callable[..., Harness],
) -> None:
    """TIME, SEND and ACK entries take the run that follows them: 32 TIMEs are one call that
    answers all 32 in order; the run stops at a frame of another kind."""
    harness = make_harness()
    conn, transport, decoder = _ready(harness)
    calls: list[int] = []
    table = harness.server.tables[READY]

    def counted(s: Any, c: Any, rid: int, *rest: Any) -> int:
        calls.append(rid)
        stop: int = time_(s, c, rid, *rest)
        return stop

    table[WORD_TIME] = counted
    frames: list[Frame] = [TimeRequest(request_id=i) for i in range(2, 34)]
    _batch(conn, harness, [*frames, PingRequest(request_id=34), TimeRequest(request_id=35)])
    answers = _answers(harness, transport, decoder)
    assert answers == [("TimeOk", i) for i in range(2, 34)] + [("PingOk", 34), ("TimeOk", 35)]
    assert calls == [2, 35], "one call per run of TIMEs"


def test_time_runs_across_reads_and_pressure_checks_answer_every_frame_in_order(
    make_harness: Callable[..., Harness],
) -> None:
    """400 TIMEs (5,600 bytes: more than one pressure check's 4 KB), a PING, 3 more TIMEs,
    arriving in two reads split inside a frame: each is answered once, in order."""
    harness = make_harness()
    conn, transport, decoder = _ready(harness)
    frames: list[Frame] = [TimeRequest(request_id=i) for i in range(2, 402)]
    frames += [PingRequest(request_id=402), *(TimeRequest(request_id=i) for i in (403, 404, 405))]
    data = b"".join(encode(f) for f in frames)
    harness.feed(conn, data[:2801])
    harness.feed(conn, data[2801:])
    answers = _answers(harness, transport, decoder)
    assert answers == [("TimeOk", i) for i in range(2, 402)] + [("PingOk", 402)] + [
        ("TimeOk", i) for i in (403, 404, 405)
    ]


def test_ack_runs_across_reads_settle_every_message_once(
    make_harness: Callable[..., Harness],
) -> None:
    """40 ACK frames (880 bytes) with a malformed one among them, in two reads split inside a
    frame: every message is settled exactly once (the sender's RECEIPTS hold each id once)."""
    harness = make_harness()
    a, ta, da = _ready(harness)
    b, tb, db = _ready(harness)
    _batch(a, harness, [SendRequest(b.client_id, f"m{i}", request_id=i) for i in range(2, 42)])
    assert [kind for kind, _ in _answers(harness, ta, da)] == ["SendOk"] * 40
    ids = [e.message_id for e in harness.read(tb, db) if isinstance(e, Message)]
    assert len(ids) == 40
    short_ack = encode(Ack(ids[0]))[:-1]
    short_ack = short_ack[:13] + bytes([7]) + short_ack[14:]  # length 7: not a u64, ignored
    data = b"".join(encode(Ack(i)) for i in ids[:20]) + short_ack
    data += b"".join(encode(Ack(i)) for i in ids[20:] + ids[:3])  # 3 again: settled already
    harness.feed(b, data[:301])
    harness.feed(b, data[301:])
    settled = [i for e in harness.read(ta, da) if isinstance(e, Receipts) for i in e.message_ids]
    assert sorted(settled) == sorted(ids)


def test_a_run_stops_at_a_malformed_frame_of_its_kind(
    make_harness: Callable[..., Harness],
) -> None:
    """A TIME with a payload inside a run of TIMEs is BAD_PAYLOAD, in its place; a SEND run
    refuses a bad SEND in its place and goes on; an ACK of the wrong size is ignored."""
    harness = make_harness()
    a, ta, da = _ready(harness)
    b, tb, db = _ready(harness)
    bad_time = bytearray(encode(TimeRequest(request_id=3)) + b"x")
    bad_time[13] = 1  # payload length 1
    harness.feed(
        a,
        encode(TimeRequest(request_id=2))
        + bytes(bad_time)
        + encode(TimeRequest(request_id=4))
        + encode(SendRequest(b.client_id, "one", request_id=5))
        + encode(SendRequest(b.client_id + 1000, "nobody", request_id=6))
        + encode(SendRequest(b.client_id, "two", request_id=7)),
    )
    harness.settle()
    assert _answers(harness, ta, da) == [
        ("TimeOk", 2),
        ("BAD_PAYLOAD", 3),
        ("TimeOk", 4),
        ("SendOk", 5),
        ("NO_SUCH_CLIENT", 6),
        ("SendOk", 7),
    ]
    messages = [e for e in harness.read(tb, db) if isinstance(e, Message)]
    assert [m.text for m in messages] == ["one", "two"]
    short_ack = encode(Ack(messages[0].message_id))[:-1]
    short_ack = short_ack[:13] + bytes([7]) + short_ack[14:]  # length 7: not a u64
    harness.feed(b, short_ack + encode(Ack(messages[1].message_id)))
    # a negotiated protocol version 2 (the harness's HELLO): one RECEIPTS for the run
    receipts = harness.read(ta, da)
    assert receipts == [Receipts(b.client_id, ReceiptStatus.DELIVERED, (messages[1].message_id,))]


def test_a_send_run_to_the_same_targets_checks_each_message_in_its_place(
    make_harness: Callable[..., Harness],
) -> None:
    """One run of SENDs that goes back and forth between targets, with refusals between
    messages to the same target (a payload too short to hold a target, one at the end of
    the run, non-ASCII text, a target past its unacknowledged budget): every SEND gets its
    own answer in order, each target gets exactly the messages forwarded to it in order, and
    ids count up without gaps (the run looks each target up once per burst to it)."""
    harness = make_harness(max_unacked=3)
    a, ta, da = _ready(harness)
    b, tb, db = _ready(harness)
    c, tc, dc = _ready(harness)
    # A payload of 5 bytes: a target and no room for the text length.
    short_send = request_frame(MessageType.SEND, 9, b.client_id.to_bytes(4, "big") + b"\x00")
    # And one of 7 at the end of the run (one byte short of a text length).
    last_send = request_frame(MessageType.SEND, 10, c.client_id.to_bytes(4, "big") + b"\x00" * 3)

    def send(target: ClientConnection, text: str, rid: int) -> bytes:
        return encode(SendRequest(target.client_id, text, request_id=rid))

    harness.feed(
        a,
        send(b, "b1", 2)
        + send(b, "b2", 3)
        + short_send
        + send(b, "b3 é", 4)  # non-ASCII: validated by the slow path, forwarded
        + send(c, "c1", 5)
        + send(b, "b4", 6)  # b has 3 unacknowledged: RECIPIENT_BUSY
        + send(c, "c2", 7)
        + last_send,
    )
    harness.settle()
    assert _answers(harness, ta, da) == [
        ("SendOk", 2),
        ("SendOk", 3),
        ("BAD_PAYLOAD", 9),
        ("SendOk", 4),
        ("SendOk", 5),
        ("RECIPIENT_BUSY", 6),
        ("SendOk", 7),
        ("BAD_PAYLOAD", 10),
    ]
    to_b = [e for e in harness.read(tb, db) if isinstance(e, Message)]
    to_c = [e for e in harness.read(tc, dc) if isinstance(e, Message)]
    assert [m.text for m in to_b] == ["b1", "b2", "b3 é"]
    assert [m.text for m in to_c] == ["c1", "c2"]
    ids = sorted(m.message_id for m in to_b + to_c)
    assert ids == list(range(ids[0], ids[0] + 5))
    assert len(b.awaiting_ack) == 3 and len(c.awaiting_ack) == 2


def test_a_word_no_table_holds_is_answered_by_other(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    conn, transport, decoder = _ready(harness)
    unknown = bytearray(encode(TimeRequest(request_id=9)))
    unknown[5] = 0x3F  # request type 0x3F: no such request
    harness.feed(conn, bytes(unknown))
    assert _answers(harness, transport, decoder) == [("UNKNOWN_TYPE", 9)]
    assert OTHER in harness.server.tables[READY]


def test_count_frames_counts_complete_frames() -> None:
    frames = [encode(TimeRequest(request_id=1)), encode(SendRequest(1, "hi")), encode(Ack(3))]
    buf = b"".join(frames)
    assert count_frames(buf, 0, len(buf)) == 3
    assert count_frames(buf, len(frames[0]), len(buf)) == 2
    assert count_frames(buf, 0, 0) == 0


# --- the gates are tables that wrap them --------------------------------------------------------


def test_the_rate_limit_is_a_table_wrapping_the_ready_one() -> None:
    plain, limited = tables(), tables(rate_limited=True)
    for state in (ConnectionState.HANDSHAKE, READY):
        assert plain[state][WORD_ACK] is ack and limited[state][WORD_ACK] is ack  # indications
    assert plain[READY][WORD_SEND] is send and plain[READY][WORD_TIME] is time_
    assert limited[READY][WORD_SEND].__name__ == "rate_limited_send"
    assert limited[READY][WORD_TIME].__name__ == "rate_limited_time_"


@pytest.mark.parametrize("kind", ["time", "ping", "send"])
def test_a_run_past_the_tokens_is_answered_then_refused_request_by_request(
    make_harness: Callable[..., Harness], kind: str
) -> None:
    """Burst 6 at a rate that adds no token meanwhile: HELLO takes one, and of 10 requests in
    one batch the first 5 are answered and the other 5 are RATE_LIMITED, in order, each with
    its own request id (none dropped, none answered twice)."""
    harness = make_harness(rate=0.001, burst=6)
    a, ta, da = _ready(harness)
    b, _, _ = _ready(harness)
    make: dict[str, Callable[[int], Frame]] = {
        "time": lambda i: TimeRequest(request_id=i),
        "ping": lambda i: PingRequest(request_id=i),
        "send": lambda i: SendRequest(b.client_id, f"m{i}", request_id=i),
    }
    ok = {"time": "TimeOk", "ping": "PingOk", "send": "SendOk"}[kind]
    _batch(a, harness, [make[kind](i) for i in range(10, 20)])
    answers = _answers(harness, ta, da)
    refused = [("RATE_LIMITED", i) for i in range(15, 20)]
    assert answers == [(ok, i) for i in range(10, 15)] + refused
    assert a.tokens < 1.0


def test_tokens_are_charged_per_request_across_kinds(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(rate=0.001, burst=4)
    conn, transport, decoder = _ready(harness)
    frames: list[Frame] = [
        TimeRequest(request_id=2),
        PingRequest(request_id=3),
        TimeRequest(request_id=4),
        TimeRequest(request_id=5),
    ]
    _batch(conn, harness, frames)
    assert _answers(harness, transport, decoder) == [
        ("TimeOk", 2),
        ("PingOk", 3),
        ("TimeOk", 4),
        ("RATE_LIMITED", 5),
    ]


def test_tracing_is_a_table_that_shows_every_frame_before_its_answer(
    token_file: Path,
) -> None:
    traced: list[tuple[str, str]] = []

    def tracer(direction: str, conn: Any, event: Frame | InvalidFrame, raw: bytes) -> None:
        traced.append((direction, type(event).__name__))

    harness = Harness(token_file, trace=tracer, rate=0.001, burst=3)
    try:
        assert tables(traced=True)[READY][WORD_TIME].__name__ == "traced_time_"
        conn, transport, decoder = _ready(harness)
        traced.clear()
        _batch(
            conn,
            harness,
            [
                TimeRequest(request_id=2),
                TimeRequest(request_id=3),
                TimeRequest(request_id=4),
                Ack(5),
            ],
        )
        assert _answers(harness, transport, decoder) == [
            ("TimeOk", 2),
            ("TimeOk", 3),
            ("RATE_LIMITED", 4),
        ]
        received = [name for direction, name in traced if direction == "<<-"]
        assert received == ["TimeRequest", "TimeRequest", "TimeRequest", "Ack"], traced
    finally:
        harness.close()


def test_shutting_down_swaps_every_connection_to_a_refusing_table(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    conn, transport, decoder = _ready(harness)
    closing = tables(closing=True)
    assert closing[READY][WORD_ACK] is ack, "indications are still taken"
    harness.server.tables = closing
    conn.take_table()
    assert conn.table is closing[READY]
    _batch(conn, harness, [TimeRequest(request_id=2), PingRequest(request_id=3)])
    assert _answers(harness, transport, decoder) == [("SHUTTING_DOWN", 2), ("SHUTTING_DOWN", 3)]


def test_shutdown_swaps_the_tables_of_connected_clients(
    make_harness: Callable[..., Harness],
) -> None:
    harness = make_harness()
    conn, _, _ = _ready(harness)
    before = conn.table
    task = harness.loop.create_task(harness.server.shutdown("test"))
    harness.settle()
    assert conn.table is not before and conn.table is harness.server.tables.get(
        conn.state, conn.table
    )
    assert harness.server.tables[READY][WORD_TIME].__name__ == "shutting_down"
    task.cancel()
    harness.settle()
