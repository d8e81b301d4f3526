"""What every client command shares: where to connect, how to fail, how to print."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from typing import Any, Final

from switchboard import defaults
from switchboard.client import Client, ConnectionFailed, ServerError, ServerFull
from switchboard.client.channel import client_ssl_context
from switchboard.client.tracing import Tracer
from switchboard.protocol.codec import Event

#: Seconds between attempts to connect to a full server (``connect(retry_full_s=...)``).
FULL_RETRY_S: Final = 1.0


class CliExit(Exception):
    """Stop the command with ``code`` after printing ``message`` to stderr (if any)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def env_port() -> int:
    raw = os.environ.get(defaults.ENV_PORT)
    if not raw:
        return defaults.PORT
    try:
        port = int(raw)
    except ValueError:
        raise CliExit(2, f"{defaults.ENV_PORT}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise CliExit(2, f"{defaults.ENV_PORT}={raw!r} is not a port number (1-65535)")
    return port


def add_endpoint_args(p: argparse.ArgumentParser) -> None:
    """``--host`` and ``--port``, defaulting to the environment, then the built-in defaults."""
    p.add_argument(
        "--host",
        default=None,
        help=f"server address (default ${defaults.ENV_HOST} or {defaults.HOST})",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"server port (default ${defaults.ENV_PORT} or {defaults.PORT})",
    )


def add_connection_args(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    add_endpoint_args(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=defaults.REQUEST_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up on a response after this long (default {defaults.REQUEST_TIMEOUT_S:g})",
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
        print(format_trace(direction, event, raw, with_hex=with_hex), file=sys.stderr, flush=True)

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


def connect(args: argparse.Namespace, *, retry_full_s: float = 0.0, **kwargs: Any) -> Client:
    """A connected Client for the command's --host/--port, or CliExit(2) with one clear line.

    A full server is tried again every second for up to ``retry_full_s`` seconds (saying so
    on stderr once), since a slot frees as soon as someone leaves.
    """
    host, port = endpoint(args)
    kwargs.setdefault("token", token(args))
    kwargs.setdefault("trace", make_tracer(args))
    kwargs.setdefault("ssl_context", ssl_context(args))  # the CA file read once, not per retry
    deadline = time.monotonic() + retry_full_s
    announced = False
    try:
        while True:
            try:
                return Client(
                    host,
                    port,
                    timeout=args.timeout,
                    **kwargs,
                )
            except ServerFull as exc:
                if time.monotonic() + FULL_RETRY_S > deadline:
                    raise
                if not announced:
                    announced = True
                    print(
                        f"switchboard: {host}:{port} is full ({exc.message}); trying again "
                        f"every {FULL_RETRY_S:g}s for up to {retry_full_s:g}s",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(FULL_RETRY_S)  # a retry interval, not a guess at timing
    except ConnectionFailed as exc:
        raise CliExit(2, f"cannot connect: {exc}") from None
    except ServerError as exc:
        raise CliExit(
            2, f"{host}:{port} refused the connection: {exc.message} ({exc.name})"
        ) from None


def emit(obj: Any) -> None:
    """One JSON value on one line, flushed at once (JSON Lines for followers)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def error_json(exc: ServerError) -> dict[str, Any]:
    return {"error": {"code": exc.name, "message": exc.message}}
