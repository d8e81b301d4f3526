"""What every client command shares: where to connect, how to fail, how to print."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from typing import Any, Final

from switchboard import defaults
from switchboard.client import (
    AuthError,
    Client,
    ConnectionFailed,
    ConnectionLost,
    NicknameError,
    RequestTimeout,
    ServerError,
    ServerFull,
)
from switchboard.client.channel import client_ssl_context
from switchboard.client.tracing import Tracer
from switchboard.display import safe
from switchboard.protocol import ErrorCode
from switchboard.protocol.codec import Event
from switchboard.protocol.printable import json_line
from switchboard.protocol.trace import host_port
from switchboard.server import local_timestamp

from .exitcodes import ExitCode

#: Seconds between attempts to connect to a full server (``connect(retry_full_s=...)``).
FULL_RETRY_S: Final = 1.0


class CliExit(Exception):
    """Stop the command with ``code`` after printing ``message`` to stderr (if any)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _port(text: str, lowest: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range ({lowest}-65535)")
    return value


def port_number(text: str) -> int:
    """An argparse ``type`` for a port to connect to: 1-65535, else a usage error (exit 2)."""
    return _port(text, 1)


def listen_port_number(text: str) -> int:
    """An argparse ``type`` for a port to listen on: 0 (any free port) to 65535."""
    return _port(text, 0)


def env_port() -> int:
    raw = os.environ.get(defaults.ENV_PORT)
    if not raw:
        return defaults.PORT
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError as exc:
        raise CliExit(ExitCode.USAGE, f"${defaults.ENV_PORT}: {exc}") from None


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a timeout: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """``-H/--host`` and ``-p/--port``, defaulting to the environment, then the built-in
    defaults.  ``-h`` stays ``--help`` in every command (argparse's and most tools' habit)."""
    p.add_argument(
        "-H",
        "--host",
        default=None,
        help=f"server address (default ${defaults.ENV_HOST} or {defaults.HOST})",
    )
    p.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=None,
        help=f"server port, 1-65535 (default ${defaults.ENV_PORT} or {defaults.PORT})",
    )


def add_service_endpoint_args(
    p: argparse.ArgumentParser, *, port: int, listening: bool, port_help: str
) -> None:
    """``-H/--host`` and ``-p/--port`` of the lab services' commands: their own default port,
    no environment (the variables name the main server); a port to listen on may be 0."""
    p.add_argument(
        "-H",
        "--host",
        default=defaults.HOST,
        help="address to listen on" if listening else "server address",
    )
    p.add_argument(
        "-p",
        "--port",
        type=listen_port_number if listening else port_number,
        default=port,
        help=port_help,
    )


def local_address(text: str) -> tuple[str, int]:
    """An argparse ``type`` for ``--bind``: ``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (any
    address); port 0 lets the kernel choose one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"write an IPv6 address in brackets: [{host}]:{port}")
    return host, _port(port, 0)


def add_connection_args(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    add_endpoint_args(p)
    p.add_argument(
        "--bind",
        type=local_address,
        default=None,
        metavar="HOST:PORT",
        help="connect from this local address and port (bind() before connect(); port 0: "
        "any free one; default: the kernel picks an ephemeral port). A fixed port is held "
        "by TIME_WAIT for 60 s after a connection the client closed: `switchboard lab ports`",
    )
    p.add_argument(
        "-t",
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="give up after this long on connecting (TCP, TLS and the server's WELCOME, one "
        "deadline) and on each response (default "
        f"{defaults.CONNECT_TIMEOUT_S:g} to connect, {defaults.REQUEST_TIMEOUT_S:g} per response)",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cafile", metavar="FILE", help="with --tls: trust this CA bundle (PEM)")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls: skip certificate checks (self-signed test servers only)",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"authentication token (default ${defaults.ENV_TOKEN}); prefer the variable: "
        "arguments show in the process list",
    )
    add_trace_args(p)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_trace_args(p: argparse.ArgumentParser) -> None:
    """``--trace`` and ``--trace-hex``: the server's and every client command's."""
    p.add_argument(
        "--trace", action="store_true", help="print every frame sent and received to stderr"
    )
    p.add_argument(
        "--trace-hex", action="store_true", help="with --trace, add a hex dump of each frame"
    )


def request_timeout(args: argparse.Namespace) -> float:
    """``--timeout``, or the default wait for a response."""
    value = getattr(args, "timeout", None)
    return defaults.REQUEST_TIMEOUT_S if value is None else float(value)


def connect_timeout(args: argparse.Namespace) -> float:
    """``--timeout``, or the default deadline for connecting (TCP, TLS, WELCOME)."""
    value = getattr(args, "timeout", None)
    return defaults.CONNECT_TIMEOUT_S if value is None else float(value)


def endpoint(args: argparse.Namespace) -> tuple[str, int]:
    host = args.host or os.environ.get(defaults.ENV_HOST) or defaults.HOST
    port = args.port if args.port is not None else env_port()
    return host, port


def make_tracer(args: argparse.Namespace) -> Tracer | None:
    if not getattr(args, "trace", False):
        return None
    from switchboard.protocol.trace import format_trace

    with_hex = bool(getattr(args, "trace_hex", False))

    def tracer(direction: str, event: Event, raw: bytes | None) -> None:
        line = format_trace(direction, event, raw, with_hex=with_hex)
        print(f"{local_timestamp()} {line}", file=sys.stderr, flush=True)

    return tracer


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not getattr(args, "tls", False):
        if getattr(args, "cafile", None) or getattr(args, "insecure", False):
            raise CliExit(2, "--cafile and --insecure need --tls")
        return None
    try:
        return client_ssl_context(cafile=args.cafile, insecure=args.insecure)
    except (OSError, ssl.SSLError) as exc:
        raise CliExit(2, f"cannot load the CA file {args.cafile}: {exc}") from None


def token(args: argparse.Namespace) -> str | None:
    return getattr(args, "token", None) or os.environ.get(defaults.ENV_TOKEN) or None


def auth_hint(exc: AuthError, *, token_given: bool) -> str:
    """Why a server that demands a token did not let us in, and what to do about it."""
    env = f"${defaults.ENV_TOKEN}"
    if exc.code == ErrorCode.AUTH_FAILED and token_given:
        return f"the server refused the token ({exc.name}): check --token or {env}"
    return f"the server requires a token ({exc.name}): pass --token or set {env}"


def connect(args: argparse.Namespace, *, retry_full_s: float = 0.0, **kwargs: Any) -> Client:
    """A connected Client for the command's --host/--port, or CliExit(NO_SESSION) with one
    clear line.  ``--timeout`` bounds connecting (one deadline for TCP, TLS and WELCOME)
    and each response, the HELLO's included.

    A full server is tried again every second for up to ``retry_full_s`` seconds (saying so
    on stderr once), since a slot frees as soon as someone leaves.
    """
    host, port = endpoint(args)
    where = host_port(host, port)
    kwargs.setdefault("token", token(args))
    kwargs.setdefault("trace", make_tracer(args))
    kwargs.setdefault("ssl_context", ssl_context(args))  # the CA file read once, not per retry
    kwargs.setdefault("local_address", getattr(args, "bind", None))
    deadline = time.monotonic() + retry_full_s
    announced = False
    try:
        while True:
            try:
                return Client(
                    host,
                    port,
                    timeout=request_timeout(args),
                    connect_timeout=connect_timeout(args),
                    **kwargs,
                )
            except ServerFull as exc:
                if time.monotonic() + FULL_RETRY_S > deadline:
                    raise
                if not announced:
                    announced = True
                    print(
                        f"switchboard: {where} is full ({safe(exc.message)}); trying again "
                        f"every {FULL_RETRY_S:g}s for up to {retry_full_s:g}s",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(FULL_RETRY_S)  # a retry interval, not a guess at timing
    except ConnectionFailed as exc:
        raise CliExit(ExitCode.NO_SESSION, f"cannot connect: {exc}") from None
    except (ConnectionLost, RequestTimeout) as exc:  # during the HELLO: still no session
        raise CliExit(ExitCode.NO_SESSION, f"cannot connect to {where}: {exc}") from None
    except AuthError as exc:
        hint = auth_hint(exc, token_given=kwargs.get("token") is not None)
        raise CliExit(ExitCode.NO_SESSION, f"cannot connect to {where}: {hint}") from None
    except NicknameError as exc:
        raise CliExit(
            ExitCode.NO_SESSION,
            f"{where} refused the nickname {kwargs.get('nick')!r}: {exc.message} ({exc.name}); "
            "choose another --nick",
        ) from None
    except ServerError as exc:
        raise CliExit(
            ExitCode.NO_SESSION, f"{where} refused the connection: {exc.message} ({exc.name})"
        ) from None


def emit(obj: Any) -> None:
    """One JSON value on one line, flushed at once (JSON Lines for followers)."""
    sys.stdout.write(json_line(obj) + "\n")  # peers' strings escaped, as JSON
    sys.stdout.flush()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def error_json(exc: ServerError) -> dict[str, Any]:
    return {"error": {"code": exc.name, "message": exc.message}}
