"""The hand-fused hot-path codecs must produce exactly the bytes of the general codec."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.protocol_strategies import message_strategy
from switchboard.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Ack,
    Acks,
    ErrorCode,
    FrameDecoder,
    InvalidFrame,
    ListOk,
    ListRequest,
    Message,
    MessageClass,
    MessageType,
    PingOk,
    ProtocolError,
    Receipt,
    Receipts,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)
from switchboard.protocol.codec import HEADER_WORDS
from switchboard.protocol.fastpath import (
    KEY_ACK,
    KEY_SEND,
    KEY_TIME,
    TIME_OK_PREFIX,
    WORD_ACK,
    ServerClock,
    client_record,
    direct_fields,
    encode_list_ok,
    encode_message,
    encode_message_fields,
    encode_ping_ok,
    encode_receipt,
    encode_receipts,
    encode_send_ok,
    encode_time_ok,
    parse_acks,
    parse_list,
    parse_send,
    sender_block,
    unpack_ack,
    unpack_send_head,
)


@given(message_strategy(TimeOk))
def test_time_ok_matches_encode(msg: TimeOk) -> None:
    zone = msg.zone.encode()
    assert encode_time_ok(msg.request_id, msg.epoch_ms, msg.utc_offset_s, zone) == encode(msg)


@given(message_strategy(SendOk))
def test_send_ok_matches_encode(msg: SendOk) -> None:
    assert encode_send_ok(msg.request_id, msg.message_id, msg.target) == encode(msg)


@given(st.integers(0, 0xFFFFFFFF))
def test_ping_ok_matches_encode(request_id: int) -> None:
    assert encode_ping_ok(request_id) == encode(PingOk(request_id=request_id))


@given(message_strategy(Receipt))
def test_receipt_matches_encode(msg: Receipt) -> None:
    assert encode_receipt(msg.message_id, msg.target, msg.status) == encode(
        Receipt(msg.message_id, msg.target, msg.status)
    )


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFF),
    st.lists(st.integers(0, 0xFFFF_FFFF_FFFF_FFFF), max_size=64),
)
def test_receipts_match_encode(target: int, status: int, ids: list[int]) -> None:
    # The ids go through an array and a byte swap: every u64, in order, in network order.
    assert encode_receipts(target, status, ids) == encode(Receipts(target, status, tuple(ids)))


@given(st.lists(st.integers(0, 0xFFFF_FFFF_FFFF_FFFF), max_size=64), st.binary(max_size=3))
def test_parse_acks_reads_what_encode_wrote(ids: list[int], tail: bytes) -> None:
    frame = encode(Acks(tuple(ids))) + tail  # bytes after the frame are not its
    for buf in (frame, bytearray(frame)):
        acked = parse_acks(buf, HEADER_SIZE, len(frame) - len(tail))
        assert acked is not None and list(acked) == ids


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x00\x00", b"\x00\x00\x00\x01" + b"\x00" * 7, b"\x00\x00\x00\x00\x00"],
)
def test_parse_acks_refuses_a_count_that_does_not_match(payload: bytes) -> None:
    assert parse_acks(payload, 0, len(payload)) is None


def test_receipts_refuse_an_id_past_u64() -> None:
    with pytest.raises(OverflowError):
        encode_receipts(1, 1, [1 << 64])


@given(message_strategy(Message))
def test_message_matches_encode(msg: Message) -> None:
    sender = sender_block(msg.sender_id, msg.sender_ip, msg.sender_port, msg.sender_nick)
    data = encode_message(
        msg.message_id, sender, msg.room.encode(), msg.sent_ms, msg.flags, msg.text.encode()
    )
    assert data == encode(dataclasses.replace(msg, request_id=0))


def _payload(frame: bytes) -> tuple[int, int, bytes, int, int]:
    """The one frame in ``frame`` as frames() sees it (offsets are valid only during the
    iteration, so the buffer is copied there)."""
    decoder = FrameDecoder(max_frame=len(frame))
    decoder.feed(frame)
    found = [
        (key, rid, bytes(decoder.buffer), start, end) for key, rid, start, end in decoder.frames()
    ]
    assert len(found) == 1
    return found[0]


@given(message_strategy(SendRequest))
def test_parse_send_reads_what_encode_wrote(msg: SendRequest) -> None:
    key, request_id, buf, start, end = _payload(encode(msg))
    assert (key, request_id) == (KEY_SEND, msg.request_id)
    assert parse_send(buf, start, end) == (msg.target, msg.text.encode())


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing at all
        b"\x00\x00\x00\x01\x00\x00",  # ends inside the length
        b"\x00\x00\x00\x01\x00\x00\x00\x05ab",  # text shorter than announced
        b"\x00\x00\x00\x01\x00\x00\x00\x01ab",  # a trailing byte
        b"\x00\x00\x00\x01\x00\x00\x00\x02\xc3\x28",  # invalid UTF-8
    ],
)
def test_parse_send_rejects_bad_payloads(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_send(payload, 0, len(payload))
    assert info.value.code == ErrorCode.BAD_PAYLOAD


def test_ack_header_word() -> None:
    # The split loop settles ACKs by their header word; an ACK's payload is one u64.
    frame = encode(Ack(2**64 - 1))
    key, _, _, start, end = _payload(frame)
    _, word, _, length = HEADER_WORDS.unpack_from(frame, 0)
    assert (key, word, length, end - start) == (KEY_ACK, WORD_ACK, 8, 8)
    assert unpack_ack(frame, start) == (2**64 - 1,)


@given(message_strategy(SendRequest))
def test_unpack_send_head_reads_target_and_text_length(msg: SendRequest) -> None:
    _, _, buf, start, _ = _payload(encode(msg))
    assert unpack_send_head(buf, start) == (msg.target, len(msg.text.encode()))


def test_frames_key_for_time() -> None:
    key, request_id, _, start, end = _payload(encode(TimeRequest(request_id=9)))
    assert (key, request_id, end - start) == (KEY_TIME, 9, 0)


def test_server_clock_answers_with_a_decodable_current_time() -> None:
    import time

    clock = ServerClock()
    before = time.time_ns() // 1_000_000
    frames = []
    for request_id in (1, 2, 0xFFFFFFFF):
        pack, tail = clock.now()
        frames.append(pack(TIME_OK_PREFIX, request_id, tail))
    after = time.time_ns() // 1_000_000
    decoder = FrameDecoder()
    for frame in frames:
        decoder.feed(frame)
    decoded = list(decoder)
    assert [m.request_id for m in decoded] == [1, 2, 0xFFFFFFFF]
    for msg in decoded:
        assert isinstance(msg, TimeOk)
        assert before <= msg.epoch_ms <= after
        local = time.localtime(msg.epoch_ms / 1000)
        assert (msg.utc_offset_s, msg.zone) == (local.tm_gmtoff, local.tm_zone)


@given(message_strategy(ListOk))
def test_list_ok_matches_encode(msg: ListOk) -> None:
    records = [
        client_record(sender_block(c.client_id, c.ip, c.port, c.nick), c.connected_ms)
        for c in msg.clients
    ]
    assert encode_list_ok(msg.request_id, msg.room.encode(), records) == encode(msg)


@given(message_strategy(ListRequest))
def test_parse_list_reads_what_encode_wrote(msg: ListRequest) -> None:
    frame = encode(msg)
    assert parse_list(frame, HEADER_SIZE, len(frame)) == msg.room.encode()


@pytest.mark.parametrize(
    "payload", [b"", b"\x00", b"\x00\x02a", b"\x00\x01ab", b"\x00\x01\xff", b"\x00\x02\xc3("]
)
def test_parse_list_refuses_what_the_general_decoder_refuses(payload: bytes) -> None:
    assert parse_list(payload, 0, len(payload)) is None
    # The general decoder, given the same payload in a LIST frame, refuses it too.
    head = HEADER.pack(MAGIC, VERSION, MessageClass.REQUEST, MessageType.LIST, 7, len(payload))
    decoder = FrameDecoder()
    decoder.feed(head + payload)
    events = list(decoder)
    assert len(events) == 1 and isinstance(events[0], InvalidFrame), events
    assert (events[0].error.code, events[0].request_id) == (ErrorCode.BAD_PAYLOAD, 7)


@given(message_strategy(Message))
def test_direct_message_from_cached_fields_matches_encode(msg: Message) -> None:
    sender = sender_block(msg.sender_id, msg.sender_ip, msg.sender_port, msg.sender_nick)
    fields = direct_fields(sender)
    data = encode_message_fields(msg.message_id, fields, msg.sent_ms, msg.flags, msg.text.encode())
    assert data == encode(dataclasses.replace(msg, room="", request_id=0))
