"""``switchboard reverse serve|connect``: the string-reversal lab service and its client."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any

from switchboard import defaults
from switchboard.cli.common import listen_port_number, port_number


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except where there is nothing to show: a
    required option, a flag, or one whose help already says what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.nargs == 0:
            return action.help  # nargs 0: a flag, off unless given
        return super()._get_help_string(action)


def configure_logging(verbose: bool = False) -> None:
    """Log lines on stderr stamped as the main server's (``server.logs``: with the zone)."""
    from switchboard.server import TextFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger("switchboard.services")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reverse",
        help="the string-reversal lab service (TCP, line-based UTF-8)",
        description="A line-based UTF-8 service that answers each line reversed by grapheme.",
    )
    sub = parser.add_subparsers(title="actions", metavar="ACTION")

    serve = sub.add_parser(
        "serve",
        help="run the reversal server",
        formatter_class=DefaultsHelp,
        description="Answer each line reversed by grapheme cluster; 'bye' or ESC ends a session.",
    )
    serve.add_argument("-H", "--host", default=defaults.HOST, help="address to listen on")
    serve.add_argument(
        "-p", "--port", type=listen_port_number, default=defaults.REVERSE_PORT, help="TCP port"
    )
    serve.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=defaults.REVERSE_IDLE_TIMEOUT_S,
        metavar="SECONDS",
        help="close a client silent this long",
    )
    serve.add_argument(
        "--max-line",
        type=int,
        default=defaults.REVERSE_MAX_LINE,
        metavar="BYTES",
        help="longest line accepted; a longer one closes the connection",
    )
    serve.add_argument(
        "--max-clients",
        type=int,
        default=defaults.REVERSE_MAX_CLIENTS,
        metavar="N",
        help="concurrent sessions; one more is told the server is full",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(func=_serve)

    connect = sub.add_parser(
        "connect",
        help="the lab's interactive client",
        formatter_class=DefaultsHelp,
        description="Prompt 'Myself: ' (line editing and history on a terminal), print "
        "'Server: <reply>'; 'bye', Escape pressed alone, or Ctrl-D ends the session.  With "
        "stdin piped: no prompt, every line sent, the answers printed, then exit.",
        epilog="Exit codes: 0 the session ended (bye, Escape, end of input); 2 cannot connect, "
        "or the server turned us away (full, shutting down); 3 the server ended the session "
        "(idle, shutdown, connection lost); 130 Ctrl-C.  No --tls or --token: the lab "
        "service speaks plain lines; no --trace: the lines shown are all there is on the wire.",
    )
    connect.add_argument("-H", "--host", default=defaults.HOST, help="server address")
    connect.add_argument(
        "-p", "--port", type=port_number, default=defaults.REVERSE_PORT, help="TCP port"
    )
    connect.add_argument(
        "--timeout",
        type=positive_float,
        default=defaults.CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up connecting after this long",
    )
    connect.set_defaults(func=_connect)

    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from switchboard.services import runtime
    from switchboard.services.reverse.server import ReverseConfig, serve

    if args.max_line < 1 or args.max_clients < 1:
        print(
            "switchboard reverse serve: --max-line and --max-clients must be positive",
            file=sys.stderr,
        )
        return 2
    configure_logging(args.verbose)
    config = ReverseConfig(
        host=args.host,
        port=args.port,
        idle_timeout_s=args.idle_timeout,
        max_line=args.max_line,
        max_clients=args.max_clients,
    )

    async def main() -> None:
        stop = asyncio.Event()
        runtime.stop_on_signals(stop)
        await serve(config, stop)

    try:
        runtime.run(main())
    except OSError as exc:
        print(
            f"switchboard reverse serve: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _connect(args: argparse.Namespace) -> int:
    from switchboard.cli.lab_prompt import LinePrompt, interrupted, output_above_prompt
    from switchboard.services.reverse import client
    from switchboard.services.reverse.core import ESC

    try:
        sock = client.connect(args.host, args.port, args.timeout)
    except client.ReverseClientError as exc:
        print(f"switchboard reverse connect: {exc}", file=sys.stderr)
        return client.EXIT_NO_SESSION
    with sock:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            session = client.ReverseClient(sock=sock, stdout=sys.stdout, stderr=sys.stderr)
            try:
                return session.run_piped(sys.stdin.fileno())
            except KeyboardInterrupt:
                return interrupted()
        reader = LinePrompt(escape_line=ESC.decode())
        with output_above_prompt():
            session = client.ReverseClient(sock=sock, stdout=sys.stdout, stderr=sys.stderr)
            try:
                # Ctrl-C at the prompt: prompt_toolkit has ended the line already.
                return session.run_terminal(reader)
            except KeyboardInterrupt:  # Ctrl-C while no prompt was drawn (a SIGINT)
                pass
        return interrupted()
