"""Hypothesis round trips: every message, every field over its whole range, survives the codec."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.protocol_strategies import (
    HARD_TEXTS,
    I64_MIN,
    MAX_STR16_TEXTS,
    U16_MAX,
    U64_MAX,
    any_message,
    message_strategy,
)
from switchboard import defaults
from switchboard.protocol import (
    ALL_MESSAGES,
    HEADER_SIZE,
    ClientInfo,
    Frame,
    FrameDecoder,
    ListOk,
    Message,
    NickRequest,
    RoomFlags,
    RoomInfo,
    RoomsOk,
    TimeOk,
    Welcome,
    encode,
)

#: Large enough for every frame the strategies build (a str32 of 80,000 bytes and more).
BIG = 1 << 24

ROUND_TRIP = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def round_trip(msg: Frame) -> object:
    data = encode(msg)
    assert int.from_bytes(data[10:14], "big") == len(data) - HEADER_SIZE
    decoder = FrameDecoder(max_frame=BIG)
    decoder.feed(data)
    events = list(decoder)
    assert len(events) == 1, events
    assert decoder.buffered == 0
    return events[0]


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda cls: cls.__name__)
@ROUND_TRIP
@given(data=st.data())
def test_every_message_type_round_trips(cls: type[Frame], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    assert round_trip(msg) == msg


@ROUND_TRIP
@given(any_message())
def test_encoding_is_deterministic_and_decoding_reencodes_identically(msg: Frame) -> None:
    data = encode(msg)
    assert encode(msg) == data
    decoded = round_trip(msg)
    assert isinstance(decoded, Frame)
    assert encode(decoded) == data


@pytest.mark.parametrize("text", HARD_TEXTS + MAX_STR16_TEXTS, ids=lambda t: f"{len(t)}chars")
def test_hard_and_maximum_length_texts_in_a_str16(text: str) -> None:
    msg = NickRequest(text, request_id=1)
    assert round_trip(msg) == msg
    assert len(encode(msg)) == HEADER_SIZE + 2 + len(text.encode("utf-8"))


def test_maximum_length_str16_is_exactly_65535_bytes() -> None:
    assert all(len(t.encode("utf-8")) == U16_MAX for t in MAX_STR16_TEXTS)


def test_extreme_integers() -> None:
    msg = Message(
        U64_MAX, 0xFFFF_FFFF, "::1", 0xFFFF, "", "", I64_MIN, 0xFF, "", request_id=0xFFFF_FFFF
    )
    assert round_trip(msg) == msg
    assert round_trip(TimeOk(-1, -(1 << 31), "", request_id=0)) == TimeOk(-1, -(1 << 31), "")


@pytest.mark.parametrize(
    "ip",
    ["", "127.0.0.1", "0.0.0.0", "255.255.255.255", "::", "::1", "2001:db8::8a2e:370:7334"],
)
def test_addresses_of_every_family(ip: str) -> None:
    msg = Welcome(1, "s", 1, 10_000, 65_536, 4096, 1024, ip, 7000)
    assert round_trip(msg) == msg


def test_ipv6_zone_id_is_dropped_on_the_wire() -> None:
    msg = Welcome(1, "s", 1, 10_000, 65_536, 4096, 1024, "fe80::1%eth0", 7000)
    decoded = round_trip(msg)
    assert isinstance(decoded, Welcome)
    assert decoded.ip == "fe80::1"


def test_room_lists_empty_and_a_full_page() -> None:
    assert round_trip(RoomsOk(0, 0, ())) == RoomsOk(0, 0, ())
    rooms = tuple(
        RoomInfo("房" * 32 if i % 2 else f"r{i}", i, RoomFlags(i % 2))
        for i in range(defaults.MAX_ROOMS_LISTED)
    )
    ok = RoomsOk(10_000, 1, rooms, request_id=3)
    assert round_trip(ok) == ok
    # A full page of the longest names stays inside the frame a client must accept.
    assert len(encode(ok)) < defaults.MAX_FRAME


def test_client_lists_empty_and_long() -> None:
    assert round_trip(ListOk("", ())) == ListOk("", ())
    clients = tuple(
        ClientInfo(i, "10.0.0.1" if i % 2 else "fe80::2", i % 65_536, f"n{i}", i)
        for i in range(500)
    )
    assert round_trip(ListOk("lobby", clients, request_id=9)) == ListOk(
        "lobby", clients, request_id=9
    )
