"""The client side of ``--trace``: a callable told about every frame sent and received."""

from __future__ import annotations

from collections.abc import Callable

from switchboard.protocol import Frame, encode
from switchboard.protocol.codec import Event

#: ``tracer(direction, event, raw)``: direction "->>" (sent) or "<<-" (received); ``raw`` is
#: the frame's bytes (re-encoded for received frames, which the codec makes byte-identical).
Tracer = Callable[[str, Event, bytes | None], None]


def trace_sent(tracer: Tracer, msg: Frame, data: bytes) -> None:
    tracer("->>", msg, data)


def trace_received(tracer: Tracer, event: Event) -> None:
    tracer("<<-", event, encode(event) if isinstance(event, Frame) else None)
