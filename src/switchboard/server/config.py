"""The server's settings: defaults from switchboard.defaults, a TOML file, then the command line."""

from __future__ import annotations

import dataclasses
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard import defaults
from switchboard.protocol import HEADER_SIZE


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything a running server needs to know; validated on construction."""

    host: str = defaults.HOST
    port: int = defaults.PORT
    name: str = field(default_factory=socket.gethostname)
    max_clients: int = defaults.MAX_CLIENTS
    max_per_address: int = defaults.MAX_PER_ADDRESS
    max_per_prefix: int = defaults.MAX_PER_PREFIX
    limit_loopback: bool = defaults.LIMIT_LOOPBACK
    #: None: defaults.UNAUTHENTICATED_SHARE of max_clients (see ``unauthenticated_limit``).
    max_unauthenticated: int | None = None
    heartbeat: float = defaults.HEARTBEAT_S
    max_frame: int = defaults.MAX_FRAME
    max_text: int = defaults.MAX_TEXT
    history: int = defaults.ROOM_HISTORY
    history_bytes: int = defaults.HISTORY_BYTES
    max_rooms: int = defaults.MAX_ROOMS
    max_rooms_per_client: int = defaults.MAX_ROOMS_PER_CLIENT
    write_high_water: int = defaults.WRITE_HIGH_WATER
    write_hard_limit: int = defaults.WRITE_HARD_LIMIT
    max_unacked: int = defaults.MAX_UNACKED
    shutdown_grace: float = defaults.SHUTDOWN_GRACE_S
    rate: float = defaults.RATE
    burst: int = defaults.BURST
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT_S
    frame_timeout: float = defaults.FRAME_TIMEOUT_S
    auth_token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    log_repeat_burst: int = defaults.LOG_REPEAT_BURST
    log_repeat_interval: float = defaults.LOG_REPEAT_INTERVAL_S

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"port must be 0-65535, not {self.port}"),
            (self.max_clients >= 1, f"max_clients must be at least 1, not {self.max_clients}"),
            (
                self.max_per_address >= 1,
                f"max_per_address must be at least 1, not {self.max_per_address}",
            ),
            (
                self.max_per_prefix >= 1,
                f"max_per_prefix must be at least 1, not {self.max_per_prefix}",
            ),
            (
                self.max_unauthenticated is None or self.max_unauthenticated >= 1,
                f"max_unauthenticated must be at least 1, not {self.max_unauthenticated}",
            ),
            (
                defaults.MIN_HEARTBEAT_S <= self.heartbeat <= defaults.MAX_HEARTBEAT_S,
                f"heartbeat must be {defaults.MIN_HEARTBEAT_S:g}-{defaults.MAX_HEARTBEAT_S:g} "
                f"seconds, not {self.heartbeat:g}",
            ),
            (
                HEADER_SIZE + 64 <= self.max_frame <= 0xFFFFFFFF,
                f"max_frame must be {HEADER_SIZE + 64}-4294967295 bytes, not {self.max_frame}",
            ),
            (self.max_text >= 1, f"max_text must be at least 1, not {self.max_text}"),
            (self.history >= 0, f"history must be 0 or more, not {self.history}"),
            (
                self.history_bytes >= 0,
                f"history_bytes must be 0 or more, not {self.history_bytes}",
            ),
            (self.max_rooms >= 1, f"max_rooms must be at least 1, not {self.max_rooms}"),
            (
                self.max_rooms_per_client >= 1,
                f"max_rooms_per_client must be at least 1, not {self.max_rooms_per_client}",
            ),
            (
                0 < self.write_high_water < self.write_hard_limit,
                "write_high_water must be positive and below write_hard_limit",
            ),
            (self.max_unacked >= 1, f"max_unacked must be at least 1, not {self.max_unacked}"),
            (self.rate >= 0, f"rate must be 0 (off) or positive, not {self.rate}"),
            (self.burst >= 1, f"burst must be at least 1, not {self.burst}"),
            (self.handshake_timeout > 0, "handshake_timeout must be positive"),
            (self.frame_timeout > 0, "frame_timeout must be positive"),
            (
                (self.tls_cert is None) == (self.tls_key is None),
                "tls_cert and tls_key go together",
            ),
            (self.log_format in ("text", "json"), "log_format must be 'text' or 'json'"),
            (
                1 <= self.log_repeat_burst <= 1_000_000,
                f"log_repeat_burst must be 1-1000000, not {self.log_repeat_burst}",
            ),
            (
                0.1 <= self.log_repeat_interval <= 86_400,
                f"log_repeat_interval must be 0.1-86400 seconds, not {self.log_repeat_interval:g}",
            ),
            (
                self.log_level.lower() in ("debug", "info", "warning", "error", "critical"),
                f"unknown log level {self.log_level!r}",
            ),
            (0 < len(self.name.encode()) <= 255, "name must be 1-255 bytes of UTF-8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        for f in dataclasses.fields(cls):
            if f.name in values:
                values[f.name] = _coerce(f.name, values[f.name], _FIELD_TYPES[f.name])
        return cls(**values)


_FIELD_TYPES: dict[str, type] = {
    "host": str,
    "port": int,
    "name": str,
    "max_clients": int,
    "max_per_address": int,
    "max_per_prefix": int,
    "limit_loopback": bool,
    "max_unauthenticated": int,
    "heartbeat": float,
    "max_frame": int,
    "max_text": int,
    "history": int,
    "history_bytes": int,
    "max_rooms": int,
    "max_rooms_per_client": int,
    "write_high_water": int,
    "write_hard_limit": int,
    "max_unacked": int,
    "shutdown_grace": float,
    "rate": float,
    "burst": int,
    "handshake_timeout": float,
    "frame_timeout": float,
    "auth_token_file": str,
    "tls_cert": str,
    "tls_key": str,
    "log_level": str,
    "log_format": str,
    "log_repeat_burst": int,
    "log_repeat_interval": float,
}


def _coerce(name: str, value: Any, kind: type) -> Any:
    if kind is bool and isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{name} must be {kind.__name__}, not {type(value).__name__} {value!r}")


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
