"""The asyncio server.  Its modules, from bytes to state (each imports only those after it):

- app: the listener and lifecycle (admit, heartbeat, shut down); the only one that knows
  the server object.
- tls: a TLS handshake per connection before the connection gets its transport.
- connection: one per client: bytes in (the split loop), bytes out, back-pressure, through
  a transport (transport.Transport); owns its state (states.ConnectionState).
- handlers: what each request is answered (its docstring says where TIME, SEND and ACK are).
- directory: who is connected, under which nickname, in which rooms, and how a frame reaches
  a client id or a room: the one interface (directory.Directory) handlers and app use for
  all of it; directory.LocalDirectory, this process's dicts, is its first implementation.
- registry: the local directory's tables (ClientRegistry, RoomRegistry) and Peer, what the
  directory knows of a connection.
- cluster, cluster_url, cluster_ops, workers: a server as a node of a cluster whose shared
  state is in Redis (``serve --cluster``, docs/CLUSTER.md): cluster.RedisDirectory is the
  directory's second implementation.
- states, transport, admission, config, logs, errors: the pieces they share.

What the rest of the package (cli/) may use is exported here; the modules are internals.
"""

from .app import SwitchboardServer, run
from .config import SETTINGS, ConfigError, ServerConfig, Setting
from .connection import ClientConnection, Tracer
from .http import HttpListenError
from .logs import TextFormatter, local_timestamp
from .registry import Peer


def run_workers(config: ServerConfig, *, extra: list[str]) -> int:
    """``serve --workers N``: supervise N node processes (server/workers.py; imported only
    then, so that a single server never loads the supervisor or the Redis client)."""
    from .workers import run_workers as supervise

    return supervise(config, extra=extra)


__all__ = [
    "SETTINGS",
    "ClientConnection",
    "ConfigError",
    "HttpListenError",
    "Peer",
    "ServerConfig",
    "Setting",
    "SwitchboardServer",
    "TextFormatter",
    "Tracer",
    "local_timestamp",
    "run",
    "run_workers",
]
