"""Error codes that go on the wire, and the exceptions of the protocol layer.

Exception tree::

    SwitchboardProtocolError
     ├── ProtocolError        the *peer* sent bytes we cannot accept (carries an ErrorCode)
     └── LocalProtocolError   *we* were asked to encode something the protocol cannot carry

A ``ProtocolError`` says how the I/O layer should answer: with an ERROR carrying
``code``, and, when ``code`` is in ``CLOSING_CODES``, by closing the connection.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Numeric error codes carried by ERROR responses (docs/PROTOCOL.md, "Error codes")."""

    BAD_FRAME = 1
    UNSUPPORTED_VERSION = 2
    FRAME_TOO_LARGE = 3
    UNKNOWN_TYPE = 4
    BAD_PAYLOAD = 5
    NO_SUCH_CLIENT = 6
    SERVER_FULL = 7
    RATE_LIMITED = 8
    RECIPIENT_BUSY = 9
    AUTH_REQUIRED = 10
    AUTH_FAILED = 11
    NICK_IN_USE = 12
    INVALID_NICK = 13
    NOT_IN_ROOM = 14
    TEXT_TOO_LONG = 15
    SHUTTING_DOWN = 16
    INVALID_ROOM = 17
    IDLE_TIMEOUT = 18
    INTERNAL_ERROR = 19
    #: The room-history store could not write (disk full, I/O error) or read: the request
    #: did nothing (a BROADCAST was neither stored nor delivered); the connection goes on.
    HISTORY_UNAVAILABLE = 20
    #: A cluster node cannot answer the request without the cluster's Redis, which it
    #: cannot reach now (docs/CLUSTER.md); retry later.
    CLUSTER_UNAVAILABLE = 21


#: Codes after which the sender of the ERROR closes the connection.  The others
#: answer one request and leave the connection usable.
CLOSING_CODES: frozenset[int] = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.SERVER_FULL,
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.AUTH_FAILED,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.IDLE_TIMEOUT,
    }
)


def error_name(code: int) -> str:
    """The symbolic name of ``code``, or ``ERROR_<n>`` for a code this version does not know."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


class SwitchboardProtocolError(Exception):
    """Base class of every error raised by ``switchboard.protocol``."""


class ProtocolError(SwitchboardProtocolError):
    """The peer sent something that breaks the protocol.

    ``request_id`` is the id of the offending frame when its header could be read
    (0 otherwise), so that the reply can be matched by the peer.
    """

    def __init__(self, code: ErrorCode, message: str, *, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def closes_connection(self) -> bool:
        return self.code in CLOSING_CODES

    def __repr__(self) -> str:
        return f"ProtocolError({self.code.name}, {self.message!r}, request_id={self.request_id})"


class LocalProtocolError(SwitchboardProtocolError, ValueError):
    """A message could not be encoded: a field is out of range or too long."""
