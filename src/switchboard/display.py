"""``safe``: what a peer chose, made harmless for a terminal.

Every command that prints a string a peer or a server chose (message texts, nicknames, room
names, reasons, zone names) passes it through ``safe`` first: the TCP commands (``listen``,
``chat``, ``client``, ``list``) and the UDP chat client alike.
"""

from __future__ import annotations

import json
from typing import Final

#: C0 and C1 control characters and DEL: a peer's text must not move the cursor, clear the
#: screen or split one message into several lines.
_ESCAPES: Final = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})
#: Bidirectional controls (embeddings, overrides, isolates, marks): a right-to-left override
#: in a message would reverse the rest of the line on screen, so "gpj.exe" could pass for
#: "exe.jpg" and a text could appear to come from someone else.  Line and paragraph
#: separators would break the line like a newline.  Unpaired surrogates (only a
#: surrogateescape decoding makes them) cannot be printed at all.
_ESCAPES.update(
    {
        c: f"\\u{c:04x}"
        for c in [
            0x061C,
            0x200E,
            0x200F,
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
            0x2028,
            0x2029,
            *range(0xD800, 0xE000),
        ]
    }
)
_TABLE: Final = str.maketrans(_ESCAPES)


def safe(text: str) -> str:
    """``text`` with control characters, bidi controls and line separators escaped (``\\x1b``,
    ``\\u202e``): one message stays one harmless line that reads left to right as sent.
    Joiners and variation selectors stay, so emoji sequences still show."""
    return text.translate(_TABLE)


#: What ``safe`` escapes beyond ASCII, as JSON escapes: JSON has already escaped the C0 controls
#: (``\u001b``), and these are legal JSON escapes for the rest (a surrogate as ``\udc80``).
_JSON_TABLE: Final = str.maketrans(
    {c: f"\\u{c:04x}" for c in _ESCAPES if c >= 0x80}  # C1, bidi, separators, surrogates
)


def safe_json(obj: object) -> str:
    """``obj`` as one line of JSON whose strings carry no character ``safe`` would escape:
    those are written as JSON escapes, so any JSON reader decodes the very text a peer sent
    while a person watching the lines sees no override reverse them.  Other text stays
    readable (``你好``, emoji)."""
    return json.dumps(obj, ensure_ascii=False).translate(_JSON_TABLE)
