"""One-shot, scriptable commands: ``time``, ``name``, ``list``, ``rooms``, ``send``, ``listen``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console

from switchboard.client import AuthError, Client, ConnectionLost, RequestTimeout, ServerError
from switchboard.client.reconnect import retry
from switchboard.protocol import HistoryMode, Message, ReceiptStatus

from . import render
from .common import CliExit, add_connection_args, connect, emit, error_json, say, token
from .exitcodes import ExitCode
from .menu import CommandError, parse_recipient, recipient_label
from .reconnect import (
    add_reconnect_args,
    backoff,
    check_reconnect_args,
    connect_again,
    seconds,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "time", help="ask the server for its time", description="Ask the server's time."
    )
    add_connection_args(p)
    p.add_argument(
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="send N pipelined requests at once (the lab's test: 100)",
    )
    p.set_defaults(func=cmd_time)

    p = sub.add_parser(
        "name", help="ask the server for its name", description="Ask the server's name."
    )
    add_connection_args(p)
    p.set_defaults(func=cmd_name)

    p = sub.add_parser("list", help="list the connected clients", description="List the clients.")
    add_connection_args(p)
    p.add_argument("--room", help="only the members of this room")
    p.add_argument(
        "--format",
        choices=["table", "tsv"],
        default=None,
        help="table: for people (stacked per client when the terminal is too narrow); tsv: a "
        "header line, then one tab-separated line per client (default: table on a terminal, "
        "tsv into a pipe or file)",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "rooms",
        help="list the rooms and how many are in each",
        description="List the server's rooms (IRC's /list): name, members, and whether you "
        "are in it (a one-shot connection never is).",
    )
    add_connection_args(p)
    p.set_defaults(func=cmd_rooms)

    p = sub.add_parser(
        "send",
        help="send a message to a client by id or nickname",
        description="Send TEXT to TARGET, a client id (3 or #3) or a nickname (alice, resolved "
        "by the server when it forwards); a nickname made of digits is written @12.  Exit 0 "
        "once forwarded (or delivered).",
    )
    add_connection_args(p)
    p.add_argument(
        "target",
        metavar="TARGET",
        help="the recipient: a client id, or a nickname (@NICK for one that looks like an id)",
    )
    p.add_argument("text", metavar="TEXT", help="the message (UTF-8)")
    p.add_argument(
        "--wait-receipt",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also wait this long for the recipient's receipt",
    )
    p.add_argument("--nick", help="a nickname to send under")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "listen",
        help="stay connected and print everything that arrives",
        description="Stay connected and print every indication as it arrives (Ctrl-C to stop). "
        "A lost connection or a server shutdown is followed by reconnecting, under the same "
        "--nick and into the same --rooms (see --no-reconnect, --reconnect-for), where the "
        "lines said meanwhile are printed first, marked missed (from the server's history), "
        "each line once.",
    )
    add_connection_args(p)
    p.add_argument("--nick", help="a nickname to listen under")
    p.add_argument("--room", action="append", default=[], help="also join this room (repeatable)")
    add_reconnect_args(p)
    p.set_defaults(func=cmd_listen)


def cmd_time(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise CliExit(2, "--count must be at least 1")
    with connect(args) as client:
        start = time.perf_counter()
        results = client.time_many(args.count)
        elapsed_ms = (time.perf_counter() - start) * 1000
    for t in results:
        if args.json:
            emit(render.time_json(t))
        else:
            say(render.server_time(t))
    if not args.json:
        say(f"{len(results)}/{args.count} responses in {elapsed_ms:.0f} ms")
    return 0


def cmd_name(args: argparse.Namespace) -> int:
    with connect(args) as client:
        name = client.name()
    if args.json:
        emit({"name": name})
    else:
        say(render.safe(name))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        clients = client.list_clients(args.room)
        me = client.client_id
    if args.json:
        emit({"clients": [render.client_json(c, me) for c in clients]})
        return 0
    if args.format == "tsv" or (args.format is None and not sys.stdout.isatty()):
        for line in render.clients_tsv(clients, me):
            say(line)
        return 0
    console = Console(highlight=False, soft_wrap=False)
    title = f"{len(clients)} client(s)" + (f" in {args.room}" if args.room else "")
    console.print(render.clients_view(console, clients, me, title))
    return 0


def cmd_rooms(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rooms = client.list_rooms()
    if args.json:
        emit({"rooms": [render.room_json(r) for r in rooms]})
    else:
        for line in render.rooms_lines(rooms):
            say(line)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    try:
        target = parse_recipient(args.target, see="switchboard list")
    except CommandError as exc:
        raise CliExit(2, str(exc)) from None
    with connect(args, nick=args.nick) as client:
        try:
            ok = client.send(target, args.text)
        except AuthError:
            raise  # no session after all: main says what to do about the token
        except ServerError as exc:
            if args.json:
                emit(error_json(exc))
            else:
                refusal = f"{render.safe(exc.name)}: {render.safe(exc.message)}"
                print(f"switchboard: {refusal}", file=sys.stderr)
            return ExitCode.REFUSED
        status = "forwarded"
        if args.wait_receipt is not None:
            try:
                receipt = client.wait_receipt(ok.message_id, args.wait_receipt)
                status = "delivered" if receipt == ReceiptStatus.DELIVERED else "not-delivered"
            except RequestTimeout:
                status = "forwarded"
    if args.json:
        result: dict[str, Any] = {"to": ok.target, "status": status, "message_id": ok.message_id}
        if isinstance(target, str):  # addressed by nickname: which one (the id is "to")
            result["to_nick"] = target
        emit(result)
    else:
        say(f"message {ok.message_id} to {recipient_label(target, ok.target)}: {status}")
    return ExitCode.REFUSED if status == "not-delivered" else ExitCode.OK


def cmd_listen(args: argparse.Namespace) -> int:
    """Print what arrives; after a lost connection or a server shutdown, reconnect (unless
    --no-reconnect) with back-off, under the same nickname and in the same rooms."""
    check_reconnect_args(args)
    client = connect(args, nick=args.nick)
    try:
        if args.nick is None and token(args) is None:
            # Without a HELLO, a server that demands a token refuses only the first
            # request: ask one (PING) so that a refusal is known now, exit 2 with what to
            # do, not "connected" and then a disconnection at its handshake timeout.
            client.ping()
    except BaseException:
        client.close()
        raise
    if args.json:
        emit(render.welcome_json(client.welcome))
    else:
        say(render.describe(client.welcome))
    seen = RoomLines()
    rooms: list[str] = []
    for room in args.room:
        try:
            rooms.append(client.join(room).room)
        except AuthError:
            client.close()
            raise  # main says what to do about the token
        except ServerError as exc:
            client.close()
            raise CliExit(
                ExitCode.REFUSED, f"cannot join {room!r}: {exc.message} ({exc.name})"
            ) from None
    seen.learn_epoch(client, rooms)
    while True:
        with client:
            follow(client, args.json, seen)
        # Shut down or lost, the session ended from the other side.
        if args.no_reconnect:
            return ExitCode.SESSION_ENDED
        again = rejoin(args, seen)
        if again is None:
            return ExitCode.SESSION_ENDED
        client = again


class RoomLines:
    """The id of the last line printed of each room, in the history store of ``epoch``: a
    reconnection prints what came after (HISTORY AFTER), and no line twice."""

    def __init__(self) -> None:
        self.epoch = 0
        self.shown: dict[str, int] = {}

    def learn_epoch(self, client: Client, rooms: list[str]) -> None:
        """The store's epoch (one line of history asked for), when in a room."""
        if rooms:
            try:
                self.epoch = client.history(rooms[0], HistoryMode.LATEST, limit=1).epoch
            except ServerError:
                self.epoch = 0  # a server without HISTORY: nothing is caught up

    def fresh(self, frame: Message) -> bool:
        """Whether a room line is not printed yet (and then it counts as printed)."""
        if frame.message_id <= self.shown.get(frame.room, 0):
            return False
        self.shown[frame.room] = frame.message_id
        return True

    def missed(self, client: Client, rooms: list[str]) -> list[Message]:
        """After rejoining ``rooms``: the lines said since the last one printed of each (none
        from a store of another epoch: its ids mean nothing there)."""
        out: list[Message] = []
        epoch = self.epoch
        for room in rooms:
            after = self.shown.get(room)
            if after is None or not self.epoch:
                continue
            epoch, lines = client.missed(room, after, self.epoch)
            if epoch != self.epoch:
                break
            out += lines
        if epoch != self.epoch:
            self.shown.clear()
            self.epoch = epoch
        if not self.epoch:
            self.learn_epoch(client, rooms)
        return out


def follow(client: Client, as_json: bool, seen: RoomLines) -> str:
    """Print every indication until the connection ends; why it ended."""
    try:
        while True:
            frame = client.next_indication()
            if frame is None:
                continue
            if isinstance(frame, Message) and frame.room and not seen.fresh(frame):
                continue  # printed already (a rejoin's replay, or a line caught up)
            if as_json:
                emit(render.to_json(frame))
            else:
                say(render.describe(frame))
    except ConnectionLost as lost:
        if as_json:
            emit({"event": "disconnected", "reason": lost.reason})
        else:
            say(f"disconnected: {render.safe(lost.reason)}")
        return lost.reason


def rejoin(args: argparse.Namespace, seen: RoomLines) -> Client | None:
    """Reconnect under the same nickname and rejoin the rooms, saying so, then print the lines
    said meanwhile; None (after saying so) once the back-off gives up."""
    missed: list[Message] = []

    def attempt() -> Client:
        client = connect_again(args, nick=args.nick)
        try:
            rooms = [client.join(room).room for room in args.room]
            try:
                missed[:] = seen.missed(client, rooms)
            except ServerError:
                missed.clear()  # its history cannot be read now: the rejoin's replay it is
        except BaseException:
            client.close()
            raise
        return client

    def waiting(delay: float, error: str | None) -> None:
        if args.json:
            emit({"event": "reconnecting", "in_s": round(delay, 3), "error": error})
        else:
            why = f"reconnect failed ({render.safe(error)}); " if error else ""
            say(f"{why}reconnecting in {seconds(delay)}")

    try:
        client = retry(attempt, backoff(args), on_wait=waiting)
    except AuthError as exc:
        client, why = None, f"the server refused the token ({exc.name})"
    else:
        why = f"no connection within {args.reconnect_for:g} s"
    if client is None:
        if args.json:
            emit({"event": "gave-up", "reason": why})
        else:
            say(f"gave up reconnecting: {why}")
        return None
    rooms = ", ".join(args.room)
    if args.json:
        emit({**render.welcome_json(client.welcome), "event": "reconnected", "rooms": args.room})
    else:
        say(f"reconnected as #{client.client_id}" + (f", rejoined {rooms}" if rooms else ""))
    for line in missed:
        if seen.fresh(line):
            if args.json:
                emit(render.to_json(line, missed=True))
            else:
                say(render.describe(line, missed=True))
    return client
