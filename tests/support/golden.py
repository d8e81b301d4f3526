"""The golden vectors of docs/PROTOCOL.md (``<!-- golden: ClassName -->`` blocks), and their
export for the JavaScript codec's tests.

``spec_vectors()`` reads the frames from the specification; tests/unit/test_protocol_golden.py
holds them to its literals and to the Python codec.  ``javascript_golden()`` decodes each with
the Python codec and writes what it found, with the Python message tables, as JSON for
tests/js/protocol.test.mjs: so the JavaScript codec (src/switchboard/web/static/protocol.js)
is held to the same bytes, the same decoded fields and the same field layouts.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from switchboard.protocol import (
    ALL_MESSAGES,
    CLOSING_CODES,
    ErrorCode,
    FrameDecoder,
    MessageClass,
    MessageType,
    wire,
)
from switchboard.protocol.messages import RecordListKind, _field_kinds

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"

#: A marker, any lines of prose that are neither a fence nor another marker, then the block.
_MARKER = re.compile(
    r"^<!-- golden: (\w+) -->\n(?:(?!```|<!--).*\n)*?```hex\n([0-9a-fA-F \n]*)```$", re.MULTILINE
)

#: Kinds whose values JSON cannot carry exactly as numbers: exported as decimal strings.
_WIDE = {wire.U64.name, wire.I64.name}


def parse_hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def spec_vectors() -> dict[str, bytes]:
    """Every golden block in docs/PROTOCOL.md: class name -> frame bytes."""
    found: dict[str, bytes] = {}
    for match in _MARKER.finditer(PROTOCOL_MD.read_text(encoding="utf-8")):
        name, block = match.group(1), match.group(2)
        assert name not in found, f"two golden vectors for {name} in PROTOCOL.md"
        found[name] = parse_hex(block)
    return found


def _kind_name(kind: wire.FieldKind) -> str:
    if isinstance(kind, RecordListKind):
        return "list:" + kind.record.__name__
    return kind.name


def _layout(cls: type) -> list[list[str]]:
    return [[name, _kind_name(kind)] for name, kind in _field_kinds(cls)]


def _values(obj: Any) -> dict[str, Any]:
    kinds = dict(_field_kinds(type(obj)))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name == "request_id":
            continue
        value, kind = getattr(obj, f.name), kinds[f.name]
        if isinstance(kind, RecordListKind):
            out[f.name] = [_values(item) for item in value]
        elif kind.name in _WIDE:
            out[f.name] = str(value)
        else:
            out[f.name] = int(value) if isinstance(value, int) else value
    return out


def javascript_golden() -> dict[str, Any]:
    """The JSON document tests/js/protocol.test.mjs reads (its ``GOLDEN_JSON``)."""
    vectors = []
    for name, frame in sorted(spec_vectors().items()):
        decoder = FrameDecoder()
        decoder.feed(frame)
        (msg,) = list(decoder)
        assert type(msg).__name__ == name, (name, msg)
        vectors.append(
            {
                "kind": name,
                "hex": frame.hex(),
                "message": {"kind": name, "request_id": msg.request_id, **_values(msg)},
            }
        )
    records = {
        kind.record.__name__: {"min_size": kind.min_size, "fields": _layout(kind.record)}
        for cls in ALL_MESSAGES
        for _, kind in _field_kinds(cls)
        if isinstance(kind, RecordListKind)
    }
    return {
        "vectors": vectors,
        "messages": {
            cls.__name__: {
                "cls": int(cls.MESSAGE_CLASS),
                "type": int(cls.MESSAGE_TYPE),
                "answers": None if cls.ANSWERS is None else int(cls.ANSWERS),
                "fields": _layout(cls),
            }
            for cls in ALL_MESSAGES
        },
        "records": records,
        "message_classes": {c.name: int(c) for c in MessageClass},
        "message_types": {t.name: int(t) for t in MessageType},
        "error_codes": {c.name: int(c) for c in ErrorCode},
        "closing_codes": sorted(int(c) for c in CLOSING_CODES),
        "header_size": wire.HEADER_SIZE,
        "magic": wire.MAGIC,
        "version": wire.VERSION,
        "default_max_frame": wire.DEFAULT_MAX_FRAME,
    }
