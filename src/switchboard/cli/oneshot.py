"""One-shot, scriptable commands: ``time``, ``name``, ``list``, ``rooms``, ``send``, ``listen``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from switchboard.client import AuthError, ConnectionLost, RequestTimeout, ServerError
from switchboard.protocol import ReceiptStatus

from . import render
from .common import CliExit, add_connection_args, connect, emit, error_json, say
from .menu import CommandError, parse_recipient, recipient_label


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
        description="Stay connected and print every indication as it arrives (Ctrl-C to stop).",
    )
    add_connection_args(p)
    p.add_argument("--nick", help="a nickname to listen under")
    p.add_argument("--room", action="append", default=[], help="also join this room (repeatable)")
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
            say(f"{t.iso} ({t.zone})" if t.zone else t.iso)
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
    table = Table(title=f"{len(clients)} client(s)" + (f" in {args.room}" if args.room else ""))
    for column in ("id", "ip", "port", "nickname", "connected since", ""):
        table.add_column(column, justify="right" if column in ("id", "port") else "left")
    for c in clients:
        table.add_row(
            str(c.client_id),
            c.ip,
            str(c.port),
            Text(render.safe(c.nick)) if c.nick else "-",  # a peer's string, never markup
            render.iso(c.connected_ms),
            "<- you" if c.client_id == me else "",
        )
    Console(highlight=False, soft_wrap=True).print(table)
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
        except ServerError as exc:
            if args.json:
                emit(error_json(exc))
            else:
                print(f"switchboard: {exc.name}: {exc.message}", file=sys.stderr)
            return 2 if isinstance(exc, AuthError) else 1  # refused connection, as in main
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
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    with connect(args, nick=args.nick) as client:
        if args.json:
            emit(render.welcome_json(client.welcome))
        else:
            say(render.describe(client.welcome))
        for room in args.room:
            try:
                client.join(room)
            except ServerError as exc:
                code = 2 if isinstance(exc, AuthError) else 1
                raise CliExit(code, f"cannot join {room!r}: {exc.message}") from None
        try:
            while True:
                frame = client.next_indication()
                if frame is None:
                    continue
                if args.json:
                    emit(render.to_json(frame))
                else:
                    say(render.describe(frame))
        except ConnectionLost as lost:
            if args.json:
                emit({"event": "disconnected", "reason": lost.reason})
            else:
                say(f"disconnected: {lost.reason}")
            return 0 if client.closed and "shut down" in lost.reason else 2
