"""``switchboard serve``: run the server."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from switchboard import defaults
from switchboard.protocol import Event
from switchboard.protocol.trace import format_trace, host_port
from switchboard.server import (
    ConfigError,
    Peer,
    ServerConfig,
    Tracer,
    local_timestamp,
    run,
)

from .common import add_trace_args, listen_port_number


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the Switchboard server",
        description="Run the Switchboard server. Each setting comes from, in this order: the "
        f"command line, ${defaults.ENV_HOST}/${defaults.ENV_PORT} (host and port only, as "
        "every client command reads them), the --config file, the built-in default.",
    )
    p.add_argument(
        "-H",
        "--host",
        help=f"address to bind (default ${defaults.ENV_HOST} or {defaults.HOST}; '::' for IPv6)",
    )
    p.add_argument(
        "-p",
        "--port",
        type=listen_port_number,
        help=f"TCP port (default ${defaults.ENV_PORT} or {defaults.PORT}; 0 picks one)",
    )
    p.add_argument("--name", help="server name sent to clients (default: this host's name)")
    p.add_argument(
        "--max-clients",
        type=int,
        help=f"clients admitted at once (default {defaults.MAX_CLIENTS})",
    )
    p.add_argument(
        "--max-per-address",
        type=int,
        metavar="N",
        help=f"connections one address may hold (default {defaults.MAX_PER_ADDRESS}; "
        "loopback exempt unless --limit-loopback)",
    )
    p.add_argument(
        "--max-per-prefix",
        type=int,
        metavar="N",
        help=f"connections one /{defaults.PREFIX_IPV4} (IPv4) or /{defaults.PREFIX_IPV6} (IPv6) "
        f"may hold (default {defaults.MAX_PER_PREFIX}; loopback exempt unless --limit-loopback)",
    )
    p.add_argument(
        "--limit-loopback",
        action="store_true",
        default=None,
        help="apply --max-per-address/--max-per-prefix to loopback peers too",
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        metavar="N",
        help="with tokens: connections that may wait to authenticate at once; one more "
        "closes the oldest waiting (default: "
        f"{defaults.UNAUTHENTICATED_SHARE * 100:g}%% of --max-clients)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        metavar="SECONDS",
        help=f"PING after this much silence; close after 3x ({defaults.MIN_HEARTBEAT_S:g}-"
        f"{defaults.MAX_HEARTBEAT_S:g}, default {defaults.HEARTBEAT_S:g})",
    )
    p.add_argument(
        "--max-frame",
        type=int,
        metavar="BYTES",
        help=f"largest frame accepted, header included (default {defaults.MAX_FRAME})",
    )
    p.add_argument(
        "--max-text",
        type=int,
        metavar="BYTES",
        help=f"longest message text in UTF-8 bytes (default {defaults.MAX_TEXT})",
    )
    p.add_argument(
        "--history",
        type=int,
        metavar="N",
        help=f"messages each room keeps for replay (default {defaults.ROOM_HISTORY})",
    )
    p.add_argument(
        "--history-bytes",
        type=int,
        metavar="BYTES",
        help=f"history all rooms keep together; past it the least recently active rooms "
        f"lose their oldest messages (default {defaults.HISTORY_BYTES})",
    )
    p.add_argument(
        "--max-rooms",
        type=int,
        metavar="N",
        help=f"rooms on the server at once (default {defaults.MAX_ROOMS})",
    )
    p.add_argument(
        "--max-rooms-per-client",
        type=int,
        metavar="N",
        help=f"rooms one connection may be in (default {defaults.MAX_ROOMS_PER_CLIENT})",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="PER_SECOND",
        help=f"requests/s one connection may sustain, 0 = unlimited (default {defaults.RATE:g})",
    )
    p.add_argument(
        "--burst",
        type=int,
        metavar="N",
        help=f"requests one connection may send at once (default {defaults.BURST})",
    )
    p.add_argument(
        "--write-high-water",
        type=int,
        metavar="BYTES",
        help=f"bytes queued for a client above which SENDs to it get RECIPIENT_BUSY "
        f"(default {defaults.WRITE_HIGH_WATER})",
    )
    p.add_argument(
        "--write-hard-limit",
        type=int,
        metavar="BYTES",
        help=f"bytes queued for a client at which it is disconnected as too slow "
        f"(default {defaults.WRITE_HARD_LIMIT})",
    )
    p.add_argument(
        "--frame-timeout",
        type=float,
        metavar="SECONDS",
        help=f"close a connection whose frame stays half-sent this long "
        f"(default {defaults.FRAME_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="require clients to present one of these tokens (one per line) in HELLO",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        metavar="SECONDS",
        help=f"with tokens: close clients that have not authenticated after this long; "
        f"with TLS: the time a TLS handshake may take (default {defaults.HANDSHAKE_TIMEOUT_S:g})",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default info)",
    )
    p.add_argument("--log-format", choices=["text", "json"], help="log line format (default text)")
    p.add_argument(
        "--log-repeat-burst",
        type=int,
        metavar="N",
        help="lines of one kind from one client or network logged in full per interval; "
        f"the rest are counted (default {defaults.LOG_REPEAT_BURST})",
    )
    p.add_argument(
        "--log-repeat-interval",
        type=float,
        metavar="SECONDS",
        help=f"the interval of --log-repeat-burst (default {defaults.LOG_REPEAT_INTERVAL_S:g})",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the options")
    add_trace_args(p)
    p.set_defaults(func=main)


def make_server_tracer(args: argparse.Namespace) -> Tracer | None:
    """``--trace``: one line per frame on stderr, naming the client it came from or went to."""
    if not args.trace:
        return None
    with_hex = bool(args.trace_hex)

    def tracer(direction: str, conn: Peer, event: Event, raw: bytes) -> None:
        peer = f"#{conn.client_id} {host_port(conn.ip, conn.port)}"
        line = format_trace(direction, event, raw, with_hex=with_hex, peer=peer)
        print(f"{local_timestamp()} {line}", file=sys.stderr, flush=True)

    return tracer


def env_endpoint() -> tuple[str | None, int | None]:
    """$SWITCHBOARD_HOST and $SWITCHBOARD_PORT, the variables every client command reads, so
    that one ``export`` points a server and its clients at the same place; None where unset.
    Above the config file and below the command line, as for most servers (a file is shared
    by many runs, the environment is this shell's, the command line this run's)."""
    host = os.environ.get(defaults.ENV_HOST) or None
    raw = os.environ.get(defaults.ENV_PORT)
    if not raw:
        return host, None
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{defaults.ENV_PORT}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{defaults.ENV_PORT}={raw!r} is not a port number (0-65535)")
    return host, port


def main(args: argparse.Namespace) -> int:
    try:
        env_host, env_port = env_endpoint()
        config = ServerConfig.load(
            args.config,
            host=args.host or env_host,
            port=args.port if args.port is not None else env_port,
            name=args.name,
            max_clients=args.max_clients,
            max_per_address=args.max_per_address,
            max_per_prefix=args.max_per_prefix,
            limit_loopback=args.limit_loopback,
            max_unauthenticated=args.max_unauthenticated,
            heartbeat=args.heartbeat,
            max_frame=args.max_frame,
            max_text=args.max_text,
            history=args.history,
            history_bytes=args.history_bytes,
            max_rooms=args.max_rooms,
            max_rooms_per_client=args.max_rooms_per_client,
            rate=args.rate,
            burst=args.burst,
            write_high_water=args.write_high_water,
            write_hard_limit=args.write_hard_limit,
            frame_timeout=args.frame_timeout,
            auth_token_file=args.auth_token_file,
            handshake_timeout=args.handshake_timeout,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            log_level=args.log_level,
            log_format=args.log_format,
            log_repeat_burst=args.log_repeat_burst,
            log_repeat_interval=args.log_repeat_interval,
        )
    except ConfigError as exc:
        print(f"switchboard serve: {exc}", file=sys.stderr)
        return 2
    try:
        return run(config, trace=make_server_tracer(args))
    except ConfigError as exc:
        print(f"switchboard serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"switchboard serve: cannot listen on {config.host}:{config.port}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 1
