"""Peer-chosen text made harmless for a terminal: the one escaping policy of every command.

A nickname, a room name, a message text, a reason or a server name is chosen by the other
end.  Printed raw, it could clear the screen or recolour it (ANSI escape sequences), split
one line into several (newlines, line separators), or reverse the rest of a line (bidi
overrides: "gpj.exe" passing for "exe.jpg").  ``UNSAFE`` is that set of code points, named
once; two renderings escape it:

* ``safe(text)``: for people (every CLI line, the server's log lines): each unsafe code
  point becomes ``\\x1b``, ``\\n``, ``\\u202e``, ...; everything else stays, so emoji
  sequences with joiners still show.
* ``json_quoted(text)``: for ``--trace``, which shows exactly which code points a peer sent:
  a JSON string literal with every unsafe code point escaped, and every other one that is
  not printable (joiners, tag characters, ...) too.
* ``json_line(value)``: for ``--json``: one line of JSON whose strings hold every unsafe code
  point as a ``\\u`` escape, so a program reads exactly what the peer sent and a terminal
  shows it harmlessly (``json.dumps`` leaves DEL, C1 controls, bidi controls, line
  separators and lone surrogates raw).

Rich markup (``[bold]``) is not a terminal's business: the CLI prints peers' strings as
``rich.text.Text`` or through a console made with ``markup=False``, never as markup.

Pure functions, no imports from the rest of Switchboard: ``protocol.trace`` uses them too.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: C0 and C1 control characters and DEL: a peer's text must not move the cursor, clear the
#: screen or split one message into several lines.
CONTROLS: Final = frozenset([*range(0x20), *range(0x7F, 0xA0)])
#: Bidirectional controls (embeddings, overrides, isolates, marks): a right-to-left override
#: in a message would reverse the rest of the line on screen, so "gpj.exe" could pass for
#: "exe.jpg" and a text could appear to come from someone else.
BIDI_CONTROLS: Final = frozenset(
    [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
#: Line and paragraph separators would break the line like a newline.
LINE_SEPARATORS: Final = frozenset([0x2028, 0x2029])
#: Unpaired surrogates (only a surrogateescape decoding makes them) cannot be printed at all.
SURROGATES: Final = frozenset(range(0xD800, 0xE000))
#: Every code point that never reaches a terminal as it is.
UNSAFE: Final = CONTROLS | BIDI_CONTROLS | LINE_SEPARATORS | SURROGATES

_SHORT: Final = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def escaped(code: int) -> str:
    """How ``safe`` writes one unsafe code point: ``\\n``, ``\\x1b``, ``\\u202e``."""
    if code in _SHORT:
        return _SHORT[code]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_TABLE: Final = str.maketrans({code: escaped(code) for code in UNSAFE})


def safe(text: str) -> str:
    """``text`` with control characters, bidi controls, line separators and lone surrogates
    escaped (``\\x1b``, ``\\u202e``): one message stays one harmless line that reads left to
    right as sent.  Joiners and variation selectors stay, so emoji sequences still show."""
    return text.translate(_TABLE)


#: What ``json.dumps(..., ensure_ascii=False)`` leaves raw of ``UNSAFE`` (it escapes C0),
#: as JSON escapes.
_JSON_TABLE: Final = str.maketrans({code: f"\\u{code:04x}" for code in UNSAFE if code >= 0x20})


def json_line(value: Any) -> str:
    """``value`` as one line of JSON, every ``UNSAFE`` code point in it escaped."""
    return json.dumps(value, ensure_ascii=False).translate(_JSON_TABLE)


def json_quoted(text: str) -> str:
    """``text`` as a JSON string literal in which every ``UNSAFE`` code point, and every
    other one that is not printable, is a ``\\u`` escape (``\\U`` beyond the BMP)."""
    quoted = json.dumps(text, ensure_ascii=False)
    if quoted.isprintable():
        return quoted  # the common case: nothing to look at twice
    return "".join(_code_point(c) if ord(c) in UNSAFE or not c.isprintable() else c for c in quoted)


def _code_point(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


__all__ = ["UNSAFE", "escaped", "json_line", "json_quoted", "safe"]
