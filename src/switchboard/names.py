"""Nicknames and room names: one set of rules for the TCP server and the UDP chat room.

A name is taken as its NFC form (``normalise``): "josé" typed with a combining accent and
"josé" typed precomposed are one name, shown the same way.  It is then checked
(``name_problem``): 1 to ``limit`` characters, each a letter, mark, number, punctuation or
symbol (no whitespace, no control or format character, nothing unassigned or private), none
of them default-ignorable (U+034F, U+FE0F, U+3164, U+115F, U+200D... render as nothing, so
"bob" + U+3164 would pass for "bob") and none of the symbols that render blank (U+2800).

Two names are one name when they are equal after case folding **or** look alike: they are
compared by the confusable skeleton of Unicode TS #39 (ICU's SpoofChecker, the standard's
reference implementation and its confusables data), computed both of the case-folded name
and, case-folded again, of the name's own skeleton: "аlice" (Cyrillic а),
"ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞" and "AIice" (capital I) all collide with "alice".
``NameIndex`` keeps values under those keys.
"""

from __future__ import annotations

import unicodedata
from typing import Final, Generic, TypeVar

import icu
import regex

#: Letters, marks, numbers, punctuation and symbols, matched with fullmatch ("$" would let a
#: trailing newline through).
_VISIBLE_KINDS: Final = regex.compile(r"[\p{L}\p{M}\p{N}\p{P}\p{S}]+")
#: Code points that render as nothing: Unicode's Default_Ignorable_Code_Point (joiners,
#: variation selectors, the Hangul fillers, bidi controls, soft hyphen, ...) and the two
#: symbols that are not in that property but draw a blank cell (BRAILLE PATTERN BLANK,
#: MUSICAL SYMBOL NULL NOTEHEAD).
_INVISIBLE: Final = regex.compile(r"[\p{Default_Ignorable_Code_Point}\u2800\U0001D159]")
#: The TS #39 skeleton; ICU documents getSkeleton as safe to call from several threads.
_SPOOF_CHECKER: Final = icu.SpoofChecker()


def normalise(name: str) -> str:
    """The form a name is kept, compared and shown in: NFC."""
    return unicodedata.normalize("NFC", name)


def name_problem(name: str, *, what: str, limit: int) -> str | None:
    """Why ``name`` (already ``normalise``d) is refused as a ``what``, or None if it is not."""
    if not name:
        return f"{what} must not be empty"
    if len(name) > limit:
        return f"{what} is {len(name)} characters long (max {limit})"
    invisible = _INVISIBLE.search(name)
    if invisible is not None:
        code = ord(invisible.group())
        return f"{what} must not contain invisible characters (U+{code:04X})"
    if not _VISIBLE_KINDS.fullmatch(name):
        return f"{what} must not contain whitespace or control characters"
    if unicodedata.category(name[0]).startswith("M"):
        return f"{what} must not start with a combining mark"
    return None


def skeleton(text: str) -> str:
    """The TS #39 confusable skeleton of ``text``: equal skeletons look alike."""
    result: str = _SPOOF_CHECKER.getSkeleton(0, text)
    return result


def name_keys(name: str) -> tuple[str, ...]:
    """The keys under which ``name`` must be unique: the skeleton of its case fold and,
    when different, the skeleton of its skeleton's case fold.  The second catches "AIice"
    (capital I) against "alice": case folding first would turn that I into an i, while the
    skeleton first turns it into the l it looks like."""
    name = normalise(name)
    folded = skeleton(name.casefold())
    written = skeleton(skeleton(name).casefold())
    return (folded,) if written == folded else (folded, written)


V = TypeVar("V")


class NameIndex(Generic[V]):
    """Values by name, where look-alike names (``name_keys``) are one name.  Names longer
    than ``max_chars`` (in NFC) are never held, so ``find`` answers them without computing a
    skeleton: a 64 KB room name in a LIST costs a normalisation, not 10 ms of ICU."""

    __slots__ = ("_by_key", "max_chars")

    def __init__(self, max_chars: int) -> None:
        self._by_key: dict[str, V] = {}
        self.max_chars = max_chars

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, name: str) -> V | None:
        """The value held under ``name`` or any name that looks like it."""
        name = normalise(name)
        if len(name) > self.max_chars:
            return None
        for key in name_keys(name):
            value = self._by_key.get(key)
            if value is not None:
                return value
        return None

    def add(self, name: str, value: V) -> None:
        for key in name_keys(name):
            self._by_key[key] = value

    def remove(self, name: str, value: V) -> None:
        """Forget ``name`` if it is held by ``value`` (not by someone else since)."""
        for key in name_keys(name):
            if self._by_key.get(key) is value:
                del self._by_key[key]
