"""Bad input from a raw socket: every malformed frame gets its ERROR, closing ones close,
and nothing a bad peer does reaches anyone else."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from support.peers import RawPeer, assert_still_serving, header, request_frame
from support.servers import ServerThread
from switchboard.client import Client
from switchboard.protocol import (
    HEADER,
    MAGIC,
    VERSION,
    ErrorCode,
    ErrorResponse,
    Frame,
    HelloRequest,
    ListOk,
    ListRequest,
    Message,
    MessageClass,
    MessageType,
    NameOk,
    NameRequest,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)


@pytest.fixture
def bystander(server: ServerThread) -> Any:
    """A well-behaved client connected throughout; it must notice nothing."""
    seen: list[Frame] = []
    with Client("127.0.0.1", server.port, timeout=5, on_indication=seen.append) as client:
        yield client
        # It still gets answers, and no indication reached it.
        assert client.name() == "test-server"
        assert seen == []


# --- closing errors -----------------------------------------------------------------------------


CLOSING_CASES: list[tuple[str, Callable[[int], bytes], ErrorCode, int]] = [
    (
        "bad magic",
        lambda mf: header(1, MessageType.TIME, 7, 0, magic=0x4745),  # "GE" of "GET /"
        ErrorCode.BAD_FRAME,
        0,
    ),
    ("HTTP request", lambda mf: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.BAD_FRAME, 0),
    ("unknown class", lambda mf: header(7, MessageType.TIME, 8, 0), ErrorCode.BAD_FRAME, 8),
    ("class zero", lambda mf: header(0, MessageType.TIME, 9, 0), ErrorCode.BAD_FRAME, 9),
    (
        "newer version",
        lambda mf: header(1, MessageType.TIME, 10, 0, version=2),
        ErrorCode.UNSUPPORTED_VERSION,
        10,
    ),
    (
        "version zero",
        lambda mf: header(1, MessageType.TIME, 11, 0, version=0),
        ErrorCode.UNSUPPORTED_VERSION,
        11,
    ),
    (
        # Only the header is sent: the refusal must not wait for the announced payload.
        "oversized frame",
        lambda mf: header(1, MessageType.SEND, 12, mf - HEADER.size + 1),
        ErrorCode.FRAME_TOO_LARGE,
        12,
    ),
    (
        "4 GiB frame",
        lambda mf: header(1, MessageType.SEND, 13, 0xFFFFFFFF),
        ErrorCode.FRAME_TOO_LARGE,
        13,
    ),
]


@pytest.mark.parametrize(
    ("data", "code", "request_id"),
    [case[1:] for case in CLOSING_CASES],
    ids=[case[0] for case in CLOSING_CASES],
)
def test_closing_errors_answer_then_close(
    server: ServerThread,
    bystander: Client,
    data: Callable[[int], bytes],
    code: ErrorCode,
    request_id: int,
) -> None:
    with RawPeer(server.port) as peer:
        # A good request first, then the bad frame, then more requests in the same write:
        # the good one is answered, the bad one closes, nothing after it is answered.
        peer.send(
            TimeRequest(request_id=1),
            data(65536),
            TimeRequest(request_id=2),
            NameRequest(request_id=3),
        )
        assert peer.expect(TimeOk).request_id == 1
        peer.expect_error(code, request_id)
        assert peer.expect_closed() == []
    server.wait_for(lambda s: s.directory.client_count() == 1)


def test_frame_too_large_follows_the_configured_limit(server_factory: Any) -> None:
    st = server_factory(max_frame=1024)
    with RawPeer(st.port) as peer:
        assert peer.welcome is not None and peer.welcome.max_frame == 1024
        # Exactly at the limit is fine (a SEND of 1024 - 14 - 8 bytes of text) ...
        text = "x" * (1024 - HEADER.size - 4 - 4)
        peer.send(SendRequest(peer.client_id, text, request_id=1))
        assert peer.expect(Message).text == text
        assert peer.expect(SendOk).request_id == 1
        # ... one byte more is not, whatever the payload would have been.
        peer.send(header(1, MessageType.SEND, 2, 1024 - HEADER.size + 1))
        seen = peer.expect_closed()
        errors = [e for e in seen if isinstance(e, ErrorResponse)]
        assert [(e.code, e.request_id) for e in errors] == [(ErrorCode.FRAME_TOO_LARGE, 2)]


# --- errors that leave the connection open ----------------------------------------------------

SEND = MessageType.SEND
STAYING_CASES: list[tuple[str, bytes, ErrorCode]] = [
    ("unknown request type", request_frame(0x3F, 21, b""), ErrorCode.UNKNOWN_TYPE),
    ("response type as request", request_frame(MessageType.OK, 21, b""), ErrorCode.UNKNOWN_TYPE),
    ("indication type as request", request_frame(0x88, 21, b""), ErrorCode.UNKNOWN_TYPE),
    ("trailing byte", request_frame(MessageType.TIME, 21, b"\x00"), ErrorCode.BAD_PAYLOAD),
    ("truncated target", request_frame(SEND, 21, b"\x00\x00"), ErrorCode.BAD_PAYLOAD),
    (
        "text longer than payload",
        request_frame(SEND, 21, struct.pack("!II", 1, 50) + b"short"),
        ErrorCode.BAD_PAYLOAD,
    ),
    (
        "invalid UTF-8 text",
        request_frame(SEND, 21, struct.pack("!II", 1, 2) + b"\xc3\x28"),
        ErrorCode.BAD_PAYLOAD,
    ),
    (
        "invalid UTF-8 room",
        request_frame(MessageType.LIST, 21, struct.pack("!H", 1) + b"\xff"),
        ErrorCode.BAD_PAYLOAD,
    ),
    (
        "surrogate in UTF-8",
        request_frame(MessageType.NICK, 21, struct.pack("!H", 3) + b"\xed\xa0\x80"),
        ErrorCode.BAD_PAYLOAD,
    ),
    ("empty HELLO", request_frame(MessageType.HELLO, 21, b""), ErrorCode.BAD_PAYLOAD),
    (
        "SEND with trailing byte",
        request_frame(SEND, 21, struct.pack("!II", 1, 2) + b"hi!"),
        ErrorCode.BAD_PAYLOAD,
    ),
    (
        "PING with payload",
        request_frame(MessageType.PING_REQUEST, 21, b"\x00"),
        ErrorCode.BAD_PAYLOAD,
    ),
    ("NAME with payload", request_frame(MessageType.NAME, 21, b"xy"), ErrorCode.BAD_PAYLOAD),
    ("LIST truncated", request_frame(MessageType.LIST, 21, b"\x00"), ErrorCode.BAD_PAYLOAD),
]


@pytest.mark.parametrize(
    ("data", "code"), [c[1:] for c in STAYING_CASES], ids=[c[0] for c in STAYING_CASES]
)
def test_request_errors_keep_the_connection(
    server: ServerThread, bystander: Client, data: bytes, code: ErrorCode
) -> None:
    with RawPeer(server.port) as peer:
        peer.send(data, TimeRequest(request_id=22))
        peer.expect_error(code, 21)
        assert peer.expect(TimeOk).request_id == 22
        assert_still_serving(peer)


def test_frames_that_are_not_requests_are_ignored(server: ServerThread, bystander: Client) -> None:
    with RawPeer(server.port) as peer:
        assert peer.welcome is not None
        peer.send(
            TimeOk(1, 0, "UTC", request_id=31),  # a response, as if we were the server
            ErrorResponse.of(ErrorCode.BAD_FRAME, "nonsense", request_id=0),
            peer.welcome,  # a server-only indication
            header(MessageClass.RESPONSE, MessageType.OK, 32, 0),  # OK too short to decode
            header(MessageClass.INDICATION, 0xFE, 0, 3) + b"abc",  # an unknown indication
            header(MessageClass.INDICATION, MessageType.RECEIPT, 0, 1) + b"\x00",  # malformed
            header(MessageClass.INDICATION, MessageType.ACK, 0, 3) + b"\x00\x00\x01",  # short
            header(MessageClass.INDICATION, MessageType.ACK, 0, 9) + b"\x00" * 9,  # long
            header(MessageClass.INDICATION, MessageType.PONG, 0, 2) + b"\x00\x00",
            header(MessageClass.INDICATION, MessageType.PING, 0, 0),  # the server's to send
        )
        assert_still_serving(peer)
    server.wait_for(lambda s: s.directory.client_count() == 1)


def test_hello_with_version_zero_is_refused_and_closed(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        peer.send(HelloRequest(0, request_id=41), TimeRequest(request_id=42))
        peer.expect_error(ErrorCode.UNSUPPORTED_VERSION, 41)
        assert peer.expect_closed() == []


def test_byte_at_a_time_requests_are_answered(server: ServerThread) -> None:
    with RawPeer(server.port) as peer:
        data = encode(NameRequest(request_id=51)) + encode(ListRequest(request_id=52))
        for i in range(len(data)):
            peer.sock.sendall(data[i : i + 1])
        assert peer.expect(NameOk).request_id == 51
        assert peer.expect(ListOk).request_id == 52


def test_random_garbage_never_disturbs_the_server(server: ServerThread, bystander: Client) -> None:
    rng = random.Random(20261123)
    for _ in range(40):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        if rng.random() < 0.5:  # a valid header prefix makes the decoder look further
            garbage = (
                HEADER.pack(MAGIC, VERSION, 1, rng.randrange(0, 16), 5, len(garbage)) + garbage
            )
        with RawPeer(server.port) as peer:
            peer.send(garbage)
            peer.sock.shutdown(socket.SHUT_WR)
            # Whatever the bytes, the server answers with well-formed frames only (the
            # decoder would raise otherwise), then closes: it never hangs on a half frame
            # from a peer that has finished sending.
            for event in peer.expect_closed():
                assert isinstance(event, Frame), event
    server.wait_for(lambda s: s.directory.client_count() == 1)
    assert_still_works(server)


def assert_still_works(server: ServerThread) -> None:
    with Client("127.0.0.1", server.port, timeout=5) as client:
        assert client.name() == "test-server"


def test_a_frame_left_incomplete_is_closed_with_idle_timeout(server_factory: Any) -> None:
    # Half a header, then nothing: IDLE_TIMEOUT after frame_timeout, well before the
    # heartbeat (3 x 1 s) would have dropped the silent peer without a word.
    st = server_factory(frame_timeout=0.3, heartbeat=1.0)
    with RawPeer(st.port) as peer:
        start = time.monotonic()
        peer.send(encode(NameRequest(request_id=61))[:9])
        peer.expect_error(ErrorCode.IDLE_TIMEOUT, 0)
        assert peer.expect_closed() == []
        assert 0.3 <= time.monotonic() - start < 2.5


def test_rate_limit_answers_excess_requests_and_keeps_the_connection(server_factory: Any) -> None:
    st = server_factory(rate=1.0, burst=5)
    with RawPeer(st.port) as peer:
        peer.send(*[TimeRequest(request_id=i) for i in range(1, 11)])
        for i in range(1, 6):
            assert peer.expect(TimeOk).request_id == i
        for i in range(6, 11):
            peer.expect_error(ErrorCode.RATE_LIMITED, i)
        assert peer.client_id in st.client_ids()
