"""Fuzzing a live server (``switchboard serve`` in a subprocess) through real sockets.

Each Hypothesis example opens a fresh connection, sends a valid TIME request and then a
generated mix of valid frames and garbage (random bytes, bad magic, bad versions, unknown
classes and types, huge announced lengths, malformed payloads, invalid UTF-8, a truncated
last frame), in one or two writes.  Each piece carries the answer docs/PROTOCOL.md gives for
it (its "Bad input" and "Error codes" tables), so the test asserts the exact sequence of
frames that comes back, and that the connection is closed exactly when a closing error was
due.  After every example a bystander connected throughout still gets correct answers; at the
end the server's connections and open file descriptors are back to their baseline.

The decoder on its own is fuzzed in tests/unit/test_protocol_decoder.py (random bytes, split
points, mutated streams); this file checks the same invariants end to end through the server.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.peers import RawPeer, header
from support.servers import ServerProcess, start_server_process
from support.services import open_fds
from support.waiting import wait_until
from switchboard.client import Client
from switchboard.protocol import (
    CLOSING_CODES,
    HEADER,
    VERSION,
    ErrorCode,
    ErrorResponse,
    Frame,
    ListOk,
    ListRequest,
    MessageClass,
    MessageType,
    NameOk,
    NameRequest,
    PingOk,
    PingRequest,
    TimeOk,
    TimeRequest,
    encode,
)

MAX_FRAME = 4096  # small, so that "huge" lengths are cheap to generate on either side
REQUEST_TYPES = {int(t) for t in MessageType if t < 0x40}


@dataclass(frozen=True)
class Piece:
    """Bytes to send and what the server must answer: a frame type, an error, or nothing."""

    data: bytes
    answer: type | None = None  # the OK frame class for valid requests
    error: ErrorCode | None = None
    request_id: int = 0
    truncated: bool = False  # the stream ends inside this frame

    @property
    def closes(self) -> bool:
        return self.error is not None and self.error in CLOSING_CODES


rids = st.integers(1, 0xFFFFFFFF)
invalid_utf8 = st.binary(min_size=1, max_size=40).filter(lambda b: not _decodes(b))


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def valid_request(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    frame, answer = draw(
        st.sampled_from(
            [
                (TimeRequest(request_id=rid), TimeOk),
                (NameRequest(request_id=rid), NameOk),
                (ListRequest(request_id=rid), ListOk),
                (PingRequest(request_id=rid), PingOk),
            ]
        )
    )
    return Piece(encode(frame), answer=answer, request_id=rid)


@st.composite
def random_bytes(draw: st.DrawFn) -> Piece:
    # At least a header's worth: the server judges the magic once 14 bytes are in (spec).
    data = draw(st.binary(min_size=HEADER.size, max_size=300).filter(lambda b: b[:2] != b"SB"))
    return Piece(data, error=ErrorCode.BAD_FRAME, request_id=0)


@st.composite
def bad_version(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    version = draw(st.integers(0, 255).filter(lambda v: v != VERSION))
    # Class, type and length may be anything: the version is checked before them.
    head = header(
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
        rid,
        draw(st.integers(0, 0xFFFFFFFF)),
        version=version,
    )
    return Piece(head, error=ErrorCode.UNSUPPORTED_VERSION, request_id=rid)


@st.composite
def huge_length(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    length = draw(st.integers(MAX_FRAME - HEADER.size + 1, 0xFFFFFFFF))
    head = header(draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)), rid, length)
    return Piece(head, error=ErrorCode.FRAME_TOO_LARGE, request_id=rid)


@st.composite
def bad_class(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    payload = draw(st.binary(max_size=40))
    mclass = draw(st.integers(0, 255).filter(lambda c: c not in (1, 2, 3)))
    head = header(mclass, draw(st.integers(0, 0xFFFF)), rid, len(payload))
    return Piece(head + payload, error=ErrorCode.BAD_FRAME, request_id=rid)


@st.composite
def unknown_request_type(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    payload = draw(st.binary(max_size=60))
    mtype = draw(st.integers(0, 0xFFFF).filter(lambda t: t not in REQUEST_TYPES))
    data = header(MessageClass.REQUEST, mtype, rid, len(payload)) + payload
    return Piece(data, error=ErrorCode.UNKNOWN_TYPE, request_id=rid)


@st.composite
def not_a_request(draw: st.DrawFn) -> Piece:
    # Responses and indications from a client are ignored, whatever their type or payload.
    payload = draw(st.binary(max_size=60))
    mclass = draw(st.sampled_from([MessageClass.RESPONSE, MessageClass.INDICATION]))
    data = header(mclass, draw(st.integers(0, 0xFFFF)), draw(rids), len(payload)) + payload
    return Piece(data)


def str16(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


@st.composite
def bad_payload(draw: st.DrawFn) -> Piece:
    rid = draw(rids)
    kind = draw(st.sampled_from(["empty+junk", "send-short", "utf8-text", "utf8-str16"]))
    if kind == "empty+junk":  # TIME, NAME, PING_REQUEST take no payload
        mtype = draw(
            st.sampled_from([MessageType.TIME, MessageType.NAME, MessageType.PING_REQUEST])
        )
        payload = draw(st.binary(min_size=1, max_size=40))
    elif kind == "send-short":  # fewer than the 8 bytes of target and text length
        mtype, payload = MessageType.SEND, draw(st.binary(max_size=7))
    elif kind == "utf8-text":
        raw = draw(invalid_utf8)
        mtype = MessageType.SEND
        payload = struct.pack("!II", draw(st.integers(0, 0xFFFFFFFF)), len(raw)) + raw
    else:
        raw = draw(invalid_utf8)
        mtype = draw(
            st.sampled_from(
                [MessageType.NICK, MessageType.JOIN, MessageType.LEAVE, MessageType.LIST,
                 MessageType.BROADCAST]
            )
        )  # fmt: skip
        payload = str16(raw) + (
            struct.pack("!I", 1) + b"x" if mtype == MessageType.BROADCAST else b""
        )
    data = header(MessageClass.REQUEST, mtype, rid, len(payload)) + payload
    return Piece(data, error=ErrorCode.BAD_PAYLOAD, request_id=rid)


@st.composite
def truncated_frame(draw: st.DrawFn) -> Piece:
    payload = draw(st.binary(min_size=1, max_size=200))
    whole = header(MessageClass.REQUEST, MessageType.SEND, draw(rids), len(payload)) + payload
    cut = draw(st.integers(1, len(whole) - 1))
    return Piece(whole[:cut], truncated=True)


pieces = st.one_of(
    valid_request(),
    random_bytes(),
    bad_version(),
    huge_length(),
    bad_class(),
    unknown_request_type(),
    not_a_request(),
    bad_payload(),
)


@st.composite
def streams(draw: st.DrawFn) -> list[Piece]:
    body = draw(st.lists(pieces, min_size=1, max_size=4))
    if draw(st.booleans()):
        body.append(draw(truncated_frame()))
    return body


@dataclass
class Fixture:
    server: ServerProcess
    bystander: Client
    baseline_fds: int


@pytest.fixture(scope="module")
def live() -> Iterator[Fixture]:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting the server's file descriptors needs /proc")
    sp = start_server_process("--max-frame", str(MAX_FRAME))
    try:
        with Client(sp.host, sp.port, timeout=5) as bystander:
            baseline = open_fds(sp.proc.pid)
            yield Fixture(sp, bystander, baseline)

            # After all the fuzzing, whatever order the tests ran in: every garbage
            # connection is gone, and so are the descriptors it held.
            def only_the_bystander() -> bool:
                return [c.client_id for c in bystander.list_clients()] == [bystander.client_id]

            assert wait_until(only_the_bystander)
            assert wait_until(lambda: open_fds(sp.proc.pid) <= baseline), (
                open_fds(sp.proc.pid),
                baseline,
            )
            assert bystander.time().epoch_ms > 0
    finally:
        assert sp.stop() == 0
        assert "Traceback" not in "".join(sp.log)


def expected_frames(stream: list[Piece]) -> tuple[list[tuple[type, int, int]], bool]:
    """(frame class, request id, error code) expected in order, and whether it closes."""
    out: list[tuple[type, int, int]] = [(TimeOk, 1, 0)]
    for piece in stream:
        if piece.answer is not None:
            out.append((piece.answer, piece.request_id, 0))
        elif piece.error is not None:
            out.append((ErrorResponse, piece.request_id, int(piece.error)))
            if piece.closes:
                return out, True
        if piece.truncated:
            return out, True  # we end the stream mid-frame: the server just closes
    return out, False


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams(), split=st.floats(0, 1))
def test_the_live_server_answers_garbage_as_the_spec_says(
    live: Fixture, stream: list[Piece], split: float
) -> None:
    data = encode(TimeRequest(request_id=1)) + b"".join(p.data for p in stream)
    expected, closes = expected_frames(stream)
    with RawPeer(live.server.port, live.server.host) as peer:
        cut = int(len(data) * split)
        peer.send(data[:cut])
        peer.send(data[cut:])
        if any(p.truncated for p in stream) and not closes_before_truncation(stream):
            peer.sock.shutdown(socket.SHUT_WR)
        elif not closes:
            peer.send(TimeRequest(request_id=0xFFFF))  # proves nothing else is queued
            expected.append((TimeOk, 0xFFFF, 0))
        got = []
        for _ in expected:
            frame = peer.expect(Frame)
            code = frame.code if isinstance(frame, ErrorResponse) else 0
            got.append((type(frame), frame.request_id, code))
            if got[-1] != expected[len(got) - 1]:
                break
        assert got == expected
        if closes:
            assert peer.expect_closed() == [], "nothing may follow a closing error"
    # The bystander noticed nothing and gets the same answers as before.
    assert live.bystander.name() == "test-server"
    assert live.bystander.client_id in [c.client_id for c in live.bystander.list_clients()]


def closes_before_truncation(stream: list[Piece]) -> bool:
    return any(p.closes for p in stream if not p.truncated)
