"""Exceptions raised by the client library, one class per error-code family.

Exception tree::

    SwitchboardError
     ├── ConnectionFailed        could not connect: refused, unreachable, timed out, bad address,
     │                           the local address (``local_address``) could not be bound
     ├── ConnectionLost          the connection broke or was closed; pending requests fail with it
     ├── RequestTimeout          no response within the timeout (the connection stays usable)
     └── ServerError             the server answered ERROR (``code``, ``name``, ``message``)
          ├── ProtocolRejected   BAD_FRAME, UNSUPPORTED_VERSION, FRAME_TOO_LARGE, UNKNOWN_TYPE,
          │                      BAD_PAYLOAD (also raised locally, for text that is not valid
          │                      Unicode), INTERNAL_ERROR, and codes this version does not know
          ├── NoSuchClient       NO_SUCH_CLIENT
          ├── ServerFull         SERVER_FULL
          ├── RateLimited        RATE_LIMITED
          ├── RecipientBusy      RECIPIENT_BUSY
          ├── AuthError          AUTH_REQUIRED, AUTH_FAILED
          ├── NicknameError      NICK_IN_USE, INVALID_NICK
          ├── RoomError          NOT_IN_ROOM, INVALID_ROOM
          ├── TextTooLong        TEXT_TOO_LONG (also raised locally, before sending)
          ├── HistoryUnavailable HISTORY_UNAVAILABLE
          ├── ShuttingDown       SHUTTING_DOWN, IDLE_TIMEOUT
          └── ClusterUnavailable CLUSTER_UNAVAILABLE (a cluster node lost its Redis; retry)
"""

from __future__ import annotations

import errno
from typing import Final

from switchboard.protocol import ErrorCode, ErrorResponse, error_name
from switchboard.protocol.trace import host_port


class SwitchboardError(Exception):
    """Base class of every error the client library raises."""


class ConnectionFailed(SwitchboardError):
    """The connection could not be established."""


#: What bind() answers for a local address it cannot give (EADDRINUSE: taken, or held by a
#: TIME_WAIT of an earlier connection; EADDRNOTAVAIL: not an address of this machine;
#: EACCES: a port below 1024 without the privilege): said as "cannot bind", not "connect".
BIND_ERRNOS: Final = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def connect_failure(
    exc: OSError, where: str, local_address: tuple[str, int] | None
) -> ConnectionFailed:
    """The ConnectionFailed for an OSError of connecting (or of binding ``local_address``
    first) to ``where``."""
    if local_address is not None and exc.errno in BIND_ERRNOS:
        local = host_port(*local_address)
        return ConnectionFailed(f"cannot bind {local}: {exc.strerror or exc}")
    return ConnectionFailed(f"cannot connect to {where}: {exc.strerror or exc}")


class ConnectionLost(SwitchboardError):
    """The connection is gone; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestTimeout(SwitchboardError):
    """No response arrived in time."""


class ServerError(SwitchboardError):
    """The server answered a request (or the connection) with ERROR."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.code = code
        self.name = name
        self.message = message


class ProtocolRejected(ServerError):
    """The server could not accept what was sent (or failed itself)."""


class NoSuchClient(ServerError):
    """No client with that id is connected."""


class ServerFull(ServerError):
    """The server has reached its client limit; try again later."""


class RateLimited(ServerError):
    """Too many requests; slow down."""


class RecipientBusy(ServerError):
    """The recipient is not reading; try again later."""


class AuthError(ServerError):
    """A token is required, or the one given was refused."""


class NicknameError(ServerError):
    """The nickname is taken or not valid."""


class RoomError(ServerError):
    """Not a member of that room, or not a valid room name."""


class TextTooLong(ServerError):
    """The text exceeds the server's limit."""


class HistoryUnavailable(ServerError):
    """The server's history store could not write or read (disk full): a BROADCAST that got
    it was neither stored nor delivered, so sending it again cannot duplicate it."""


class ShuttingDown(ServerError):
    """The server is shutting down (or closed an idle connection)."""


class ClusterUnavailable(ServerError):
    """A cluster node cannot reach the cluster's Redis for this request; retry later."""


_BY_CODE: dict[int, type[ServerError]] = {
    ErrorCode.NO_SUCH_CLIENT: NoSuchClient,
    ErrorCode.SERVER_FULL: ServerFull,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.RECIPIENT_BUSY: RecipientBusy,
    ErrorCode.AUTH_REQUIRED: AuthError,
    ErrorCode.AUTH_FAILED: AuthError,
    ErrorCode.NICK_IN_USE: NicknameError,
    ErrorCode.INVALID_NICK: NicknameError,
    ErrorCode.NOT_IN_ROOM: RoomError,
    ErrorCode.INVALID_ROOM: RoomError,
    ErrorCode.TEXT_TOO_LONG: TextTooLong,
    ErrorCode.HISTORY_UNAVAILABLE: HistoryUnavailable,
    ErrorCode.SHUTTING_DOWN: ShuttingDown,
    ErrorCode.IDLE_TIMEOUT: ShuttingDown,
    ErrorCode.CLUSTER_UNAVAILABLE: ClusterUnavailable,
}


def error_for(code: int, message: str, name: str | None = None) -> ServerError:
    """The exception for an ERROR with ``code`` (ProtocolRejected for unknown codes)."""
    cls = _BY_CODE.get(code, ProtocolRejected)
    return cls(code, name or error_name(code), message)


def from_response(response: ErrorResponse) -> ServerError:
    return error_for(response.code, response.message, response.name or None)
