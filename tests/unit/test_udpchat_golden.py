"""Golden vectors of the UDP chat datagrams: docs/PROTOCOL.md (Part 2) against the codec.

Each ``<!-- golden-udp: Name -->`` marker in PROTOCOL.md is followed by a fenced ``hex`` block;
encoding the datagram below must give exactly those bytes, and decoding them must give the
datagram back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchboard.services.udpchat.codec import (
    ALL_DATAGRAMS,
    Ack,
    Chat,
    ChatErrorCode,
    Datagram,
    Error,
    Join,
    Joined,
    Keepalive,
    Leave,
    Left,
    LeftReason,
    Relay,
    Shutdown,
    Welcome,
    decode,
    encode,
)

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
T = bytes.fromhex("8f3a5c01d2e4b697")

GOLDEN: dict[str, Datagram] = {
    "Join": Join(1, "alice"),
    "Leave": Leave(2, T),
    "Chat": Chat(1, T, "hi bob"),
    "Keepalive": Keepalive(3, T),
    "Welcome": Welcome(1, "alice", T, 2, 20_000),
    "Error": Error(1, ChatErrorCode.NICK_IN_USE, "the nickname 'alice' is in use", "alice"),
    "Ack": Ack(3),
    "Relay": Relay(1, "alice", 1_763_870_400_123, "hi bob"),
    "Joined": Joined(4, "carol", 1_763_870_400_000),
    "Left": Left(5, "carol", 1_763_870_460_000, LeftReason.TIMED_OUT),
    "Shutdown": Shutdown(6, 1_763_870_500_000),
}

_MARKER = re.compile(r"<!-- golden-udp: (\w+) -->\n(?:[^\n]*\n)*?```hex\n([0-9a-f \n]*)```")


def spec_vectors() -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for match in _MARKER.finditer(PROTOCOL_MD.read_text(encoding="utf-8")):
        name, block = match.group(1), match.group(2)
        assert name not in found, f"two golden-udp vectors for {name} in PROTOCOL.md"
        found[name] = bytes.fromhex("".join(block.split()))
    return found


def test_every_datagram_type_has_a_golden_vector() -> None:
    assert sorted(GOLDEN) == sorted(cls.__name__ for cls in ALL_DATAGRAMS)
    assert sorted(spec_vectors()) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vector_matches_the_codec(name: str) -> None:
    data = spec_vectors()[name]
    assert encode(GOLDEN[name]) == data
    assert decode(data) == GOLDEN[name]
