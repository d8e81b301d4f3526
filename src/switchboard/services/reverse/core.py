"""The reversal service without I/O: split bytes into lines, decide each line's answer.

The wire format is lines of UTF-8 ending in ``\\n`` (a ``\\r`` before it is dropped).  Every
line is answered with one line:

* ``bye`` (surrounding whitespace ignored) or any line containing ESC (0x1b): ``Goodbye!``,
  and the session ends;
* a line that is not valid UTF-8: ``ERROR: invalid UTF-8 at byte N``; the session goes on;
* any other line: the line reversed by extended grapheme cluster (Unicode UAX #29), so that
  ``"你好👍🏽e\\u0301"`` becomes ``"e\\u0301👍🏽好你"`` with skin tones, ZWJ sequences, flags and
  combining accents intact.

A line longer than the limit is answered ``ERROR: line longer than N bytes ...`` and the
session ends: the splitter refuses further input, because where the next line starts is
unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import regex

from switchboard.defaults import REVERSE_MAX_LINE

#: The line that ends a session, and the byte that ends it wherever it appears in a line
#: (the lab's client sent ESC when the user pressed Escape).
BYE: Final = b"bye"
ESC: Final = b"\x1b"
GOODBYE: Final = "Goodbye!"
#: Every error line starts with this, so a script can tell answers from errors.
ERROR_PREFIX: Final = "ERROR: "

_GRAPHEME: Final = regex.compile(r"\X")
#: Characters segmented per call of ``_GRAPHEME.findall`` (see ``grapheme_clusters``).
SEGMENT_WINDOW: Final = 128


class SplitterClosedError(Exception):
    """Local misuse: input was fed after the splitter reported a line too long."""


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """The peer sent more than ``limit`` bytes without a newline; the session must end."""

    limit: int

    @property
    def reply(self) -> Reply:
        return Reply(
            f"{ERROR_PREFIX}line longer than {self.limit} bytes; closing the connection",
            close=True,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer line (without its newline) and whether the session ends after it."""

    text: str
    close: bool = False

    def encode(self) -> bytes:
        return self.text.encode("utf-8", "surrogateescape") + b"\n"


class LineSplitter:
    """Incremental splitter: ``feed(bytes)`` returns the complete lines it made.

    Each line comes back as ``bytes`` without its ``\\n`` (nor a ``\\r`` before it).  A line
    longer than ``max_line`` bytes comes back as ``LineTooLong``, detected as soon as the
    buffer proves it (without waiting for the newline), after which the splitter is closed.
    The buffer never holds more than ``max_line + 1`` bytes of an unfinished line.
    """

    __slots__ = ("_buffer", "_closed", "_scanned", "max_line")

    def __init__(self, max_line: int = REVERSE_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to hold no newline
        self._closed = False

    @property
    def pending(self) -> int:
        """Bytes held of a line not finished yet."""
        return len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        if self._closed:
            raise SplitterClosedError("the splitter was closed by a line too long")
        buffer = self._buffer
        buffer += data
        out: list[bytes | LineTooLong] = []
        start = 0
        limit = self.max_line
        while True:
            newline = buffer.find(b"\n", max(start, self._scanned))
            if newline < 0:
                break
            end = newline - 1 if newline > start and buffer[newline - 1] == 0x0D else newline
            if end - start > limit:
                return self._overflow(out)
            out.append(bytes(buffer[start:end]))
            start = newline + 1
            self._scanned = start
        if start:
            del buffer[:start]
        self._scanned = len(buffer)
        # One byte of slack: a full-length line may be waiting for the "\n" after its "\r".
        if len(buffer) > limit + 1 or (len(buffer) == limit + 1 and buffer[-1] != 0x0D):
            return self._overflow(out)
        return out

    def finish(self) -> bytes | None:
        """At end of input: the unterminated last line, or None when there is none."""
        if self._closed or not self._buffer:
            return None
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        return rest

    def _overflow(self, out: list[bytes | LineTooLong]) -> list[bytes | LineTooLong]:
        self._closed = True
        self._buffer = bytearray()
        self._scanned = 0
        out.append(LineTooLong(self.max_line))
        return out


def grapheme_clusters(text: str, window: int = SEGMENT_WINDOW) -> list[str]:
    """``text`` split into extended grapheme clusters (UAX #29), in time linear in its length.

    ``regex``'s ``\\X`` alone is quadratic on a run of regional indicators (flag halves):
    to apply rules GB12/GB13 it counts, at every boundary, all the indicators before it back
    to the start of the string (``pos`` does not bound that walk), so 16,000 of them cost
    0.8 s.  Here it runs on slices of ``window`` characters instead.  Each slice starts on a
    true boundary, where the rules that look back (GB9c, GB11, GB12/13) restart as they would
    in the whole text, and the slice's last cluster, which may go on past the slice, is
    segmented again at the start of the next one; a cluster longer than the window (a letter
    under hundreds of accents) widens the window until it fits.
    """
    out: list[str] = []
    start, size, end_of_text = 0, window, len(text)
    while start < end_of_text:
        end = start + size
        found: list[str] = _GRAPHEME.findall(text[start:end])
        if end >= end_of_text:
            out += found
            break
        if len(found) < 2:
            size *= 2
            continue
        last = found.pop()
        out += found
        start = end - len(last)
        size = window
    return out


def reverse_graphemes(text: str) -> str:
    """``text`` reversed by extended grapheme cluster rather than by code point."""
    if text.isascii() and "\r\n" not in text:
        # In ASCII every code point is a cluster of its own, except "\r\n".
        return text[::-1]
    return "".join(reversed(grapheme_clusters(text)))


def is_goodbye(line: bytes) -> bool:
    """Whether ``line`` ends the session: ``bye`` or anything containing ESC."""
    return ESC in line or line.strip() == BYE


def answer_line(line: bytes) -> Reply:
    """The reply to one complete line (given without its newline)."""
    if is_goodbye(line):
        return Reply(GOODBYE, close=True)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reply(f"{ERROR_PREFIX}invalid UTF-8 at byte {exc.start}")
    return Reply(reverse_graphemes(text))


def idle_reply(timeout_s: float) -> Reply:
    return Reply(f"{ERROR_PREFIX}idle for {timeout_s:g} s; closing the connection", close=True)


SERVER_FULL: Final = Reply(f"{ERROR_PREFIX}server full; try again later", close=True)
SHUTTING_DOWN: Final = Reply(f"{ERROR_PREFIX}server shutting down", close=True)
#: The lines a connection is turned away with before its session starts.
REFUSALS: Final = frozenset({SERVER_FULL.text, SHUTTING_DOWN.text})
