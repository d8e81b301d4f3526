"""``switchboard chat`` learns where it is in a room's history at start (a HISTORY request for
the store's epoch, right after its JOIN) before it shows any line of the room: a line shown
before is remembered by an id that names no store, and after a server restart the chat
showed the room's replay again instead of what it missed.  That happened when the chat's
request went out late (a loaded machine) and the server stopped before answering it; here a
forwarder between chat and server holds that request, deterministically.  When the request
fails, the chat says so in one line and never hides later lines behind the ids it showed."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from support.catch_up import WAIT_S
from support.commands import Chat
from support.network import free_port
from support.servers import ServerProcess, fresh_data_dir
from switchboard.client import Client
from switchboard.protocol import (
    HEADER_SIZE,
    ErrorCode,
    ErrorResponse,
    FrameDecoder,
    MessageClass,
    MessageType,
    encode,
)

HISTORY_REQUEST = MessageClass.REQUEST << 16 | MessageType.HISTORY


class HistoryInterceptor:
    """A TCP forwarder to a server's port, frame by frame, that intercepts the first HISTORY
    request of the first connection through it: held (with every later frame of that
    connection) until ``release()``, or, with ``refuse``, answered HISTORY_UNAVAILABLE in
    the server's place.  Later connections (a reconnecting client) pass untouched."""

    def __init__(self, target_port: int, *, refuse: bool = False) -> None:
        self.target_port = target_port
        self.refuse = refuse
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.intercepted = threading.Event()
        self._released = threading.Event()
        self._first = True
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                far = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                near.close()  # as a refused connection: the client tries again later
                continue
            self._sockets += [near, far]
            # Whole frames only, one writer at a time: an injected answer fits between two.
            to_client = threading.Lock()
            intercept, self._first = self._first, False
            for src, dst, first in ((near, far, intercept), (far, near, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, to_client, first), daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, to_client: threading.Lock, intercept: bool
    ) -> None:
        decoder = FrameDecoder()
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                decoder.feed(data)
                buffer = decoder.buffer
                frames = [
                    (key, request_id, bytes(buffer[start - HEADER_SIZE : end]))
                    for key, request_id, start, end in decoder.frames()
                ]
                for key, request_id, frame in frames:
                    if intercept and key == HISTORY_REQUEST:
                        intercept = False
                        self.intercepted.set()
                        if self.refuse:
                            refusal = ErrorResponse.of(
                                ErrorCode.HISTORY_UNAVAILABLE,
                                "injected by the test",
                                request_id=request_id,
                            )
                            with to_client:
                                src.sendall(encode(refusal))
                            continue
                        self._released.wait(WAIT_S)
                    with to_client:
                        dst.sendall(frame)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def interceptor() -> Iterator[Callable[..., HistoryInterceptor]]:
    made: list[HistoryInterceptor] = []

    def make(target_port: int, *, refuse: bool = False) -> HistoryInterceptor:
        made.append(HistoryInterceptor(target_port, refuse=refuse))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def _stop_chat(chat: Chat) -> None:
    if chat.proc.poll() is None:
        chat.proc.kill()
        chat.proc.wait(WAIT_S)


def test_a_chat_whose_epoch_request_is_late_shows_no_room_line_before_it_then_catches_up(
    server_process_factory: Callable[..., ServerProcess],
    interceptor: Callable[..., HistoryInterceptor],
) -> None:
    data_dir = fresh_data_dir()
    port = free_port()

    def serve() -> ServerProcess:
        return server_process_factory("--data-dir", data_dir, "--port", str(port))

    sp = serve()
    proxy = interceptor(port)
    chat = Chat(proxy.port, "erin", "--room", "den")
    try:
        chat.joined()
        assert proxy.intercepted.wait(WAIT_S), "the chat never asked for the room's history"
        with Client("127.0.0.1", port, nick="frank", timeout=5) as frank:
            frank.join("den")
            frank.broadcast("den", "old news")
            # Said after "old news" on the same connection: once the chat shows it, it has
            # read "old news" too (private lines are never held).
            frank.send(chat.client_id, "marker")
            chat.expect(r"frank\(#\d+\) → you: marker$")
            assert "old news" not in chat.text(), "a room line shown before the epoch was known"
            proxy.release()
            chat.expect(r"frank\(#\d+\): old news$")
        sp.stop(signal.SIGTERM)
        chat.expect(r"^\* Connection lost: .*; reconnecting in \d")
        elsewhere = server_process_factory("--data-dir", data_dir)
        with Client("127.0.0.1", elsewhere.port, nick="frank", timeout=5) as frank:
            frank.join("den")
            frank.broadcast("den", "said during the restart")
        elsewhere.stop(signal.SIGTERM)
        serve()
        chat.expect(r"^\* Reconnected as erin\(#\d+\), rejoined den$", timeout=WAIT_S)
        chat.expect(r"^\* 1 line\(s\) said in den while you were away:$")
        chat.expect(r"\(missed\) frank\(#\d+\): said during the restart$")
        assert chat.finish() == 0
        assert chat.count("old news") == 1, chat.text()
        assert "Could not" not in chat.text()
    finally:
        _stop_chat(chat)


def test_a_chat_says_its_epoch_request_failed_and_hides_nothing_after_a_reset(
    server_process_factory: Callable[..., ServerProcess],
    interceptor: Callable[..., HistoryInterceptor],
) -> None:
    """The start-up HISTORY refused: said in one line; the ids shown afterwards name no
    known store, so back on a reset store (ids from 1 again) no new line is taken for one
    shown already."""
    port = free_port()
    sp = server_process_factory("--data-dir", fresh_data_dir(), "--port", str(port))
    proxy = interceptor(port, refuse=True)
    chat = Chat(proxy.port, "ivy", "--room", "den")
    try:
        chat.joined()
        chat.expect(
            r"^\* Could not read the history of den \(injected by the test "
            r"\(HISTORY_UNAVAILABLE\)\); after a reconnection its latest lines will be shown "
            r"again instead of what you missed\.$"
        )
        with Client("127.0.0.1", port, nick="jack", timeout=5) as jack:
            jack.join("den")
            for n in range(3):
                jack.broadcast("den", f"old store {n}")
            chat.expect(r"jack\(#\d+\): old store 2$")
        sp.stop(signal.SIGTERM)
        chat.expect(r"^\* Connection lost: .*; reconnecting in \d")
        server_process_factory("--data-dir", fresh_data_dir(), "--port", str(port))
        chat.expect(r"^\* Reconnected as ivy\(#\d+\), rejoined den$", timeout=WAIT_S)
        with Client("127.0.0.1", port, nick="jack", timeout=5) as jack:
            jack.join("den")
            jack.broadcast("den", "first on the new store")  # id 1: below the ids shown
            jack.broadcast("den", "second on the new store")
            chat.expect(r"jack\(#\d+\): second on the new store$")
        assert chat.finish() == 0
        assert chat.count("first on the new store") == 1, chat.text()
        assert chat.count("Could not") == 1, chat.text()
    finally:
        _stop_chat(chat)
