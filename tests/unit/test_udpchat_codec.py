"""The UDP chat datagram codec: round trips, byte layouts, validation, the fuzz invariant."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.services.udpchat.codec import (
    ALL_DATAGRAMS,
    HEADER_SIZE,
    MAX_DATAGRAM,
    Ack,
    Chat,
    ChatErrorCode,
    Datagram,
    DatagramError,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    LeftReason,
    LocalDatagramError,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
    nick_key,
    nick_problem,
    text_problem,
)

TOKEN = bytes.fromhex("0123456789abcdef")

SAMPLES: list[Datagram] = [
    Join(1, "alice"),
    Join(7, "👩\u200d💻 zoë"),
    Leave(3, TOKEN),
    Chat(1, TOKEN, "hello, 世界 👍🏽"),
    Chat(2, TOKEN, ""),
    Chat(0xFFFF_FFFF, TOKEN, "x" * 1200),
    Keepalive(4, TOKEN),
    Welcome(1, "alice", TOKEN, 3, 20_000),
    Welcome(2, "bob", TOKEN, 0, 0xFFFF_FFFF),
    Error(1, ChatErrorCode.NICK_IN_USE, "the nickname 'alice' is in use", "alice"),
    Error(9, ChatErrorCode.NOT_A_MEMBER, "not a member"),
    Ack(3),
    Relay(5, "bob", 1_763_870_400_123, "hi alice"),
    Joined(1, "carol", 1_763_870_400_000),
    Left(2, "carol", 1_763_870_460_000, LeftReason.TIMED_OUT),
    Shutdown(3, 1_763_870_500_000),
]


@pytest.mark.parametrize("datagram", SAMPLES, ids=lambda d: type(d).__name__)
def test_round_trip(datagram: Datagram) -> None:
    data = encode(datagram)
    assert len(data) <= MAX_DATAGRAM
    assert decode(data) == datagram


def test_every_type_is_sampled() -> None:
    assert {type(d) for d in SAMPLES} == set(ALL_DATAGRAMS)


def test_header_layout() -> None:
    data = encode(Chat(0x01020304, TOKEN, "hi"))
    assert data[:HEADER_SIZE] == b"SU\x01\x03\x01\x02\x03\x04\x08"
    assert data[HEADER_SIZE:] == TOKEN + b"hi"
    assert encode(Ack(1)) == b"SU\x01\x43\x00\x00\x00\x01\x00"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the header"),
        (b"SU\x01\x01\x00\x00\x00", "shorter than the header"),
        (b"XX\x01\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"SU\x02\x01\x00\x00\x00\x01\x00", "unsupported version 2"),
        (b"SU\x01\x99\x00\x00\x00\x01\x00", "unknown type 0x99"),
        (b"SU\x01\x01\x00\x00\x00\x01\x05ab", "identity runs past"),
        (b"SU\x01\x01\x00\x00\x00\x01\x02\xff\xfe", "nickname is not valid UTF-8"),
        (b"SU\x01\x01\x00\x00\x00\x01\x01ax", "JOIN padding is not zero bytes"),
        (b"SU\x01\x03\x00\x00\x00\x01\x03abchi", "3-byte token"),
        (b"SU\x01\x03\x00\x00\x00\x01\x08" + TOKEN + b"\xc3", "text is not valid UTF-8"),
        (b"SU\x01\x03\x00\x00\x00\x01\x08" + TOKEN + b"y" * 1201, "exceeds 1200"),
        (b"SU\x01\x43\x00\x00\x00\x01\x01a", "ACK carries no identity"),
        (b"SU\x01\x44\x00\x00\x00\x01\x01a\x00\x01", "shorter than its timestamp"),
        (b"SU\x01\x42\x00\x00\x00\x01\x00", "ERROR without a code"),
        (b"SU\x01\x41\x00\x00\x00\x01\x00" + TOKEN, "WELCOME payload of 8 bytes"),
        (b"SU\x01\x47\x00\x00\x00\x01\x01a" + bytes(8), "SHUTDOWN carries no identity"),
        (b"SU" + bytes(MAX_DATAGRAM), "longer than any datagram"),
    ],
)
def test_bad_datagrams(data: bytes, message: str) -> None:
    with pytest.raises(DatagramError, match=message):
        decode(data)


@pytest.mark.parametrize(
    "datagram",
    [
        Chat(1, TOKEN, "z" * 1201),
        Chat(-1, TOKEN, "x"),
        Chat(2**32, TOKEN, "x"),
        Leave(1, b"short"),
        Join(1, "n" * 256),
        Welcome(1, "a", TOKEN, 70000, 20_000),
        Welcome(1, "a", TOKEN, 1, 2**32),
        Welcome(1, "a", b"short", 1, 20_000),
        Error(1, 300, "x"),
    ],
)
def test_local_errors(datagram: Datagram) -> None:
    with pytest.raises(LocalDatagramError):
        encode(datagram)


def test_max_payload_is_configurable() -> None:
    data = encode(Chat(1, TOKEN, "abcd"), max_payload=4)
    with pytest.raises(DatagramError):
        decode(data, max_payload=3)
    with pytest.raises(LocalDatagramError):
        encode(Chat(1, TOKEN, "abcde"), max_payload=4)


@given(st.binary(max_size=1600))
def test_fuzz_invariant_random_bytes(data: bytes) -> None:
    """Whatever arrives: a datagram, or DatagramError; never anything else."""
    with contextlib.suppress(DatagramError):
        decode(data)


@given(st.sampled_from([encode(d) for d in SAMPLES]), st.data())
def test_fuzz_invariant_mutations(data: bytes, draw: st.DataObject) -> None:
    mutated = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        where = draw.draw(st.integers(0, len(mutated) - 1))
        mutated[where] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut])):
        try:
            decoded = decode(candidate)
        except DatagramError:
            continue
        assert encode(decoded) == candidate  # what decodes re-encodes to the same bytes


# --- nicknames and texts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nick", "problem"),
    [
        ("alice", None),
        ("Zoë👩", None),
        ("Zoë 👩\u200d💻", "invisible"),  # the TCP server's rules: no joiner, no space
        ("x" * 32, None),
        ("李", None),
        ("", "must not be empty"),
        ("x" * 33, "max 32"),
        ("   ", "whitespace"),
        ("\t", "whitespace"),
        (" alice", "whitespace"),
        ("a b", "whitespace"),
        ("bob\u3164", "invisible"),
        ("a|b", "'|'"),
        ("a\\b", "'|'"),
        ("a\x00b", "control characters"),
        ("bell\x07", "control characters"),
        ("esc\x1b[31m", "control characters"),
        ("line\u2028sep", "control characters"),
        ("del\x7f", "control characters"),
    ],
)
def test_nick_problem(nick: str, problem: str | None) -> None:
    found = nick_problem(nick)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_nick_key_is_case_and_normalisation_insensitive() -> None:
    assert nick_key("Alice") == nick_key("ALICE") == nick_key("alice")
    assert nick_key("Zoe\u0308") == nick_key("zoë")
    assert nick_key("bob") != nick_key("bób")


def test_text_problem() -> None:
    assert text_problem("hello\tworld 👍🏽") is None
    assert text_problem("x" * 1200) is None
    too_long = text_problem("é" * 601)  # 1202 bytes
    assert too_long is not None and "1202 bytes" in too_long and "1200" in too_long
    escape = text_problem("red \x1b[31m")
    assert escape is not None and "U+001B" in escape


def test_struct_sizes_match_the_spec() -> None:
    assert HEADER_SIZE == 9
    assert struct.calcsize("!Q") == 8
