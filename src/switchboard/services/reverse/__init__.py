"""The string-reversal service: ``core`` (pure), ``server`` (asyncio), ``client`` (blocking;
it reports answers to callbacks and returns how the session ended: ``cli.reverse`` prints)."""

from .core import (
    BYE,
    ERROR_PREFIX,
    ESC,
    GOODBYE,
    LineSplitter,
    LineTooLong,
    Reply,
    SplitterClosedError,
    answer_line,
    is_goodbye,
    reverse_graphemes,
)

__all__ = [
    "BYE",
    "ERROR_PREFIX",
    "ESC",
    "GOODBYE",
    "LineSplitter",
    "LineTooLong",
    "Reply",
    "SplitterClosedError",
    "answer_line",
    "is_goodbye",
    "reverse_graphemes",
]
