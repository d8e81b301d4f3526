"""The asyncio server: listener and lifecycle (app), one connection object per client
(connection), the registry of clients and rooms (registry), one handler per request type
(handlers), heartbeats (heartbeat) and structured logs (logs)."""

from .app import SwitchboardServer, run
from .config import SETTINGS, ConfigError, ServerConfig, Setting

__all__ = ["SETTINGS", "ConfigError", "ServerConfig", "Setting", "SwitchboardServer", "run"]
