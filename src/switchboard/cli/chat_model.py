"""The chat client without a terminal: what a typed line means, how lines look, where we are.

``parse_line`` turns one typed line into an ``Action`` (or None for an empty line, which is
never sent) and raises ``CommandError`` with a sentence for the user (a line over the
server's limit is refused by the client library, before anything is sent); the ``*_line``
functions format what arrives, peers' strings escaped with ``render.safe``; ``ChatState``
knows the rooms we are in and which one plain lines go to.  The shell in ``chat.py`` does the I/O.

Rooms: plain lines go to the *current* room, shown in the prompt.  It is the room joined
last; ``/join`` of a room we are already in only switches to it (no request: the server
would replay its history again).  ``/leave`` of the current room makes the room joined
before it current; leaving the last room leaves none, and plain lines are refused until
the next ``/join``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from switchboard.protocol import (
    ClientInfo,
    Joined,
    Left,
    LeftReason,
    Message,
    MessageFlags,
    NickChanged,
    Receipt,
    ReceiptStatus,
)
from switchboard.protocol.trace import host_port

from . import render
from .menu import CommandError, parse_recipient, require_utf8, typed_nickname
from .render import safe

Clock = Callable[[int], str]


# --- actions: what a typed line asks for -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """Broadcast ``text`` to the current room."""

    text: str


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """Send ``text`` to ``target``: a client id (int) or a nickname (str)."""

    target: int | str
    text: str


@dataclass(frozen=True, slots=True)
class ListRooms:
    """The server's rooms (IRC's /list)."""


@dataclass(frozen=True, slots=True)
class ListMembers:
    """The current room's members, or every connected client."""

    everyone: bool = False


@dataclass(frozen=True, slots=True)
class GetTime:
    pass


@dataclass(frozen=True, slots=True)
class GetName:
    pass


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave ``room``; None: the current room."""

    room: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeNick:
    nick: str


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


Action = (
    Say
    | PrivateMessage
    | ListMembers
    | ListRooms
    | GetTime
    | GetName
    | Join
    | Leave
    | ChangeNick
    | Help
    | Quit
)

#: Command -> (arguments, what it does), in the order ``/help`` lists them.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "/msg": ("TO TEXT", "private message to a nickname or client id, with a delivery receipt"),
    "/list": ("", "the rooms on the server and how many are in each"),
    "/who": ("[all]", "who is in the current room (all: every connected client)"),
    "/time": ("", "the server's time"),
    "/name": ("", "the server's name"),
    "/join": ("ROOM", "join ROOM (or switch to it) and talk there"),
    "/leave": ("[ROOM]", "leave ROOM (default: the current room)"),
    "/nick": ("NAME", "change your nickname"),
    "/help": ("", "this list"),
    "/quit": ("", "leave the chat (Ctrl-D does too)"),
}


def parse_line(line: str) -> Action | None:
    """What one typed line asks for; None for a blank line (nothing is sent).  A line with
    bytes that are not UTF-8 is refused whole, command or text (as ``udpchat join`` does)."""
    text = require_utf8(line.rstrip("\r\n"), "Line not sent")
    if not text.strip():
        return None
    # A stray space before a command must not say "/quit" to the whole room.
    stripped = text.lstrip()
    if stripped.startswith("//"):  # "//x" says "/x" to the room
        return Say(stripped[1:])
    if not stripped.startswith("/"):
        return Say(text)
    head, _, rest = text.strip().partition(" ")
    command = head.lower()
    rest = rest.strip()
    if command == "/msg":
        target_text, _, message = rest.partition(" ")
        if not target_text or not message.strip():
            raise CommandError(
                "Usage: /msg TO TEXT (a nickname or a client id from /who, then the text)."
            )
        return PrivateMessage(parse_recipient(target_text, see="/who"), message.strip())
    if command == "/who":
        if rest.lower() not in ("", "all"):
            raise CommandError("Usage: /who, or /who all for every connected client.")
        return ListMembers(everyone=bool(rest))
    if command == "/list":
        if rest:
            raise CommandError("Usage: /list (the rooms); /who lists who is in this room.")
        return ListRooms()
    if command in ("/join", "/nick"):
        if not rest or " " in rest:
            what = "ROOM" if command == "/join" else "NAME"
            raise CommandError(f"Usage: {command} {what} (one word).")
        return Join(rest) if command == "/join" else ChangeNick(rest)
    if command == "/leave":
        if " " in rest:
            raise CommandError("Usage: /leave [ROOM] (one room at a time).")
        return Leave(rest or None)
    simple: dict[str, Action] = {
        "/time": GetTime(),
        "/name": GetName(),
        "/help": Help(),
        "/quit": Quit(),
        "/exit": Quit(),
    }
    action = simple.get(command)
    if action is None:
        raise CommandError(
            f"Unknown command {head}: /help lists the commands; //text says a line starting with /."
        )
    if rest:
        raise CommandError(f"{command} takes no arguments.")
    return action


def help_lines() -> list[str]:
    width = max(len(f"{c} {a}") for c, (a, _) in COMMANDS.items())
    lines = ["Type a line and Enter to say it to the current room (shown in the prompt)."]
    lines += [f"  {f'{c} {a}'.strip():<{width}}  {what}" for c, (a, what) in COMMANDS.items()]
    lines.append("A line starting with // says it with one / (//shrug -> /shrug).")
    lines.append("/msg 12 is client #12; a nickname made of digits is written /msg @12.")
    return lines


# --- how lines look ---------------------------------------------------------------------------


def who(nick: str, client_id: int) -> str:
    """``alice(#3)``, or ``#3`` without a nickname."""
    return f"{safe(nick)}(#{client_id})" if nick else f"#{client_id}"


def _stamp(epoch_ms: int, clock: Clock) -> str:
    return f"[{clock(epoch_ms)}]"


def room_line(
    msg: Message, *, show_room: bool, missed: bool = False, clock: Clock = render.clock
) -> str:
    """``[12:01:33] alice(#3): text``; history marked ``(history)``, or ``(missed)`` for a
    line said while we were away (``missed``); ``[room]`` when asked."""
    parts = [_stamp(msg.sent_ms, clock)]
    if missed:
        parts.append("(missed)")
    elif msg.flags & MessageFlags.HISTORY:
        parts.append("(history)")
    if show_room:
        parts.append(f"[{safe(msg.room)}]")
    parts.append(f"{who(msg.sender_nick, msg.sender_id)}: {safe(msg.text)}")
    return " ".join(parts)


def own_line(
    nick: str,
    client_id: int,
    room: str,
    text: str,
    sent_ms: int,
    *,
    show_room: bool,
    clock: Clock = render.clock,
) -> str:
    """The line we said, as the others see it (shown once, when the server has taken it)."""
    room_part = f" [{safe(room)}]" if show_room else ""
    return f"{_stamp(sent_ms, clock)}{room_part} {who(nick, client_id)}: {safe(text)}"


def private_line(msg: Message, clock: Clock = render.clock) -> str:
    """``[12:01:33] alice(#3) → you: text``"""
    return f"{_stamp(msg.sent_ms, clock)} {who(msg.sender_nick, msg.sender_id)} → you: " + safe(
        msg.text
    )


def sent_private_line(to: str, text: str, sent_ms: int, clock: Clock = render.clock) -> str:
    """``[12:01:34] you → bob (#3): text (forwarded)``; ``to`` is ready to print."""
    return f"{_stamp(sent_ms, clock)} you → {to}: {safe(text)} (forwarded)"


def receipt_line(receipt: Receipt) -> str:
    if receipt.status == ReceiptStatus.DELIVERED:
        return f"* your message to #{receipt.target} was delivered"
    return f"* your message to #{receipt.target} was not delivered (it left before reading it)"


def joined_line(frame: Joined) -> str:
    """``* alice(#3) joined lobby``"""
    return f"* {who(frame.nick, frame.client_id)} joined {safe(frame.room)}"


def left_line(frame: Left) -> str:
    """``* bob(#2) left lobby (disconnected)``"""
    # A LEAVE needs no explanation; a disconnection or a timeout does.
    reason = "" if frame.reason == LeftReason.LEFT else f" ({render.left_reason(frame.reason)})"
    return f"* {who(frame.nick, frame.client_id)} left {safe(frame.room)}{reason}"


def nick_changed_line(frame: NickChanged) -> str:
    """``* alice(#3) is now known as carolyn``"""
    return f"* {who(frame.old_nick, frame.client_id)} is now known as {safe(frame.new_nick)}"


def caught_up(
    after: int, missed: Iterable[Message], arrived: Iterable[Message]
) -> list[tuple[Message, bool]]:
    """The lines to show of a room we come back to, in id order, each once: those after id
    ``after`` among the ``missed`` lines the server's history gave and the room ``arrived``
    frames received meanwhile (its JOIN's replay, live lines), each with whether it was
    missed (said while we were away: from the history) rather than live."""
    lines: dict[int, tuple[Message, bool]] = {}
    for msg in missed:
        if msg.message_id > after:
            lines[msg.message_id] = (msg, True)
    for msg in arrived:
        if msg.message_id > after and msg.message_id not in lines:
            lines[msg.message_id] = (msg, bool(msg.flags & MessageFlags.HISTORY))
    return [lines[i] for i in sorted(lines)]


def missed_notice(room: str, count: int) -> str:
    """``* 3 line(s) said in lobby while you were away:`` (or that there were none)."""
    if not count:
        return f"* nothing was said in {safe(room)} while you were away"
    return f"* {count} line(s) said in {safe(room)} while you were away:"


def catch_up_failed_notice(room: str, reason: str, *, had_position: bool) -> str:
    """The one line saying a catch-up's HISTORY failed (``reason`` escaped already): with
    ``had_position`` what was missed is not shown; without, the store's epoch is unknown, so
    lines shown from now on cannot be resumed from after a reconnection."""
    if had_position:
        return (
            f"* Could not fetch what was said in {safe(room)} while you were away ({reason}); "
            "only the lines the server replays follow."
        )
    return (
        f"* Could not read the history of {safe(room)} ({reason}); after a reconnection its "
        "latest lines will be shown again instead of what you missed."
    )


def you_joined_line(room: str, members: int, history: int) -> str:
    others = members - 1
    company = "nobody else is here" if others == 0 else f"{others} other(s) here"
    earlier = f", {history} earlier message(s) follow" if history else ""
    return f"* you joined {safe(room)} ({company}{earlier})"


def members_lines(title: str, members: Iterable[ClientInfo], me: int) -> list[str]:
    """``title`` then one ``  alice(#3) 127.0.0.1:5000`` line per member."""
    rows = [
        f"  {who(c.nick, c.client_id)} {host_port(c.ip, c.port)}"
        + (" (you)" if c.client_id == me else "")
        for c in members
    ]
    return [f"{safe(title)}: {len(rows)}", *rows]  # the title may name a room


# --- where we are ----------------------------------------------------------------------------


@dataclass
class ChatState:
    """Our nickname, id, and rooms (in joining order); plain lines go to ``current``."""

    nick: str
    client_id: int = 0
    rooms: list[str] = field(default_factory=list)
    current: str | None = None

    @property
    def show_rooms(self) -> bool:
        """In several rooms, every room line says which room it is from."""
        return len(self.rooms) > 1

    def joined(self, room: str) -> None:
        if room in self.rooms:
            self.rooms.remove(room)
        self.rooms.append(room)
        self.current = room

    def switch(self, room: str) -> bool:
        """Make ``room`` current if we are in it; False if we are not."""
        if room not in self.rooms:
            return False
        self.current = room
        return True

    def left(self, room: str) -> None:
        if room in self.rooms:
            self.rooms.remove(room)
        if self.current == room:
            self.current = self.rooms[-1] if self.rooms else None

    def target_room(self) -> str:
        """The room a plain line goes to; CommandError when we are in none."""
        if self.current is None:
            raise CommandError("You are in no room: /join one first (nothing was sent).")
        return self.current

    def where_now(self) -> str:
        """After leaving a room: where plain lines go now."""
        if self.current is None:
            return "you are in no room now: /join one"
        return f"talking in {safe(self.current)}"

    def prompt_parts(self) -> list[tuple[str, str]]:
        """``[lobby] alice> `` for prompt_toolkit, with style classes (the room and the
        nickname as the server confirmed them, escaped)."""
        if self.current:
            where = ("class:state", safe(self.current))
        else:
            where = ("class:offline", "no room")
        return [("class:prompt", "["), where, ("class:prompt", f"] {safe(self.nick)}> ")]

    def completion_words(
        self, known_ids: Iterable[int] = (), known_nicks: Iterable[str] = ()
    ) -> dict[str, object]:
        rooms = {room: None for room in self.rooms}
        words: dict[str, object] = {command: None for command in COMMANDS}
        # Nicknames as /msg reads them: one that looks like an id gets its "@".
        targets = [str(i) for i in known_ids]
        targets += [typed_nickname(n) for n in known_nicks if " " not in n]
        words["/msg"] = dict.fromkeys(targets) or None
        words["/who"] = {"all": None}
        words["/join"] = rooms or None
        words["/leave"] = rooms or None
        return words
