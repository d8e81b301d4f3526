"""Speaking the protocol by hand: ``RawPeer`` (a client over a plain blocking socket, with no
automatic PONG or ACK), frame builders for bytes no client would send, and helpers for reading
a ``Client``'s indications."""

from __future__ import annotations

import socket
import time
from collections import deque
from types import TracebackType
from typing import Any, TypeVar

from switchboard.client import Client
from switchboard.client.session import CLIENT_MAX_FRAME
from switchboard.protocol import (
    HEADER,
    MAGIC,
    VERSION,
    ErrorCode,
    ErrorResponse,
    Event,
    Frame,
    FrameDecoder,
    ListOk,
    ListRequest,
    MessageClass,
    Ping,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

F = TypeVar("F", bound=Frame)


class RawPeer:
    """A hand-driven protocol client over a plain blocking socket."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        rcvbuf: int | None = None,
        welcome: bool = True,
        timeout: float = 5.0,
        source: str | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if source is not None:  # another loopback address (127.0.0.2, ...): another peer
            self.sock.bind((source, 0))
        if rcvbuf is not None:  # before connect, so that the advertised window is small too
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.decoder = FrameDecoder(max_frame=CLIENT_MAX_FRAME)
        self.events: deque[Event] = deque()
        self.eof = False
        self.welcome: Welcome | None = self.expect(Welcome, timeout) if welcome else None

    @property
    def client_id(self) -> int:
        assert self.welcome is not None
        return self.welcome.client_id

    def send(self, *items: Frame | bytes) -> None:
        self.sock.sendall(b"".join(encode(i) if isinstance(i, Frame) else i for i in items))

    def next(self, timeout: float = 5.0) -> Event | None:
        """The next event received, or None once the server has closed the connection."""
        deadline = time.monotonic() + timeout
        while not self.events:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing received within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                continue
            except ConnectionResetError:  # an aborted connection is a closed one
                data = b""
            if not data:
                self.eof = True
                continue
            self.decoder.feed(data)
            self.events.extend(self.decoder)
        return self.events.popleft()

    def expect(self, cls: type[F], timeout: float = 5.0, *, skip_pings: bool = True) -> F:
        """The next event, which must be a ``cls`` (PINGs skipped unless told otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()))
            if skip_pings and isinstance(event, Ping):
                continue
            assert isinstance(event, cls), f"expected {cls.__name__}, got {event!r}"
            return event

    def expect_error(self, code: ErrorCode, request_id: int, timeout: float = 5.0) -> ErrorResponse:
        err = self.expect(ErrorResponse, timeout)
        assert (err.code, err.name, err.request_id) == (int(code), code.name, request_id), err
        assert err.message, "an ERROR always says what went wrong"
        return err

    def listed(self, request_id: int = 90) -> set[int]:
        """The client ids this peer's server lists now (a LIST round trip)."""
        self.send(ListRequest(request_id=request_id))
        return {c.client_id for c in self.expect(ListOk).clients}

    def expect_closed(self, timeout: float = 5.0) -> list[Event]:
        """Read until the server closes the connection; the events received on the way."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while (event := self.next(max(0.0, deadline - time.monotonic()))) is not None:
            seen.append(event)
        return seen

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def header(
    mclass: int,
    mtype: int,
    request_id: int,
    length: int,
    *,
    magic: int = MAGIC,
    version: int = VERSION,
) -> bytes:
    return HEADER.pack(magic, version, mclass, mtype, request_id, length)


def request_frame(mtype: int, request_id: int, payload: bytes) -> bytes:
    return header(MessageClass.REQUEST, mtype, request_id, len(payload)) + payload


def assert_still_serving(peer: RawPeer, request_id: int = 900) -> None:
    """The very next frame after a TIME request is its answer: nothing else was queued."""
    peer.send(TimeRequest(request_id=request_id))
    ok = peer.expect(TimeOk)
    assert ok.request_id == request_id


def next_of(client: Client, cls: type[Frame], timeout: float = 5.0) -> Any:
    """The next indication of type ``cls`` (others are skipped), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        frame = client.next_indication(timeout=max(0.0, deadline - time.monotonic()))
        assert frame is not None, f"no {cls.__name__} within {timeout}s"
        if isinstance(frame, cls):
            return frame


def drain(client: Client) -> list[Frame]:
    """What has arrived and not been read, after a round trip (so nothing is in flight)."""
    client.ping()
    out = []
    while (frame := client.next_indication(timeout=0)) is not None:
        out.append(frame)
    return out
