"""The asyncio server: listener and lifecycle (app), one connection object per client
(connection), the registry of clients and rooms (registry), one handler per request type
(handlers), heartbeats (heartbeat) and structured logs (logs).

What the rest of the package (cli/) may use is exported here; the modules are internals.
"""

from .app import SwitchboardServer, run
from .config import ConfigError, ServerConfig
from .connection import ClientConnection, Tracer
from .logs import TextFormatter, local_timestamp
from .registry import Peer

__all__ = [
    "ClientConnection",
    "ConfigError",
    "Peer",
    "ServerConfig",
    "SwitchboardServer",
    "TextFormatter",
    "Tracer",
    "local_timestamp",
    "run",
]
