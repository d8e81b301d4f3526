"""A connection's states and the transitions between them, as one table (h11's _state.py).

docs/PROTOCOL.md ("Connection life") shows the same table; tests/unit/test_server_dispatch.py
checks that the two agree.  ``ClientConnection`` (server/connection.py) moves between them
only through its transition methods, which check this table.

The values are ordered so that the hot path asks one comparison: a batch of requests goes
on while ``state <= READY``, and frames may still be queued for a client while
``state < CLOSING``.
"""

from __future__ import annotations

import enum
from typing import Final


class ConnectionState(enum.IntEnum):
    """Where one client connection is in its life."""

    #: Admitted on a server that needs a token: only HELLO is answered (anything else is
    #: AUTH_REQUIRED and closes).
    HANDSHAKE = 1
    #: Every request is answered; MESSAGEs may be forwarded to it.
    READY = 2
    #: Its HELLO is held by the failed-HELLO throttle (server/admission.py): nothing more is
    #: read from it until the HELLO is answered; what is sent to it is still written.
    HELD = 3
    #: Closing (an ERROR that closes, a shutdown, a slow reader dropped): nothing more is
    #: read or queued.
    CLOSING = 4
    #: The transport is gone; the server has released it.
    CLOSED = 5


S = ConnectionState

#: state -> the states it may move to, and the event that moves it.
TRANSITIONS: Final[dict[ConnectionState, dict[ConnectionState, str]]] = {
    S.HANDSHAKE: {
        S.READY: "HELLO with a valid token",
        S.HELD: "HELLO held by the failed-HELLO throttle",
        S.CLOSING: "AUTH_REQUIRED, AUTH_FAILED, timeout, eviction, shutdown",
        S.CLOSED: "connection lost",
    },
    S.HELD: {
        S.HANDSHAKE: "the hold ends: the HELLO is answered",
        S.CLOSING: "timeout, eviction, shutdown",
        S.CLOSED: "connection lost",
    },
    S.READY: {
        S.CLOSING: "an ERROR that closes, timeout, too slow, shutdown",
        S.CLOSED: "connection lost",
    },
    S.CLOSING: {S.CLOSED: "connection lost"},
    S.CLOSED: {},
}


def initial_state(needs_token: bool) -> ConnectionState:
    """Where a new connection starts: HANDSHAKE on a server that needs a token, else READY."""
    return S.HANDSHAKE if needs_token else S.READY
