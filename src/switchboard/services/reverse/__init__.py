"""The string-reversal service: ``core`` (pure), ``server`` (asyncio), ``client`` (blocking)."""

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
