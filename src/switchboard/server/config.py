"""The server's settings, each declared once, as a field of ``ServerConfig``.

A setting's declaration (``setting(...)`` below) gives its default, help text, bounds and
whether it is one of the limits the docs tabulate; its name and type are the field's.  From
that one list come the ``switchboard serve`` options (``--max-clients``, built by
cli/serve.py from ``SETTINGS``), the TOML keys of a ``--config`` file (``max-clients``, or
``max_clients``), the checks and their messages, and the tests that keep README.md,
docs/PROTOCOL.md, docs/SECURITY.md and docs/switchboard.example.toml in step
(tests/unit/test_settings_docs.py, tests/unit/test_example_config.py).  The values come from
switchboard.defaults.

Precedence: the command line, then $SWITCHBOARD_HOST/$SWITCHBOARD_PORT (the settings with an
``env``), then the TOML file, then the default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import socket
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard import defaults
from switchboard.protocol import HEADER_SIZE

from .cluster_url import parse_cluster_url

#: What a node name may hold: it is part of Redis keys and of log lines.
NODE_NAME = re.compile(r"[A-Za-z0-9._:-]+")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range."""


def _number(x: float) -> str:
    """``65536``, ``4294967295``, ``0.1``, ``10``: as a person writes it (``:g`` alone writes
    4294967295 as 4.29497e+09)."""
    if isinstance(x, float) and not (math.isfinite(x) and x.is_integer()):
        return f"{x:g}"
    return str(int(x))


@dataclass(frozen=True, slots=True)
class Setting:
    """One server setting: everything the options, the TOML loader, the checks and the docs
    need to know about it.  ``name`` and ``kind`` come from its ``ServerConfig`` field."""

    help: str
    #: The field's name (``max_clients``) and its type, less ``None`` (``int``).
    name: str = ""
    kind: type = object
    default: Any = None
    #: A short option besides the long one (``-H``).
    short: str | None = None
    metavar: str | None = None
    #: Bounds (of the value; of its UTF-8 length for a string), both inclusive.
    minimum: float | None = None
    maximum: float | None = None
    #: Above zero, with no other bound (a timeout).
    positive: bool = False
    #: What 0 means when it is allowed and special ("off").
    zero_means: str | None = None
    #: The unit the messages name ("seconds", "bytes").
    unit: str = ""
    #: The values allowed, compared without case (and stored in lower case).
    choices: tuple[str, ...] = ()
    #: The environment variable read when the command line does not give it.
    env: str | None = None
    #: The default as --help says it, where it is not a fixed value ("this host's name").
    default_text: str | None = None
    #: A bound on what clients can cost: each limits table in the docs names it.
    limit: bool = False

    @property
    def key(self) -> str:
        """The TOML key (``max-clients``; ``max_clients`` is read as well)."""
        return self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """The command-line options: ``("-H", "--host")``, ``("--max-clients",)``."""
        long = f"--{self.key}"
        return (self.short, long) if self.short else (long,)

    def bounds_text(self) -> str:
        """``0.1-86400 seconds``, ``at least 1``, ``0 (off) or more``, ``positive``."""
        unit = f" {self.unit}" if self.unit else ""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"{_number(lo)}-{_number(hi)}{unit}"
        if self.positive:
            return "positive"
        if lo == 0:
            return f"0 ({self.zero_means}) or more" if self.zero_means else "0 or more"
        if lo is not None:
            return f"at least {_number(lo)}"
        return ""

    def help_text(self) -> str:
        """The --help line: the help, then the range and the default in parentheses."""
        parts = []
        if self.minimum is not None and self.maximum is not None and self.kind is not str:
            parts.append(f"{_number(self.minimum)}-{_number(self.maximum)}")
        shown = self.default_text
        if shown is None and self.default is not None and self.kind is not bool:
            shown = _number(self.default) if self.kind is float else str(self.default)
        if shown is not None:
            parts.append(f"default ${self.env} or {shown}" if self.env else f"default {shown}")
        return f"{self.help} ({', '.join(parts)})" if parts else self.help

    def problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be this setting's value, or None if it can."""
        if value is None:
            return None
        if self.choices:
            if str(value).lower() in self.choices:
                return None
            allowed = ", ".join(repr(c) for c in self.choices[:-1])
            return f"{self.name} must be {allowed} or {self.choices[-1]!r}, not {value!r}"
        if self.kind is str:
            measure: float = len(str(value).encode())
            shown = str(int(measure))
        else:
            measure = value
            shown = _number(value)
        lo, hi = self.minimum, self.maximum
        ok = (
            (lo is None or measure >= lo)
            and (hi is None or measure <= hi)
            and (not self.positive or measure > 0)
        )
        if ok and not (self.kind is float and not math.isfinite(measure)):
            return None
        if ok:  # infinite, with no upper bound to name
            return f"{self.name} must be a finite number of {self.unit or 'units'}, not {shown}"
        return f"{self.name} must be {self.bounds_text()}, not {shown}"


def setting(
    default: Any = None, *, factory: Callable[[], Any] | None = None, **declaration: Any
) -> Any:
    """Declare a ``ServerConfig`` field as a setting (``declaration``: ``Setting``'s fields)."""
    spec = Setting(default=default, **declaration)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"setting": spec})
    return dataclasses.field(default=default, metadata={"setting": spec})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a running server needs to know; validated on construction.

    Each field is one setting, declared here once (see the module docstring)."""

    host: str = setting(
        defaults.HOST, short="-H", env=defaults.ENV_HOST,
        help="address to bind; '::' for IPv6, '0.0.0.0' for every IPv4 address",
    )  # fmt: skip
    port: int = setting(
        defaults.PORT, short="-p", env=defaults.ENV_PORT, minimum=0, maximum=65535,
        help="TCP port; 0 picks a free one",
    )  # fmt: skip
    name: str = setting(
        factory=socket.gethostname, minimum=1, maximum=255, unit="bytes of UTF-8",
        default_text="this host's name", help="server name sent to clients",
    )  # fmt: skip
    max_clients: int = setting(
        defaults.MAX_CLIENTS, minimum=1, metavar="N", limit=True,
        help="clients admitted at once",
    )  # fmt: skip
    #: None: max_clients within defaults.MIN_AUTO_BACKLOG-MAX_AUTO_BACKLOG (``listen_backlog``).
    backlog: int | None = setting(
        None, minimum=0, maximum=defaults.MAX_BACKLOG, metavar="N",
        default_text=f"--max-clients, within {defaults.MIN_AUTO_BACKLOG}-"
        f"{defaults.MAX_AUTO_BACKLOG}",
        help="listen() backlog: connections the kernel completes and queues before the "
        "server accepts them (Linux queues backlog + 1, capped by net.core.somaxconn)",
    )  # fmt: skip
    max_per_address: int = setting(
        defaults.MAX_PER_ADDRESS, minimum=1, metavar="N", limit=True,
        help="connections one address may hold; loopback exempt unless --limit-loopback",
    )  # fmt: skip
    max_per_prefix: int = setting(
        defaults.MAX_PER_PREFIX, minimum=1, metavar="N", limit=True,
        help=f"connections one /{defaults.PREFIX_IPV4} (IPv4) or /{defaults.PREFIX_IPV6} (IPv6) "
        "may hold; loopback exempt unless --limit-loopback",
    )  # fmt: skip
    limit_loopback: bool = setting(
        defaults.LIMIT_LOOPBACK,
        help="apply --max-per-address/--max-per-prefix to loopback peers too",
    )
    #: None: defaults.UNAUTHENTICATED_SHARE of max_clients (see ``unauthenticated_limit``).
    max_unauthenticated: int | None = setting(
        None, minimum=1, metavar="N", limit=True,
        default_text=f"{defaults.UNAUTHENTICATED_SHARE * 100:g}% of --max-clients",
        help="with tokens: connections that may wait to authenticate at once; one more "
        "closes the oldest waiting",
    )  # fmt: skip
    heartbeat: float = setting(
        defaults.HEARTBEAT_S, minimum=defaults.MIN_HEARTBEAT_S, maximum=defaults.MAX_HEARTBEAT_S,
        unit="seconds", metavar="SECONDS", limit=True,
        help=f"PING after this much silence; close after {defaults.HEARTBEAT_MISSES}x",
    )  # fmt: skip
    max_frame: int = setting(
        defaults.MAX_FRAME, minimum=HEADER_SIZE + 64, maximum=0xFFFFFFFF,  # a u32 length
        unit="bytes", metavar="BYTES", limit=True,
        help="largest frame accepted, header included",
    )  # fmt: skip
    max_text: int = setting(
        defaults.MAX_TEXT, minimum=1, metavar="BYTES", limit=True,
        help="longest message text in UTF-8 bytes",
    )  # fmt: skip
    history: int = setting(
        defaults.ROOM_HISTORY, minimum=0, metavar="N", limit=True,
        help="messages each room keeps for replay",
    )  # fmt: skip
    history_bytes: int = setting(
        defaults.HISTORY_BYTES, minimum=0, metavar="BYTES", limit=True,
        help="history all rooms keep together; past it the least recently active rooms "
        "lose their oldest messages",
    )  # fmt: skip
    data_dir: str | None = setting(
        None, metavar="DIR",
        default_text=f"$XDG_STATE_HOME/switchboard, '{defaults.DATA_DIR_NONE}' keeps history in "
        "memory only",
        help=f"directory of the room-history database ({defaults.HISTORY_DB_FILE}, SQLite); "
        "not with --cluster, whose history is in Redis",
    )  # fmt: skip
    history_keep: int = setting(
        defaults.HISTORY_KEEP, minimum=1, metavar="N", limit=True,
        help="lines each room keeps in the history database (with --cluster: in its stream "
        "in Redis, about as many)",
    )  # fmt: skip
    history_sync: str = setting(
        defaults.HISTORY_SYNC, choices=("normal", "full"),
        help="when a stored line counts as committed: 'normal', written to the database's "
        "log (survives a crash of the server), or 'full', also flushed to the disk (survives "
        "a power cut)",
    )  # fmt: skip
    history_max_age: float = setting(
        defaults.HISTORY_MAX_AGE_S, minimum=0, zero_means="kept whatever their age",
        unit="seconds", metavar="SECONDS", limit=True,
        help="seconds a line stays in the history database (with --cluster: in Redis, whose "
        "stream of a room expires as long after its last line), 0 = no age limit",
    )  # fmt: skip
    max_rooms: int = setting(
        defaults.MAX_ROOMS, minimum=1, metavar="N", limit=True,
        help="rooms on the server at once",
    )  # fmt: skip
    max_rooms_per_client: int = setting(
        defaults.MAX_ROOMS_PER_CLIENT, minimum=1, metavar="N", limit=True,
        help="rooms one connection may be in",
    )  # fmt: skip
    write_high_water: int = setting(
        defaults.WRITE_HIGH_WATER, minimum=1, metavar="BYTES", limit=True,
        help="bytes queued for a client above which SENDs to it get RECIPIENT_BUSY",
    )  # fmt: skip
    write_hard_limit: int = setting(
        defaults.WRITE_HARD_LIMIT, minimum=1, metavar="BYTES", limit=True,
        help="bytes queued for a client at which it is disconnected as too slow",
    )  # fmt: skip
    max_unacked: int = setting(
        defaults.MAX_UNACKED, minimum=1, metavar="N", limit=True,
        help="messages a client may leave unacknowledged; SENDs to it past that get "
        "RECIPIENT_BUSY",
    )  # fmt: skip
    shutdown_grace: float = setting(
        defaults.SHUTDOWN_GRACE_S, minimum=0, maximum=defaults.MAX_SHUTDOWN_GRACE_S,
        unit="seconds", metavar="SECONDS", limit=True,
        help="on shutdown, the time clients get to receive SHUTDOWN before every "
        "connection is closed",
    )  # fmt: skip
    rate: float = setting(
        defaults.RATE, minimum=0, zero_means="off", unit="requests per second",
        metavar="PER_SECOND", limit=True,
        help="requests/s one connection may sustain, 0 = unlimited",
    )  # fmt: skip
    burst: int = setting(
        defaults.BURST, minimum=1, metavar="N", limit=True,
        help="requests one connection may send at once",
    )  # fmt: skip
    handshake_timeout: float = setting(
        defaults.HANDSHAKE_TIMEOUT_S, positive=True, unit="seconds", metavar="SECONDS",
        limit=True,
        help="with tokens: close clients that have not authenticated after this long; "
        "with TLS: the time a TLS handshake may take; with --http: the time an HTTP "
        "connection may stay open unless it becomes a WebSocket",
    )  # fmt: skip
    frame_timeout: float = setting(
        defaults.FRAME_TIMEOUT_S, positive=True, unit="seconds", metavar="SECONDS", limit=True,
        help="close a connection whose frame stays half-sent this long",
    )  # fmt: skip
    auth_token_file: str | None = setting(
        None, metavar="FILE",
        help="require clients to present one of these tokens (one per line) in HELLO",
    )  # fmt: skip
    tls_cert: str | None = setting(
        None, metavar="FILE", help="serve TLS with this certificate (PEM; with --tls-key)"
    )
    tls_key: str | None = setting(None, metavar="FILE", help="the certificate's private key (PEM)")
    http: str = setting(
        defaults.HTTP, metavar="HOST:PORT",
        help="serve the web chat page, its WebSocket (/ws), /metrics, /healthz and /readyz "
        "here ([::1]:8080 for IPv6, port 0 picks a free one; TLS with --tls-cert); "
        f"'{defaults.HTTP_OFF}' turns it off",
    )  # fmt: skip
    http_allow_origin: str | None = setting(
        None, metavar="ORIGINS",
        default_text="the page's own origin only",
        help="comma-separated origins (https://chat.example.org) whose pages may open /ws "
        "besides the server's own; '*' for any",
    )  # fmt: skip
    http_trusted_proxy: str | None = setting(
        None, metavar="ADDRESSES",
        default_text="none",
        help="comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose "
        "X-Forwarded-For names the WebSocket client's address",
    )  # fmt: skip
    log_level: str = setting(
        "info", choices=("debug", "info", "warning", "error", "critical"), help="log verbosity"
    )
    log_format: str = setting(
        "text", choices=("text", "json"),
        help="log line format: one line of text, or one JSON object, per event",
    )  # fmt: skip
    log_repeat_burst: int = setting(
        defaults.LOG_REPEAT_BURST, minimum=1, maximum=defaults.MAX_LOG_REPEAT_BURST,
        metavar="N", limit=True,
        help="lines of one kind from one client or network logged in full per interval; "
        "the rest are counted",
    )  # fmt: skip
    log_repeat_interval: float = setting(
        defaults.LOG_REPEAT_INTERVAL_S, minimum=defaults.MIN_LOG_REPEAT_INTERVAL_S,
        maximum=defaults.MAX_LOG_REPEAT_INTERVAL_S, unit="seconds", metavar="SECONDS",
        limit=True, help="the interval of --log-repeat-burst",
    )  # fmt: skip
    cluster: str | None = setting(
        None, env=defaults.ENV_CLUSTER, metavar="URL", default_text="none: a single server",
        help="join the cluster whose shared state is in this Redis, as a node "
        "(redis://[:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS; docs/CLUSTER.md)",
    )  # fmt: skip
    node_name: str | None = setting(
        None, minimum=1, maximum=defaults.MAX_NODE_NAME_BYTES, unit="bytes of UTF-8",
        metavar="NAME", default_text="HOST:PORT:PID",
        help="with --cluster: this node's name, unique in the cluster (letters, digits, "
        "'.', '_', ':', '-')",
    )  # fmt: skip
    workers: int = setting(
        1, minimum=1, maximum=defaults.MAX_WORKERS, metavar="N",
        help="with --cluster: run N node processes sharing the port (SO_REUSEPORT), "
        "supervised: one that dies is restarted",
    )  # fmt: skip
    reuse_port: bool = setting(
        False,
        help="bind with SO_REUSEPORT, so that other processes of this user may listen on the "
        "same port (what --workers does for its workers)",
    )  # fmt: skip
    cluster_lease: float = setting(
        defaults.CLUSTER_LEASE_S, minimum=defaults.MIN_CLUSTER_LEASE_S,
        maximum=defaults.MAX_CLUSTER_LEASE_S, unit="seconds", metavar="SECONDS",
        help="with --cluster: a node silent this long is dead; its clients leave the "
        "cluster",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.name)
            message = s.problem(value)
            if message is not None:
                raise ConfigError(message)
            if s.choices:
                object.__setattr__(self, s.name, value.lower())
        # Settings that bound one another.
        if self.write_high_water >= self.write_hard_limit:
            raise ConfigError("write_high_water must be positive and below write_hard_limit")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together")
        # The HTTP settings are read here once, so that a mistake is a usage error at start.
        object.__setattr__(self, "http", self.http.strip().lower() or defaults.HTTP_OFF)
        http_endpoint(self.http)
        allowed_origins(self.http_allow_origin)
        trusted_proxies(self.http_trusted_proxy)
        if self.cluster is not None:
            try:
                parse_cluster_url(self.cluster)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.workers > 1 and self.cluster is None:
            raise ConfigError(
                "--workers needs --cluster: worker processes share clients, nicknames and "
                "rooms only through a cluster's Redis"
            )
        if self.node_name is not None and not NODE_NAME.fullmatch(self.node_name):
            raise ConfigError(
                f"node_name may hold letters, digits, '.', '_', ':' and '-', not {self.node_name!r}"
            )

    @property
    def listen_backlog(self) -> int:
        """The backlog passed to listen(): ``backlog``, or max_clients within the defaults'
        bounds."""
        if self.backlog is not None:
            return self.backlog
        return min(defaults.MAX_AUTO_BACKLOG, max(defaults.MIN_AUTO_BACKLOG, self.max_clients))

    @property
    def unauthenticated_limit(self) -> int:
        """Connections that may wait to authenticate at once (on a token server)."""
        if self.max_unauthenticated is not None:
            return self.max_unauthenticated
        return max(1, int(self.max_clients * defaults.UNAUTHENTICATED_SHARE))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then the TOML file at ``path``, then ``overrides`` that are not None."""
        values: dict[str, Any] = {}
        if path is not None:
            values.update(read_toml(Path(path)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**{k: _coerce(k, v, BY_NAME[k].kind) for k, v in values.items()})


def _declared() -> tuple[Setting, ...]:
    """The declarations of ``ServerConfig``'s fields, completed with each one's name and type."""
    hints = typing.get_type_hints(ServerConfig)
    out = []
    for f in dataclasses.fields(ServerConfig):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # ``int | None``: the value's type is int
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        if "setting" not in f.metadata:
            raise TypeError(f"ServerConfig.{f.name} is not declared with setting()")
        out.append(dataclasses.replace(f.metadata["setting"], name=f.name, kind=kind))
    return tuple(out)


#: Every setting, in the order --help lists them.
SETTINGS: tuple[Setting, ...] = _declared()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{name} must be {kind.__name__}, not {type(value).__name__} {value!r}")


def http_endpoint(value: str) -> tuple[str, int] | None:
    """``--http``'s (host, port), or None for "off": ``127.0.0.1:8080``, ``[::1]:8080``,
    ``:8080`` (every address), ``localhost:0``."""
    if value.strip().lower() == defaults.HTTP_OFF:
        return None
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"http must be HOST:PORT ([::1]:8080 for IPv6) or {defaults.HTTP_OFF!r}, not {value!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"http: put an IPv6 address in brackets ([{host}]:{port_text})")
    return host, int(port_text)


def _items(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def allowed_origins(value: str | None) -> frozenset[str]:
    """``--http-allow-origin``'s origins (scheme://host[:port], lower case, no slash), or
    ``{"*"}`` for any."""
    origins = set()
    for item in _items(value):
        origin = item.rstrip("/").lower()
        if origin != "*" and not (
            origin.startswith(("http://", "https://")) and "/" not in origin.split("://", 1)[1]
        ):
            raise ConfigError(
                f"http_allow_origin: {item!r} is not an origin like https://chat.example.org"
            )
        origins.add(origin)
    return frozenset(origins)


def trusted_proxies(
    value: str | None,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``--http-trusted-proxy``'s networks (an address is a network of one)."""
    networks = []
    for item in _items(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"http_trusted_proxy: {item!r} is not an address or network"
            ) from None
    return tuple(networks)


def load_tokens(path: str) -> frozenset[bytes]:
    """The tokens in ``path``: one per line; blank lines and lines starting with # skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the token file {path} is not UTF-8") from exc
    tokens = frozenset(
        line.strip().encode()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not tokens:
        raise ConfigError(f"the token file {path} holds no token")
    return tokens


def read_toml(path: Path) -> dict[str, Any]:
    """Settings from a TOML file; keys mirror the command-line options (``max-clients``)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("server", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [server] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        out[key.replace("-", "_")] = value
    return out
