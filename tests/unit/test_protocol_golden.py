"""Golden vectors: hand-checked bytes for one frame of every message type.

The same hex appears in docs/PROTOCOL.md under a ``<!-- golden: ClassName -->`` marker; these
tests read it from there, so the specification, these literals and the codec cannot drift
apart silently.
"""

from __future__ import annotations

import pytest

from support.golden import parse_hex, spec_vectors
from switchboard.protocol import (
    ALL_MESSAGES,
    Ack,
    Acks,
    BroadcastOk,
    BroadcastRequest,
    ClientInfo,
    ErrorCode,
    ErrorResponse,
    Frame,
    FrameDecoder,
    HelloOk,
    HelloRequest,
    HistoryOk,
    HistoryRequest,
    Joined,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    Left,
    LeftReason,
    ListOk,
    ListRequest,
    Message,
    NameOk,
    NameRequest,
    NickChanged,
    NickOk,
    NickRequest,
    Ping,
    PingOk,
    PingRequest,
    Pong,
    Receipt,
    Receipts,
    ReceiptStatus,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendNickOk,
    SendNickRequest,
    SendOk,
    SendRequest,
    Shutdown,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

#: class name -> (message, its complete frame as hex: the header, then the payload).
GOLDEN: dict[str, tuple[Frame, str]] = {
    "HelloRequest": (
        HelloRequest(request_id=1, version=1, nick="alice", token=""),
        "53 42 01 01 00 01 00 00 00 01 00 00 00 0b 00 01 00 05 61 6c 69 63 65 00 00",
    ),
    "TimeRequest": (TimeRequest(request_id=2), "53 42 01 01 00 02 00 00 00 02 00 00 00 00"),
    "NameRequest": (NameRequest(request_id=3), "53 42 01 01 00 03 00 00 00 03 00 00 00 00"),
    "ListRequest": (
        ListRequest(request_id=4, room="lobby"),
        "53 42 01 01 00 04 00 00 00 04 00 00 00 07 00 05 6c 6f 62 62 79",
    ),
    "SendRequest": (
        SendRequest(request_id=5, target=2, text="hi bob"),
        "53 42 01 01 00 05 00 00 00 05 00 00 00 0e 00 00 00 02 00 00 00 06 68 69 20 62 6f 62",
    ),
    "NickRequest": (
        NickRequest(request_id=6, nick="alice"),
        "53 42 01 01 00 06 00 00 00 06 00 00 00 07 00 05 61 6c 69 63 65",
    ),
    "JoinRequest": (
        JoinRequest(request_id=7, room="lobby"),
        "53 42 01 01 00 07 00 00 00 07 00 00 00 07 00 05 6c 6f 62 62 79",
    ),
    "LeaveRequest": (
        LeaveRequest(request_id=8, room="lobby"),
        "53 42 01 01 00 08 00 00 00 08 00 00 00 07 00 05 6c 6f 62 62 79",
    ),
    "BroadcastRequest": (
        BroadcastRequest(request_id=9, room="lobby", text="hello, all"),
        "53 42 01 01 00 09 00 00 00 09 00 00 00 15"
        " 00 05 6c 6f 62 62 79 00 00 00 0a 68 65 6c 6c 6f"
        " 2c 20 61 6c 6c",
    ),
    "PingRequest": (PingRequest(request_id=10), "53 42 01 01 00 0a 00 00 00 0a 00 00 00 00"),
    "HelloOk": (
        HelloOk(request_id=1, version=1, client_id=1, nick="alice"),
        "53 42 01 02 00 40 00 00 00 01 00 00 00 0f 00 01 00 01 00 00 00 01 00 05 61 6c 69 63 65",
    ),
    "TimeOk": (
        TimeOk(request_id=2, epoch_ms=1763865000000, utc_offset_s=3600, zone="CET"),
        "53 42 01 02 00 40 00 00 00 02 00 00 00 13"
        " 00 02 00 00 01 9a ae 8b f8 40 00 00 0e 10 00 03"
        " 43 45 54",
    ),
    "NameOk": (
        NameOk(request_id=3, name="switchboard"),
        "53 42 01 02 00 40 00 00 00 03 00 00 00 0f 00 03 00 0b 73 77 69 74 63 68 62 6f 61 72 64",
    ),
    "ListOk": (
        ListOk(
            request_id=4,
            room="lobby",
            clients=(
                ClientInfo(
                    client_id=1,
                    ip="127.0.0.1",
                    port=50000,
                    nick="alice",
                    connected_ms=1763864940000,
                ),
                ClientInfo(client_id=2, ip="::1", port=50001, nick="", connected_ms=1763864999000),
            ),
        ),
        "53 42 01 02 00 40 00 00 00 04 00 00 00 48"
        " 00 04 00 05 6c 6f 62 62 79 00 00 00 02 00 00 00"
        " 01 04 7f 00 00 01 c3 50 00 05 61 6c 69 63 65 00"
        " 00 01 9a ae 8b 0d e0 00 00 00 02 06 00 00 00 00"
        " 00 00 00 00 00 00 00 00 00 00 00 01 c3 51 00 00"
        " 00 00 01 9a ae 8b f4 58",
    ),
    "SendOk": (
        SendOk(request_id=5, message_id=42, target=2),
        "53 42 01 02 00 40 00 00 00 05 00 00 00 0e 00 05 00 00 00 00 00 00 00 2a 00 00 00 02",
    ),
    "NickOk": (
        NickOk(request_id=6, nick="alice"),
        "53 42 01 02 00 40 00 00 00 06 00 00 00 09 00 06 00 05 61 6c 69 63 65",
    ),
    "JoinOk": (
        JoinOk(request_id=7, room="lobby", members=2, history=0),
        "53 42 01 02 00 40 00 00 00 07 00 00 00 11"
        " 00 07 00 05 6c 6f 62 62 79 00 00 00 02 00 00 00"
        " 00",
    ),
    "LeaveOk": (
        LeaveOk(request_id=8, room="lobby"),
        "53 42 01 02 00 40 00 00 00 08 00 00 00 09 00 08 00 05 6c 6f 62 62 79",
    ),
    "BroadcastOk": (
        BroadcastOk(request_id=9, message_id=43, reached=1),
        "53 42 01 02 00 40 00 00 00 09 00 00 00 0e 00 09 00 00 00 00 00 00 00 2b 00 00 00 01",
    ),
    "PingOk": (PingOk(request_id=10), "53 42 01 02 00 40 00 00 00 0a 00 00 00 02 00 0a"),
    "ErrorResponse": (
        ErrorResponse(request_id=11, code=6, name="NO_SUCH_CLIENT", message="no client 9"),
        "53 42 01 02 00 41 00 00 00 0b 00 00 00 1f"
        " 00 06 00 0e 4e 4f 5f 53 55 43 48 5f 43 4c 49 45"
        " 4e 54 00 0b 6e 6f 20 63 6c 69 65 6e 74 20 39",
    ),
    "Welcome": (
        Welcome(
            request_id=0,
            client_id=1,
            server_name="switchboard",
            version=1,
            heartbeat_ms=10000,
            max_frame=65536,
            max_text=4096,
            max_clients=1024,
            ip="127.0.0.1",
            port=50000,
        ),
        "53 42 01 03 00 80 00 00 00 00 00 00 00 2a"
        " 00 00 00 01 00 0b 73 77 69 74 63 68 62 6f 61 72"
        " 64 00 01 00 00 27 10 00 01 00 00 00 00 10 00 00"
        " 00 04 00 04 7f 00 00 01 c3 50",
    ),
    "Message": (
        Message(
            request_id=0,
            message_id=42,
            sender_id=1,
            sender_ip="127.0.0.1",
            sender_port=50000,
            sender_nick="alice",
            room="",
            sent_ms=1763865000000,
            flags=0,
            text="héllo 你好",
        ),
        "53 42 01 03 00 81 00 00 00 00 00 00 00 36"
        " 00 00 00 00 00 00 00 2a 00 00 00 01 04 7f 00 00"
        " 01 c3 50 00 05 61 6c 69 63 65 00 00 00 00 01 9a"
        " ae 8b f8 40 00 00 00 00 0d 68 c3 a9 6c 6c 6f 20"
        " e4 bd a0 e5 a5 bd",
    ),
    "Ack": (
        Ack(request_id=0, message_id=42),
        "53 42 01 03 00 82 00 00 00 00 00 00 00 08 00 00 00 00 00 00 00 2a",
    ),
    "Receipt": (
        Receipt(request_id=0, message_id=42, target=2, status=ReceiptStatus.DELIVERED),
        "53 42 01 03 00 83 00 00 00 00 00 00 00 0d 00 00 00 00 00 00 00 2a 00 00 00 02 01",
    ),
    "Joined": (
        Joined(request_id=0, room="lobby", client_id=2, nick="bob"),
        "53 42 01 03 00 84 00 00 00 00 00 00 00 10 00 05 6c 6f 62 62 79 00 00 00 02 00 03 62 6f 62",
    ),
    "Left": (
        Left(request_id=0, room="lobby", client_id=2, nick="bob", reason=LeftReason.LEFT),
        "53 42 01 03 00 85 00 00 00 00 00 00 00 11"
        " 00 05 6c 6f 62 62 79 00 00 00 02 00 03 62 6f 62"
        " 01",
    ),
    "SendNickRequest": (
        SendNickRequest(request_id=11, nick="bob", text="hi bob"),
        "53 42 01 01 00 0b 00 00 00 0b 00 00 00 0f 00 03 62 6f 62 00 00 00 06 68 69 20 62 6f 62",
    ),
    "RoomsRequest": (
        RoomsRequest(request_id=12, after=""),
        "53 42 01 01 00 0c 00 00 00 0c 00 00 00 02 00 00",
    ),
    "HistoryRequest": (
        HistoryRequest(request_id=13, room="lobby", mode=3, anchor=41, until=0, limit=100),
        "53 42 01 01 00 0d 00 00 00 0d 00 00 00 1a"
        " 00 05 6c 6f 62 62 79 03 00 00 00 00 00 00 00 29"
        " 00 00 00 00 00 00 00 00 00 64",
    ),
    "HistoryOk": (
        HistoryOk(request_id=13, room="lobby", epoch=3054198966, more=0, count=2),
        "53 42 01 02 00 40 00 00 00 0d 00 00 00 16"
        " 00 0d 00 05 6c 6f 62 62 79 00 00 00 00 b6 0b 60"
        " b6 00 00 00 00 02",
    ),
    "SendNickOk": (
        SendNickOk(request_id=11, message_id=44, target=2),
        "53 42 01 02 00 40 00 00 00 0b 00 00 00 0e 00 0b 00 00 00 00 00 00 00 2c 00 00 00 02",
    ),
    "RoomsOk": (
        RoomsOk(
            request_id=12,
            total=2,
            more=0,
            rooms=(
                RoomInfo(name="chess", members=1, flags=RoomFlags.NONE),
                RoomInfo(name="lobby", members=2, flags=RoomFlags.MEMBER),
            ),
        ),
        "53 42 01 02 00 40 00 00 00 0c 00 00 00 23"
        " 00 0c 00 00 00 02 00 00 00 00 02 00 05 63 68 65"
        " 73 73 00 00 00 01 00 00 05 6c 6f 62 62 79 00 00"
        " 00 02 01",
    ),
    "NickChanged": (
        NickChanged(request_id=0, client_id=2, old_nick="bob", new_nick="robert"),
        "53 42 01 03 00 89 00 00 00 00 00 00 00 11"
        " 00 00 00 02 00 03 62 6f 62 00 06 72 6f 62 65 72"
        " 74",
    ),
    "Acks": (
        Acks(request_id=0, message_ids=(42, 43, 44)),
        "53 42 01 03 00 8a 00 00 00 00 00 00 00 1c"
        " 00 00 00 03 00 00 00 00 00 00 00 2a 00 00 00 00"
        " 00 00 00 2b 00 00 00 00 00 00 00 2c",
    ),
    "Receipts": (
        Receipts(request_id=0, target=2, status=ReceiptStatus.DELIVERED, message_ids=(42, 43, 44)),
        "53 42 01 03 00 8b 00 00 00 00 00 00 00 21"
        " 00 00 00 02 01 00 00 00 03 00 00 00 00 00 00 00"
        " 2a 00 00 00 00 00 00 00 2b 00 00 00 00 00 00 00"
        " 2c",
    ),
    "Ping": (Ping(request_id=0), "53 42 01 03 00 86 00 00 00 00 00 00 00 00"),
    "Pong": (Pong(request_id=0), "53 42 01 03 00 87 00 00 00 00 00 00 00 00"),
    "Shutdown": (
        Shutdown(request_id=0, reason="server stopping"),
        "53 42 01 03 00 88 00 00 00 00 00 00 00 11"
        " 00 0f 73 65 72 76 65 72 20 73 74 6f 70 70 69 6e"
        " 67",
    ),
}


def decode_one(data: bytes) -> object:
    decoder = FrameDecoder()
    decoder.feed(data)
    events = list(decoder)
    assert len(events) == 1, events
    assert decoder.buffered == 0
    return events[0]


def test_every_message_class_has_a_golden_vector() -> None:
    assert sorted(GOLDEN) == sorted(cls.__name__ for cls in ALL_MESSAGES)
    for name, (msg, _) in GOLDEN.items():
        assert type(msg).__name__ == name


def test_protocol_md_has_a_golden_vector_for_every_message_class() -> None:
    documented = spec_vectors()
    missing = {cls.__name__ for cls in ALL_MESSAGES} - set(documented)
    assert not missing, f"PROTOCOL.md lacks golden vectors for {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_encode_gives_the_golden_bytes(name: str) -> None:
    msg, hex_text = GOLDEN[name]
    assert encode(msg) == parse_hex(hex_text)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_decode_of_the_golden_bytes_gives_the_message(name: str) -> None:
    msg, hex_text = GOLDEN[name]
    assert decode_one(parse_hex(hex_text)) == msg


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_protocol_md_quotes_the_same_bytes(name: str) -> None:
    _, hex_text = GOLDEN[name]
    assert spec_vectors()[name] == parse_hex(hex_text), (
        f"the golden vector of {name} in docs/PROTOCOL.md differs from the test's"
    )


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_header_fields_of_the_golden_frames(name: str) -> None:
    msg, hex_text = GOLDEN[name]
    data = parse_hex(hex_text)
    assert data[:2] == b"SB"
    assert data[2] == 1
    assert data[3] == msg.MESSAGE_CLASS
    assert int.from_bytes(data[4:6], "big") == msg.MESSAGE_TYPE
    assert int.from_bytes(data[6:10], "big") == msg.request_id
    assert int.from_bytes(data[10:14], "big") == len(data) - 14
    if msg.ANSWERS is not None:  # OK results start with the answered request type
        assert int.from_bytes(data[14:16], "big") == msg.ANSWERS


def test_error_response_of_carries_the_symbolic_name() -> None:
    err = ErrorResponse.of(ErrorCode.NO_SUCH_CLIENT, "no client 9", request_id=11)
    assert err == GOLDEN["ErrorResponse"][0]
    assert (err.code, err.name) == (6, "NO_SUCH_CLIENT")
