"""Hypothesis strategies for every Switchboard protocol message, reusable by any test.

``message_strategy(cls)`` builds any registered message class with every field drawn over its
whole wire range; ``any_message()`` picks a class first.  Text fields mix hypothesis' own
Unicode with hand-picked hard cases (Chinese, emoji with skin tones and ZWJ sequences,
combining marks, the empty string) and, now and then, a field of the maximum length its kind
can carry.  Strategies are derived from the field kinds in ``switchboard.protocol.wire``, so
a message added to ``messages.py`` is covered without touching this module.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing
from typing import Any

from hypothesis import strategies as st

from switchboard.protocol import ALL_MESSAGES, ClientInfo, Frame, encode, wire
from switchboard.protocol.messages import IdListKind, RecordListKind

U8_MAX = 0xFF
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

#: Text that has broken real chat software: wide scripts, multi-code-point emoji, combining
#: marks, right-to-left text, NUL and other control characters (legal on the wire).
HARD_TEXTS: tuple[str, ...] = (
    "",
    "a",
    "你好，世界",
    "👍🏽",  # thumbs up + skin tone modifier
    "👩🏾‍💻",  # woman + skin tone + ZWJ + laptop
    "👨‍👩‍👧‍👦",  # family: four people joined by ZWJ
    "🏳️‍🌈",  # flag + variation selector + ZWJ + rainbow
    "e\u0301\u0302\u0303",  # e with three combining marks
    "Z\u0351\u0352\u0353\u0354a\u0355\u0356lgo",
    "שלום עולם",
    "\x00\x01\x7f\n\t",
    "\U0010ffff\ufeff\u200b",
)

#: Exactly 65,535 bytes of UTF-8, the longest a str16 can carry, in 1-, 2-, 3- and 4-byte
#: characters.
MAX_STR16_TEXTS: tuple[str, ...] = (
    "a" * U16_MAX,
    "é" * (U16_MAX // 2) + "a",
    "你" * (U16_MAX // 3),
    "😀" * (U16_MAX // 4) + "abc",
)

utf8_chars = st.characters(codec="utf-8")


def texts(max_chars: int = 64) -> st.SearchStrategy[str]:
    """Short text: random Unicode and the hard cases above, alone or glued together."""
    return st.one_of(
        st.text(utf8_chars, max_size=max_chars),
        st.sampled_from(HARD_TEXTS),
        st.lists(st.sampled_from(HARD_TEXTS), max_size=4).map("".join),
    )


def str16_values() -> st.SearchStrategy[str]:
    """Anything a str16 can carry, now and then its maximum length."""
    return st.one_of(texts(), st.sampled_from(MAX_STR16_TEXTS))


def str32_values() -> st.SearchStrategy[str]:
    """Anything a str32 can carry; longer than a str16 can, now and then."""
    return st.one_of(
        texts(200),
        st.sampled_from(MAX_STR16_TEXTS),
        st.just("x" * (U16_MAX + 1)),
        st.just("😀" * 20_000),
    )


def addresses() -> st.SearchStrategy[str]:
    """Textual IP addresses as the decoder returns them: "", IPv4, IPv6 (canonical form)."""
    return st.one_of(
        st.just(""),
        st.sampled_from(
            ["127.0.0.1", "0.0.0.0", "255.255.255.255", "::", "::1", "fe80::1", "::ffff:7f00:1"]
        ).map(lambda text: str(ipaddress.ip_address(text))),
        st.ip_addresses().map(str),
    )


_INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, U8_MAX),
    "u16": (0, U16_MAX),
    "u32": (0, U32_MAX),
    "u64": (0, U64_MAX),
    "i32": (I32_MIN, I32_MAX),
    "i64": (I64_MIN, I64_MAX),
}


def client_infos() -> st.SearchStrategy[ClientInfo]:
    return record_strategy(ClientInfo)  # type: ignore[return-value]


def field_strategy(kind: wire.FieldKind) -> st.SearchStrategy[Any]:
    """Values covering the whole range of one wire field kind."""
    if kind.name in _INT_RANGES:
        lo, hi = _INT_RANGES[kind.name]
        return st.integers(lo, hi)
    if kind is wire.STR16:
        return str16_values()
    if kind is wire.STR32:
        return str32_values()
    if kind is wire.ADDR:
        return addresses()
    if isinstance(kind, RecordListKind):
        return st.lists(record_strategy(kind.record), max_size=8).map(tuple)
    if isinstance(kind, IdListKind):
        return st.lists(st.integers(0, U64_MAX), max_size=8).map(tuple)
    raise TypeError(f"no strategy for field kind {kind.name!r}")


def payload_fields(cls: type) -> list[tuple[str, wire.FieldKind]]:
    """(name, kind) of each payload field of a message or record class, in wire order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return [
        (f.name, hints[f.name].__metadata__[0])
        for f in dataclasses.fields(cls)
        if f.name != "request_id"
    ]


def record_strategy(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{name: field_strategy(kind) for name, kind in payload_fields(cls)})


request_ids = st.integers(0, U32_MAX)


def message_strategy(cls: type[Frame]) -> st.SearchStrategy[Frame]:
    """Any instance of the message class ``cls``, request id included."""
    fields = {name: field_strategy(kind) for name, kind in payload_fields(cls)}
    return st.builds(cls, request_id=request_ids, **fields)


def any_message() -> st.SearchStrategy[Frame]:
    """An instance of any registered message class."""
    return st.sampled_from(ALL_MESSAGES).flatmap(message_strategy)


def small_messages() -> st.SearchStrategy[Frame]:
    """Messages without the maximum-length fields: cheap enough for long streams."""

    def small(cls: type[Frame]) -> st.SearchStrategy[Frame]:
        fields: dict[str, st.SearchStrategy[Any]] = {}
        for name, kind in payload_fields(cls):
            if kind is wire.STR16 or kind is wire.STR32:
                fields[name] = texts(16)
            elif isinstance(kind, RecordListKind):
                fields[name] = st.lists(record_strategy(kind.record), max_size=3).map(tuple)
            else:
                fields[name] = field_strategy(kind)
        return st.builds(cls, request_id=request_ids, **fields)

    return st.sampled_from(ALL_MESSAGES).flatmap(small)


def frame_streams(max_frames: int = 20) -> st.SearchStrategy[tuple[list[Frame], bytes]]:
    """A list of small messages and the byte stream that carries them, back to back."""
    return st.lists(small_messages(), max_size=max_frames).map(
        lambda msgs: (msgs, b"".join(encode(m) for m in msgs))
    )
