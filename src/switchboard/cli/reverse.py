"""``switchboard reverse serve|connect``: the string-reversal lab service and its client.

The client's session (``services.reverse.client``) prints nothing: here are its prompt, the
``Server: `` lines, what is said when the server ends the session or turns us away, and the
exit code for each ending (``exit_code``, from the one table).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, TextIO

from switchboard import defaults
from switchboard.cli.common import add_service_endpoint_args, positive_seconds
from switchboard.cli.exitcodes import ExitCode
from switchboard.display import safe
from switchboard.protocol.trace import host_port

if TYPE_CHECKING:  # imported when a session starts: every command's start-up stays light
    from switchboard.services.reverse.client import Ending, ReverseClient


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
    add_service_endpoint_args(
        serve, port=defaults.REVERSE_PORT, listening=True, port_help="TCP port"
    )
    serve.add_argument(
        "--idle-timeout",
        type=positive_seconds,
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
    add_service_endpoint_args(
        connect, port=defaults.REVERSE_PORT, listening=False, port_help="TCP port"
    )
    connect.add_argument(
        "-t",
        "--timeout",
        type=positive_seconds,
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


#: The lab's prompt on a terminal, and what each answer is printed after.
PROMPT: Final = "Myself: "
SERVER_PREFIX: Final = "Server: "
#: Said on stderr when the server ended the session (the lab's wording).
INTERRUPTED: Final = "Connection interrupted"


def exit_code(ending: Ending) -> ExitCode:
    """How a session ended, as an exit code of the one table."""
    from switchboard.services.reverse.client import Ending

    return {
        Ending.BY_US: ExitCode.OK,
        Ending.TURNED_AWAY: ExitCode.NO_SESSION,
        Ending.BY_SERVER: ExitCode.SESSION_ENDED,
        Ending.INTERRUPTED: ExitCode.INTERRUPTED,
    }[ending]


class SessionPrinter:
    """The session's lines on stdout and stderr, whole, from the socket's thread and ours."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def out(self, line: str) -> None:
        self._write(sys.stdout, line)

    def err(self, line: str) -> None:
        self._write(sys.stderr, line)

    def _write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def answer(self, text: str) -> None:
        self.out(f"{SERVER_PREFIX}{safe(text)}")  # the server's: escaped like every peer's

    def unsent(self, size: int, limit: int) -> None:
        self.err(f"line not sent: {size} bytes, the limit is {limit}")

    def ending(self, session: ReverseClient, ending: Ending) -> int:
        """Say why the session ended when it was not us; the exit code."""
        from switchboard.services.reverse.client import Ending

        if ending is Ending.TURNED_AWAY:
            refusal = safe(session.refusal or "")
            self.err(f"switchboard reverse connect: the server turned us away: {refusal}")
        elif ending is Ending.BY_SERVER:
            self.err(INTERRUPTED)
        return exit_code(ending)


def connect(host: str, port: int, timeout: float) -> socket.socket:
    """A connected TCP socket, or ``OSError`` with the reason to say (``TimeoutError``: no
    answer within ``timeout``)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    return sock


def _connect(args: argparse.Namespace) -> int:
    from switchboard.cli.terminal import LinePrompt, interrupted, output_above_prompt
    from switchboard.services.reverse.client import ReverseClient
    from switchboard.services.reverse.core import ESC

    where = host_port(args.host, args.port)
    try:
        sock = connect(args.host, args.port, args.timeout)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {args.timeout:g} s"
        else:
            reason = exc.strerror or str(exc)
        print(f"switchboard reverse connect: cannot connect to {where}: {reason}", file=sys.stderr)
        return ExitCode.NO_SESSION
    with sock:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            printer = SessionPrinter()
            session = ReverseClient(sock, on_answer=printer.answer, on_unsent=printer.unsent)
            try:
                return printer.ending(session, session.run_piped(sys.stdin.fileno()))
            except KeyboardInterrupt:
                return interrupted()
        reader = LinePrompt(escape_line=ESC.decode())
        with output_above_prompt():
            printer = SessionPrinter()  # writes to the proxy that sys.stdout now is
            session = ReverseClient(sock, on_answer=printer.answer, on_unsent=printer.unsent)
            try:
                # Ctrl-C at the prompt: prompt_toolkit has ended the line already.
                return printer.ending(session, session.run_terminal(reader, PROMPT))
            except KeyboardInterrupt:  # Ctrl-C while no prompt was drawn (a SIGINT)
                pass
        return interrupted()
