"""``switchboard udpchat serve|join|relay``: the UDP chat room, a member, and a lossy relay."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from switchboard import defaults
from switchboard.cli.common import add_service_endpoint_args, port_number, positive_seconds
from switchboard.cli.reverse import DefaultsHelp, configure_logging


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1: {text!r}")
    return value


def _retry_total_s() -> float:
    """How long the default JOIN retries wait in all before giving up."""
    from switchboard.services.udpchat.peer import RetrySchedule

    return RetrySchedule().total_s


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "udpchat",
        help="the UDP chat room lab service (unique nicknames, copes with loss)",
        description="A chat room over UDP: unique nicknames, acknowledged join/leave, "
        "per-sender sequence numbers with duplicate and gap detection, keepalives.",
    )
    sub = parser.add_subparsers(title="actions", metavar="ACTION")
    fmt = DefaultsHelp

    serve = sub.add_parser(
        "serve",
        help="run the chat room",
        formatter_class=fmt,
        description="Run the UDP chat room: members join under unique nicknames, each line "
        "is relayed to the others with the sender's sequence number and the server's time, "
        "silent members expire.  The room lives in memory; SIGINT or SIGTERM stops it, "
        "telling every member.",
    )
    add_service_endpoint_args(
        serve, port=defaults.UDPCHAT_PORT, listening=True, port_help="UDP port"
    )
    serve.add_argument(
        "--member-expiry",
        type=positive_seconds,
        default=defaults.UDPCHAT_MEMBER_EXPIRY_S,
        metavar="SECONDS",
        help="expire members silent this long",
    )
    serve.add_argument(
        "--max-members",
        type=int,
        default=defaults.UDPCHAT_MAX_MEMBERS,
        metavar="N",
        help="members in the room; the next join is refused",
    )
    serve.add_argument(
        "--max-per-address",
        type=int,
        default=defaults.UDPCHAT_MAX_MEMBERS_PER_ADDRESS,
        metavar="N",
        help="members joined from one IP address; the next join from it is refused",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=_serve)

    join = sub.add_parser(
        "join",
        help="join the room: lines typed are said, lines received are printed",
        formatter_class=fmt,
        description="Join the room as NICK.  'exit', '/quit', Ctrl-D or end of input "
        "leaves.  On a terminal: line editing and history, lines arriving are printed above "
        "the line being typed, a refused nickname asks for another.",
        epilog="Exit codes: 0 left the room; 2 no answer from the server (within --timeout) "
        "or the nickname refused with no terminal to ask; 3 the server shut down; 130 Ctrl-C "
        "(after leaving the room).  No --tls or --token: the lab's room speaks plain UDP "
        "without authentication (its session tokens identify members, see PROTOCOL.md).",
    )
    add_service_endpoint_args(
        join, port=defaults.UDPCHAT_PORT, listening=False, port_help="UDP port"
    )
    join.add_argument(
        "-t",
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="give up joining after this long (default: when the JOIN retries run out, "
        f"{_retry_total_s():g} s with the retry defaults)",
    )
    join.add_argument(
        "--trace",
        action="store_true",
        help="print every datagram sent and received on stderr, decoded field by field",
    )
    join.add_argument("--trace-hex", action="store_true", help="with --trace, add a hex dump")
    join.add_argument(
        "--nick",
        required=True,
        help=f"nickname: 1-{defaults.MAX_NICK_CHARS} characters, no whitespace, control or "
        "invisible characters, no '|' or '\\', unique in the room (case-insensitively, and "
        "look-alikes are one name)",
    )
    join.add_argument(
        "--keepalive",
        type=positive_seconds,
        default=defaults.UDPCHAT_KEEPALIVE_S,
        metavar="SECONDS",
        help="interval between keepalives; shortened to a quarter of the member expiry "
        "the server announces on joining",
    )
    join.add_argument(
        "--server-silence",
        type=positive_seconds,
        default=defaults.UDPCHAT_SERVER_SILENCE_S,
        metavar="SECONDS",
        help="say the server is not answering after this long without a word from it",
    )
    join.add_argument(
        "--retry-initial",
        type=positive_seconds,
        default=defaults.UDPCHAT_RETRY_INITIAL_S,
        metavar="SECONDS",
        help="first JOIN/LEAVE retry after this long, doubling each time",
    )
    join.add_argument(
        "--retry-max",
        type=positive_seconds,
        default=defaults.UDPCHAT_RETRY_MAX_S,
        metavar="SECONDS",
        help="longest wait between retries",
    )
    join.add_argument(
        "--retry-attempts",
        type=int,
        default=defaults.UDPCHAT_RETRY_ATTEMPTS,
        metavar="N",
        help="JOIN/LEAVE sends before giving up",
    )
    join.set_defaults(func=_join)

    relay = sub.add_parser(
        "relay",
        help="testing aid: a UDP relay that drops, reorders and duplicates datagrams",
        formatter_class=fmt,
        description="Listen on --port and relay to the room at --to-host:--to-port, losing "
        "a chosen fraction of datagrams both ways; point clients at the relay.",
    )
    add_service_endpoint_args(
        relay, port=0, listening=True, port_help="UDP port to listen on (0: any)"
    )
    relay.add_argument("--to-host", default=defaults.HOST, help="the room's address")
    relay.add_argument(
        "--to-port", type=port_number, default=defaults.UDPCHAT_PORT, help="its port"
    )
    relay.add_argument("--drop", type=_fraction, default=0.0, help="fraction to drop")
    relay.add_argument("--reorder", type=_fraction, default=0.0, help="fraction to delay")
    relay.add_argument("--duplicate", type=_fraction, default=0.0, help="fraction to duplicate")
    relay.add_argument("--seed", type=int, default=None, help="random seed (reproducible runs)")
    relay.set_defaults(func=_relay)

    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from switchboard.services import runtime
    from switchboard.services.udpchat.server import UdpChatConfig, serve

    if args.max_members < 1 or args.max_per_address < 1:
        print(
            "switchboard udpchat serve: --max-members and --max-per-address must be positive",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.verbose)
    config = UdpChatConfig(
        host=args.host,
        port=args.port,
        member_expiry_s=args.member_expiry,
        max_members=args.max_members,
        max_per_address=args.max_per_address,
    )

    async def main() -> None:
        stop = asyncio.Event()
        runtime.stop_on_signals(stop)
        await serve(config, stop)

    try:
        runtime.run(main())
    except OSError as exc:
        print(
            f"switchboard udpchat serve: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _join(args: argparse.Namespace) -> int:
    from switchboard.cli.udpchat_join import join_room
    from switchboard.services import runtime
    from switchboard.services.udpchat.peer import ChatPeer, RetrySchedule

    if args.retry_attempts < 1:
        print("switchboard udpchat join: --retry-attempts must be positive", file=sys.stderr)
        return 2
    peer = ChatPeer(
        nick=args.nick.strip(),
        retry=RetrySchedule(args.retry_initial, args.retry_max, args.retry_attempts),
        keepalive_s=args.keepalive,
        server_silence_s=args.server_silence,
    )
    terminal = sys.stdin.isatty() and sys.stdout.isatty()

    async def main() -> int:
        reader = None
        if terminal:
            from switchboard.cli.terminal import LinePrompt

            reader = LinePrompt()
        return await join_room(
            peer,
            host=args.host,
            port=args.port,
            stdin_fd=sys.stdin.fileno(),
            interactive=sys.stdin.isatty(),
            reader=reader,
            join_timeout_s=args.timeout,
            trace=args.trace,
            trace_hex=args.trace_hex,
        )

    try:
        if terminal:
            from switchboard.cli.terminal import output_above_prompt

            with output_above_prompt():
                return runtime.run(main())
        return runtime.run(main())
    except OSError as exc:
        print(
            f"switchboard udpchat join: cannot reach {args.host}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2


def _relay(args: argparse.Namespace) -> int:
    import asyncio

    from switchboard.services import runtime
    from switchboard.services.udpchat.relay import FaultPlan, LossyRelay

    configure_logging(False)
    plan = FaultPlan(drop=args.drop, reorder=args.reorder, duplicate=args.duplicate,
                     seed=args.seed)  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        runtime.stop_on_signals(stop)
        async with LossyRelay((args.to_host, args.to_port), plan, listen=(args.host, args.port)):
            await stop.wait()

    try:
        runtime.run(main())
    except OSError as exc:
        print(f"switchboard udpchat relay: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
