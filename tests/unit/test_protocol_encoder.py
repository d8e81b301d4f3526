"""Local errors: what the protocol cannot carry is refused by ``encode`` with LocalProtocolError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.protocol import (
    ClientInfo,
    ErrorCode,
    Frame,
    HelloRequest,
    ListOk,
    LocalProtocolError,
    Message,
    NickRequest,
    ProtocolError,
    Receipt,
    SendRequest,
    SwitchboardProtocolError,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
    error_name,
)
from switchboard.protocol.wire import pack_address


def welcome(ip: str) -> Welcome:
    return Welcome(1, "s", 1, 10_000, 65_536, 4096, 1024, ip, 7000)


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "message_id": 1,
        "sender_id": 1,
        "sender_ip": "",
        "sender_port": 1,
        "sender_nick": "",
        "room": "",
        "sent_ms": 0,
        "flags": 0,
        "text": "",
    }
    fields.update(changes)
    return Message(**fields)


OUT_OF_RANGE: dict[str, Frame] = {
    "u8 above 255": message(flags=256),
    "u8 negative": Receipt(1, 1, -1),
    "u16 above 65535": HelloRequest(version=65_536),
    "u32 negative": SendRequest(-1, "x"),
    "u32 above 2^32-1": SendRequest(1 << 32, "x"),
    "u64 above 2^64-1": message(message_id=1 << 64),
    "u64 negative": message(message_id=-1),
    "i32 below -2^31": TimeOk(0, -(1 << 31) - 1, ""),
    "i64 above 2^63-1": TimeOk(1 << 63, 0, ""),
    "i64 below -2^63": message(sent_ms=-(1 << 63) - 1),
    "request id negative": TimeRequest(request_id=-1),
    "request id above 2^32-1": TimeRequest(request_id=1 << 32),
    "u16 port in an addr record": ListOk("", (ClientInfo(1, "", 65_536, "", 0),)),
    "int field given a str": SendRequest("2", "x"),  # type: ignore[arg-type]
    "int field given a float": TimeOk(1.5, 0, ""),  # type: ignore[arg-type]
    "str field given bytes": NickRequest(b"alice"),  # type: ignore[arg-type]
    "str field given None": NickRequest(None),  # type: ignore[arg-type]
    "str16 of 65536 bytes": NickRequest("a" * 65_536),
    "str16 of 65537 bytes in 2-byte chars": NickRequest("é" * 32_768 + "a"),
    "str16 inside a record": ListOk("", (ClientInfo(1, "", 1, "n" * 65_536, 0),)),
    "lone surrogate": NickRequest("\ud800"),
    "not an IP": welcome("localhost"),
    "IPv4 out of range": welcome("256.1.1.1"),
    "IPv6 malformed": welcome("fe80:::1"),
    "client list of tuples": ListOk("", ((1, "", 1, "", 0),)),  # type: ignore[arg-type]
    "client list not a sequence": ListOk("", None),  # type: ignore[arg-type]
    "IP in a record": ListOk("", (ClientInfo(1, "example.com", 1, "", 0),)),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_unencodable_messages_raise_local_protocol_error(case: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode(OUT_OF_RANGE[case])


def test_str16_of_exactly_65535_bytes_is_fine() -> None:
    assert len(encode(NickRequest("a" * 65_535))) == 14 + 2 + 65_535


def test_unregistered_class_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Unregistered(Frame):
        pass

    with pytest.raises(LocalProtocolError, match="not a registered message"):
        encode(Unregistered())


def test_subclass_of_a_registered_class_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class MyTime(TimeRequest):
        pass

    with pytest.raises(LocalProtocolError):
        encode(MyTime())


def test_non_message_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode("TIME")  # type: ignore[arg-type]


def test_local_errors_form_the_documented_tree() -> None:
    assert issubclass(LocalProtocolError, SwitchboardProtocolError)
    assert issubclass(LocalProtocolError, ValueError)
    assert issubclass(ProtocolError, SwitchboardProtocolError)
    assert not issubclass(ProtocolError, LocalProtocolError)


@pytest.mark.parametrize(
    ("ip", "packed"),
    [
        ("", b"\x00"),
        ("127.0.0.1", b"\x04\x7f\x00\x00\x01"),
        ("::1", b"\x06" + b"\x00" * 15 + b"\x01"),
        ("fe80::1%eth0", b"\x06\xfe\x80" + b"\x00" * 13 + b"\x01"),
    ],
)
def test_address_field_bytes(ip: str, packed: bytes) -> None:
    assert pack_address(ip) == packed


def test_error_names_for_known_and_unknown_codes() -> None:
    assert error_name(ErrorCode.RECIPIENT_BUSY) == "RECIPIENT_BUSY"
    assert error_name(9) == "RECIPIENT_BUSY"
    assert error_name(999) == "ERROR_999"


def test_closing_codes_are_the_documented_ones() -> None:
    closing = {code.name for code in ErrorCode if ProtocolError(code, "x").closes_connection}
    assert closing == {
        "BAD_FRAME",
        "UNSUPPORTED_VERSION",
        "FRAME_TOO_LARGE",
        "SERVER_FULL",
        "AUTH_REQUIRED",
        "AUTH_FAILED",
        "SHUTTING_DOWN",
        "IDLE_TIMEOUT",
    }
