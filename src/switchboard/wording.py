"""Small words shared by the server's log and the clients' messages: counts with their noun
in the right number (``1 client``, ``2 clients``)."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural unless the count is exactly one."""
    word = noun if count == 1 else (plural_noun or f"{noun}s")
    return f"{count} {word}"


__all__ = ["plural"]
