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
    SETTINGS,
    ConfigError,
    HttpListenError,
    Peer,
    ServerConfig,
    Tracer,
    local_timestamp,
    run,
    run_workers,
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
    add_setting_options(p)
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the options")
    add_trace_args(p)
    p.set_defaults(func=main)


def add_setting_options(p: argparse.ArgumentParser) -> None:
    """One option per server setting, from its declaration (server/config.py).  Each
    defaults to None, "not given", so that the environment, the --config file and the
    built-in default (ServerConfig.load) can fill it in that order."""
    for setting in SETTINGS:
        extra: dict[str, Any] = {}
        if setting.kind is bool:
            extra["action"] = "store_true"
        elif setting.choices:
            extra["type"] = str.lower
            extra["choices"] = setting.choices
        else:
            # The port is read as every command reads a port to listen on.
            extra["type"] = listen_port_number if setting.name == "port" else setting.kind
            extra["metavar"] = setting.metavar
        p.add_argument(
            *setting.flags,
            dest=setting.name,
            default=None,
            help=setting.help_text().replace("%", "%%"),
            **extra,
        )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave, then the environment (host and port); None for
    the rest, which the --config file and the defaults fill in."""
    given: dict[str, Any] = {s.name: getattr(args, s.name) for s in SETTINGS}
    env_host, env_port = env_endpoint()
    if not given["host"]:  # --host "" is not given, as before the environment was read
        given["host"] = env_host
    if given["port"] is None:
        given["port"] = env_port
    for setting in SETTINGS:  # the other settings read from the environment ($SWITCHBOARD_CLUSTER)
        if setting.env and setting.name not in ("host", "port") and given[setting.name] is None:
            given[setting.name] = os.environ.get(setting.env) or None
    return given


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
        config = ServerConfig.load(args.config, **given_settings(args))
    except ConfigError as exc:
        print(f"switchboard serve: {exc}", file=sys.stderr)
        return 2
    try:
        if config.workers > 1:
            extra = ["--trace"] * bool(args.trace) + ["--trace-hex"] * bool(args.trace_hex)
            return run_workers(config, extra=extra)
        return run(config, trace=make_server_tracer(args))
    except ConfigError as exc:
        print(f"switchboard serve: {exc}", file=sys.stderr)
        return 2
    except HttpListenError as exc:
        print(f"switchboard serve: cannot listen on {exc.endpoint} (--http): {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 1
    except OSError as exc:
        print(f"switchboard serve: cannot listen on {config.host}:{config.port}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 1
