"""One-shot, scriptable commands: ``time``, ``name``, ``list``, ``send``, ``listen``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from switchboard.client import AuthError, ConnectionLost, RequestTimeout, ServerError
from switchboard.protocol import ReceiptStatus

from . import render
from .common import CliExit, add_connection_args, connect, emit, error_json, say, token
from .exitcodes import ExitCode


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
        "send",
        help="send a message to a client by id",
        description="Send TEXT to the client TARGET_ID; exit 0 once forwarded (or delivered).",
    )
    add_connection_args(p)
    p.add_argument("target", type=int, metavar="TARGET_ID", help="the recipient's client id")
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
        say(name)
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
            c.nick or "-",
            render.iso(c.connected_ms),
            "<- you" if c.client_id == me else "",
        )
    Console(highlight=False, soft_wrap=True).print(table)
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    with connect(args, nick=args.nick) as client:
        try:
            ok = client.send(args.target, args.text)
        except AuthError:
            raise  # no session after all: main says what to do about the token
        except ServerError as exc:
            if args.json:
                emit(error_json(exc))
            else:
                print(f"switchboard: {exc.name}: {exc.message}", file=sys.stderr)
            return ExitCode.REFUSED
        status = "forwarded"
        if args.wait_receipt is not None:
            try:
                receipt = client.wait_receipt(ok.message_id, args.wait_receipt)
                status = "delivered" if receipt == ReceiptStatus.DELIVERED else "not-delivered"
            except RequestTimeout:
                status = "forwarded"
    if args.json:
        emit({"to": ok.target, "status": status, "message_id": ok.message_id})
    else:
        say(f"message {ok.message_id} to #{ok.target}: {status}")
    return ExitCode.REFUSED if status == "not-delivered" else ExitCode.OK


def cmd_listen(args: argparse.Namespace) -> int:
    with connect(args, nick=args.nick) as client:
        if args.nick is None and token(args) is None:
            # Without a HELLO, a server that demands a token refuses only the first
            # request: ask one (PING) so that a refusal is known now, exit 2 with what to
            # do, not "connected" and then a disconnection at its handshake timeout.
            client.ping()
        if args.json:
            emit(render.welcome_json(client.welcome))
        else:
            say(render.describe(client.welcome))
        for room in args.room:
            try:
                client.join(room)
            except AuthError:
                raise  # main says what to do about the token
            except ServerError as exc:
                raise CliExit(
                    ExitCode.REFUSED, f"cannot join {room!r}: {exc.message} ({exc.name})"
                ) from None
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
            # Shut down or lost, the session ended from the other side.
            return ExitCode.SESSION_ENDED
