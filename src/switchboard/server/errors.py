"""The exceptions a request handler raises: RequestFailed to answer with ERROR, AnswerLater
to answer once work elsewhere is done."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from switchboard.protocol import ErrorCode


class AnswerLater(Exception):
    """The request needs work elsewhere first (a cluster node's claim of a nickname in
    Redis): the server reserves the request's place among the connection's answers,
    awaits ``work`` (which may raise RequestFailed), then answers the request again, which
    now finds the work done (server/app.py, ``SwitchboardServer.answer_later``)."""

    def __init__(self, work: Coroutine[Any, Any, None]) -> None:
        super().__init__("answered later")
        self.work = work


class StopReading(Exception):
    """Raised inside a connection's batch once a request is answered later (AnswerLater):
    nothing more is read from the connection until that answer is given, so that later
    requests act after it, as on one server.  ``resume_at``: where the next frame starts."""

    def __init__(self, resume_at: int) -> None:
        super().__init__("stop reading")
        self.resume_at = resume_at


class RequestFailed(Exception):
    """Answer the current request with ERROR ``code``; the connection goes on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
