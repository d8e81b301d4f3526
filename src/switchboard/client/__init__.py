"""Switchboard clients: the blocking ``Client`` (socket + receiver thread + queues) and the
asyncio ``AsyncClient``, both thin shells over the sans-I/O ``ClientSession``."""

from .aio import AsyncClient
from .blocking import Client
from .errors import (
    AuthError,
    ClusterUnavailable,
    ConnectionFailed,
    ConnectionLost,
    HistoryUnavailable,
    NicknameError,
    NoSuchClient,
    ProtocolRejected,
    RateLimited,
    RecipientBusy,
    RequestTimeout,
    RoomError,
    ServerError,
    ServerFull,
    ShuttingDown,
    SwitchboardError,
    TextTooLong,
)
from .session import ClientSession, HistoryPage, ServerTime

__all__ = [
    "AsyncClient",
    "AuthError",
    "Client",
    "ClientSession",
    "ClusterUnavailable",
    "ConnectionFailed",
    "ConnectionLost",
    "HistoryPage",
    "HistoryUnavailable",
    "NicknameError",
    "NoSuchClient",
    "ProtocolRejected",
    "RateLimited",
    "RecipientBusy",
    "RequestTimeout",
    "RoomError",
    "ServerError",
    "ServerFull",
    "ServerTime",
    "ShuttingDown",
    "SwitchboardError",
    "TextTooLong",
]
