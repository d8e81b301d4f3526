"""A carrier of bytes for driving a connection without sockets."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """A carrier of bytes other than TCP (server/transport.py's Transport): what the
    connection writes is kept, and its calls recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", self.port) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert not self.closed, "written to after close"
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
