"""The one exception a request handler raises to answer with ERROR."""

from __future__ import annotations

from switchboard.protocol import ErrorCode


class RequestFailed(Exception):
    """Answer the current request with ERROR ``code``; the connection goes on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
