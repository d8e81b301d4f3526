"""The interactive client's menu and commands, without a terminal: what a typed line means.

The lab's seven options, which of them a person may choose in which state, the typed
commands that do the same (``connect 127.0.0.1 7000``, ``time 100``, ``send 3 hello``), and
the words offered for completion.  ``parse_command`` turns one line into an ``Action`` or
raises ``CommandError`` with a sentence for the user; the shell in ``interactive.py`` runs
the action.  Missing arguments are ``None``: the shell asks for them (a menu number always
asks, a typed command asks only for what it cannot default).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from . import render

#: Pipelined TIME requests one ``time`` may send.  The lab's test is 100; 10,000 stays well
#: inside the server's default burst allowance (20,000), so it is never rate limited.
MAX_TIME_REQUESTS: Final = 10_000
#: The counts offered when completing ``time``: one, and the lab's test.
SUGGESTED_TIME_COUNTS: Final = ("1", "100")
#: Client ids are u32 on the wire, and 0 is never assigned.
MAX_CLIENT_ID: Final = 2**32 - 1


class CommandError(ValueError):
    """A line (or an answer to a question) that cannot be used; the message says why."""


# --- actions: what the user asked for ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect to ``host``:``port``; None: ask (menu) or use the default (typed)."""

    host: str | None = None
    port: int | None = None
    ask: bool = False


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


@dataclass(frozen=True, slots=True)
class GetTime:
    """``count`` pipelined TIME requests; None: ask how many."""

    count: int | None = None


@dataclass(frozen=True, slots=True)
class GetName:
    pass


@dataclass(frozen=True, slots=True)
class ListClients:
    pass


@dataclass(frozen=True, slots=True)
class ListRooms:
    pass


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send ``text`` to ``target``, a client id (int) or a nickname (str); None: ask."""

    target: int | str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Exit:
    pass


@dataclass(frozen=True, slots=True)
class ShowHelp:
    pass


@dataclass(frozen=True, slots=True)
class ShowMenu:
    pass


Action = (
    Connect
    | Disconnect
    | GetTime
    | GetName
    | ListClients
    | ListRooms
    | SendMessage
    | Exit
    | ShowHelp
    | ShowMenu
)


# --- the menu ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One numbered menu entry and the typed command that does the same."""

    number: int
    word: str
    label: str
    usage: str
    summary: str
    needs_connection: bool


OPTIONS: Final[tuple[Option, ...]] = (
    Option(1, "connect", "Connect", "connect [HOST] [PORT]", "connect to a server", False),
    Option(2, "disconnect", "Disconnect", "disconnect", "close the connection", True),
    Option(3, "time", "Get server time", "time [N]", "ask the time, N requests pipelined", True),
    Option(4, "name", "Get server name", "name", "ask the server's name", True),
    Option(5, "list", "List clients", "list", "list the connected clients", True),
    Option(6, "send", "Send message", "send TO TEXT", "send TEXT to a client id or nickname", True),
    Option(7, "quit", "Exit", "quit", "disconnect and leave", False),
    # After the lab's seven, which keep their numbers.
    Option(8, "rooms", "List rooms", "rooms", "list the rooms and who is in how many", True),
)
_BY_NUMBER: Final = {o.number: o for o in OPTIONS}
_BY_WORD: Final = {o.word: o for o in OPTIONS}
#: Other spellings people reach for.
ALIASES: Final = {"exit": "quit", "q": "quit", "?": "help", "menu": "help", "ls": "list"}
EXTRA_WORDS: Final = ("help",)


def available(connected: bool) -> tuple[Option, ...]:
    """The options that can be chosen now: only connect and exit while not connected."""
    return tuple(o for o in OPTIONS if connected or not o.needs_connection)


def menu_lines(connected: bool) -> list[str]:
    return [f"{o.number}. {o.label}" for o in available(connected)]


def help_lines(connected: bool) -> list[str]:
    """The typed commands available now, each with what it does."""
    rows = [(o.usage, f"{o.summary} (or {o.number})") for o in available(connected)]
    rows.append(("help", "show this list; an empty line shows the menu"))
    width = max(len(usage) for usage, _ in rows)
    return [f"{usage.ljust(width)}  {summary}" for usage, summary in rows]


def completions(connected: bool, known_ids: Iterable[int] = ()) -> dict[str, object]:
    """Words to complete, nested as prompt_toolkit's NestedCompleter takes them."""
    words: dict[str, object] = {}
    for o in available(connected):
        words[o.word] = None
    if connected:
        words["time"] = dict.fromkeys(SUGGESTED_TIME_COUNTS)
        words["send"] = dict.fromkeys(str(i) for i in sorted(set(known_ids))) or None
    words["help"] = None
    if "quit" in words:
        words["exit"] = None
    return words


# --- parsing -------------------------------------------------------------------------------


def parse_command(line: str, connected: bool) -> Action:
    """What ``line`` asks for, given the connection state; CommandError if it cannot be done."""
    text = require_utf8(line).strip()
    if not text:
        return ShowMenu()
    head, _, rest = text.partition(" ")
    rest = rest.strip()
    word = head.lower()
    from_menu = word.isdigit()
    if from_menu:
        option = _BY_NUMBER.get(int(word))
        if option is None:
            numbers = ", ".join(str(o.number) for o in available(connected))
            raise CommandError(f"There is no option {word}: choose {numbers}.")
    else:
        word = ALIASES.get(word, word)
        if word == "help":
            _no_arguments("help", rest)
            return ShowHelp()
        option = _BY_WORD.get(word)
        if option is None:
            raise CommandError(_unknown(head, connected))
    if option.needs_connection and not connected:
        raise CommandError("Not connected: choose 1 (connect) first.")
    return _parse_option(option, rest, from_menu)


def _parse_option(option: Option, rest: str, from_menu: bool) -> Action:
    word = option.word
    if word == "connect":
        args = rest.split()
        if not args:
            return Connect(ask=from_menu)
        if len(args) > 2:
            raise CommandError(f"Usage: {option.usage}")
        host, port = parse_address(args[0])
        if len(args) == 2:
            if port is not None:
                raise CommandError(f"Usage: {option.usage}")
            port = parse_port(args[1])
        return Connect(host, port)
    if word == "time":
        if not rest:
            return GetTime(None if from_menu else 1)
        return GetTime(parse_count(rest))
    if word == "send":
        if not rest:
            return SendMessage()
        head, _, text = rest.partition(" ")
        return SendMessage(parse_recipient(head), text.strip() or None)
    _no_arguments(word, rest)
    if word == "disconnect":
        return Disconnect()
    if word == "name":
        return GetName()
    if word == "list":
        return ListClients()
    if word == "rooms":
        return ListRooms()
    return Exit()


def _no_arguments(word: str, rest: str) -> None:
    if rest:
        raise CommandError(f"'{word}' takes no arguments.")


def _unknown(head: str, connected: bool) -> str:
    words = [o.word for o in available(connected)] + list(EXTRA_WORDS)
    close = difflib.get_close_matches(head.lower(), words, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"Unknown command '{head}': {hint}Type help for the commands, or a number."


def parse_address(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port`` (a bare IPv6 address has no port)."""
    text = text.strip()
    if not text:
        raise CommandError("The server address is empty.")
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep or not host:
            raise CommandError(f"'{text}' is not an address: a closing ']' is missing.")
        if not tail:
            return parse_host(host), None
        if not tail.startswith(":"):
            raise CommandError(f"'{text}' is not an address: expected ':PORT' after ']'.")
        return parse_host(host), parse_port(tail[1:])
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not host:
            raise CommandError(f"'{text}' has no host before the ':'.")
        return parse_host(host), parse_port(port)
    return parse_host(text), None


def parse_port(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CommandError(f"'{text}' is not a port number (1-65535).")
    return int(text)


def parse_count(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_TIME_REQUESTS:
        raise CommandError(f"'{text}' is not a number of requests (1-{MAX_TIME_REQUESTS:,}).")
    return int(text)


def parse_target(text: str, *, see: str = "'list'") -> int:
    """A client id as typed: ``3`` or ``#3``; ``see`` names the command that lists them."""
    text = text.strip().removeprefix("#")
    if not text.isdigit() or not 1 <= int(text) <= MAX_CLIENT_ID:
        raise CommandError(f"'{text}' is not a client id (a positive number, see {see}).")
    return int(text)


def parse_recipient(text: str, *, see: str = "'list'") -> int | str:
    """Whom a message is for, as typed: a client id (``3`` or ``#3``: ASCII digits) or a
    nickname (anything else).  A nickname that looks like an id is written with ``@`` before
    it (``@12`` is the nickname 12, ``@#12`` the nickname #12); ``@`` before any nickname is
    allowed, so ``@@x`` is the nickname @x."""
    text = text.strip()
    if text.startswith("@"):
        nick = text[1:]
        if not nick:
            raise CommandError(f"'@' needs a nickname after it (see {see}).")
        return nick
    bare = text.removeprefix("#")
    if (bare.isascii() and bare.isdigit()) or text == "#":
        return parse_target(text, see=see)
    if not text:
        raise CommandError(f"No recipient: give a client id or a nickname (see {see}).")
    return text


def typed_nickname(nick: str) -> str:
    """How to type ``nick`` so that ``parse_recipient`` reads that nickname: as it is, or
    with "@" before it when it would be read as an id (``12`` -> ``@12``)."""
    try:
        if parse_recipient(nick) == nick:
            return nick
    except CommandError:
        pass
    return "@" + nick


def recipient_label(target: int | str, client_id: int | None = None) -> str:
    """``#3``, or ``bob`` / ``bob (#3)`` for a nickname (escaped for the terminal)."""
    if isinstance(target, int):
        return f"#{target}"
    nick = render.safe(target)
    return nick if client_id is None else f"{nick} (#{client_id})"


def parse_host(text: str) -> str:
    """A host name or address as typed (or given with --host): one printable word that the
    resolver can take.  Python hands every host name to the ``idna`` codec, which refuses
    empty labels (``a..b``), labels over 63 characters and characters no host name may hold;
    refused here, each is one sentence instead of a UnicodeError out of ``getaddrinfo``."""
    host = require_utf8(text, "Not a valid host name").strip()
    if not host or not host.isprintable() or any(ch.isspace() for ch in host):
        raise CommandError(f"'{render.safe(host)}' is not a server address.")
    try:
        host.encode("idna")
    except UnicodeError:
        raise CommandError(f"'{host}' is not a valid host name.") from None
    return host


def require_utf8(text: str, refusal: str = "Line ignored") -> str:
    """``text``, or CommandError ("``refusal``: it is not valid UTF-8.") if it holds bytes
    that were not UTF-8.

    stdin, the terminal (prompt_toolkit) and argv decode such bytes as lone surrogates
    (``surrogateescape``), which can neither go on the wire nor be printed; a real U+FFFD
    typed by someone is text like any other."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"{refusal}: it is not valid UTF-8.") from None
    return text


def ids_hint(known_ids: Sequence[int]) -> str:
    """How the send question offers the ids of the last list."""
    if not known_ids:
        return "see 'list'"
    shown = ", ".join(str(i) for i in known_ids[:12])
    more = f", ... ({len(known_ids)} in all)" if len(known_ids) > 12 else ""
    return f"last list: {shown}{more}"
