"""The blocking client: a plain socket, a receiver thread, and queues (the lab's design).

The caller's thread writes requests and waits on a per-request future; the receiver
thread reads, decodes, answers PING/ACK by itself, completes futures and queues
indications.  The receiver never waits on the caller.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, TypeVar, cast

from switchboard import defaults
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    ClientInfo,
    Frame,
    HelloOk,
    HelloRequest,
    HistoryMode,
    JoinOk,
    JoinRequest,
    LeaveOk,
    LeaveRequest,
    ListOk,
    ListRequest,
    Message,
    NameOk,
    NameRequest,
    NickOk,
    NickRequest,
    PingOk,
    PingRequest,
    ProtocolError,
    ReceiptStatus,
    RoomInfo,
    RoomsOk,
    RoomsRequest,
    SendOk,
    TimeOk,
    TimeRequest,
    Welcome,
)
from switchboard.protocol.trace import host_port

from .channel import SocketChannel, TlsChannel
from .core import (
    ClientCore,
    as_send_ok,
    history_request,
    missed_lines,
    next_after,
    next_rooms_page,
    send_request,
)
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    RequestTimeout,
    connect_failure,
)
from .session import HistoryPage, ServerTime
from .tracing import Tracer, trace_received, trace_sent

R = TypeVar("R", bound=Frame)
_CLOSED = object()


def open_socket(
    host: str, port: int, timeout: float, local_address: tuple[str, int] | None = None
) -> socket.socket:
    """Connect (from ``local_address`` when given: bound before connecting), translating
    every failure into ConnectionFailed."""
    where = host_port(host, port)
    try:
        sock = socket.create_connection((host, port), timeout=timeout, source_address=local_address)
    except TimeoutError as exc:
        raise ConnectionFailed(f"timed out connecting to {where}") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionFailed(f"connection refused by {where}") from exc
    except socket.gaierror as exc:
        raise ConnectionFailed(f"cannot resolve {host!r}: {exc.strerror}") from exc
    except OSError as exc:
        raise connect_failure(exc, where, local_address) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


class Client(ClientCore["Future[Any]"]):
    """A blocking Switchboard client.  Use as a context manager, or call ``close()``.

    ``connect_timeout`` bounds the TCP connect, the TLS handshake and the wait for WELCOME
    together (ConnectionFailed past it); ``timeout`` bounds each response, the HELLO's too.

    ``local_address`` (host, port) binds the socket before it connects (port 0: any free
    one); without it the kernel picks the address and an ephemeral port at connect().

    ``on_indication(frame)`` receives every indication on the receiver thread (instead of
    ``next_indication``); ``on_close(reason)`` is called once when the connection ends, lost
    or closed, on the thread that noticed.  Neither may block or raise.
    """

    def __init__(
        self,
        host: str = defaults.HOST,
        port: int = defaults.PORT,
        *,
        nick: str | None = None,
        token: str | None = None,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        connect_timeout: float = defaults.CONNECT_TIMEOUT_S,
        on_indication: Callable[[Frame], None] | None = None,
        on_close: Callable[[str], None] | None = None,
        trace: Tracer | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_address: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(Future, threading.Lock(), on_indication, on_close)
        self.host = host
        self.port = port
        self.timeout = timeout
        self._trace = trace
        self._indications: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        # One deadline for the TCP connect, the TLS handshake and the WELCOME, so that
        # ``connect_timeout`` is what a caller waits at most before the session starts.
        deadline = time.monotonic() + connect_timeout
        sock = open_socket(host, port, connect_timeout, local_address)
        if ssl_context is None:
            self._channel: SocketChannel = SocketChannel(sock)
        else:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                self._channel = TlsChannel(sock, ssl_context, host)
            except BaseException:
                sock.close()
                raise
            sock.settimeout(None)
        self._receiver = threading.Thread(
            target=self._receive_loop, name=f"switchboard-receiver-{host}:{port}", daemon=True
        )
        self._receiver.start()
        try:
            self.welcome: Welcome = self._welcome_future.result(
                max(0.0, deadline - time.monotonic())
            )
        except FutureTimeout:
            self.close()
            raise ConnectionFailed(
                f"{host_port(host, port)} sent no WELCOME within {connect_timeout:g}s "
                "(not a Switchboard server, or one that needs --tls?)"
            ) from None
        except BaseException:
            self.close()
            raise
        if nick is not None or token is not None:
            try:
                self.hello(nick=nick or "", token=token or "")
            except BaseException:
                self.close()
                raise

    # --- identity ----------------------------------------------------------------------------

    @property
    def client_id(self) -> int:
        return self.welcome.client_id

    @property
    def server_name(self) -> str:
        return self.welcome.server_name

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: Frame) -> Future[Frame]:
        """Send ``request`` without waiting; the future holds its OK result or error.

        A SEND or BROADCAST text the server would refuse raises at once, nothing sent:
        TextTooLong over ``welcome.max_text``, ProtocolRejected if it is not valid Unicode."""
        future, msg, data = self._register(request)
        self._write(data, msg)
        return future

    def request(self, request: Frame, response_type: type[R], timeout: float | None = None) -> R:
        """Send ``request`` and wait for its response."""
        future = self.submit(request)
        return cast(R, self.result(future, timeout))

    def result(self, future: Future[Frame], timeout: float | None = None) -> Frame:
        """The answer in a future from ``submit``, waiting up to ``timeout`` seconds (default:
        the client's); RequestTimeout past it, the server's ERROR as its ServerError."""
        limit = self.timeout if timeout is None else timeout
        try:
            return future.result(limit)
        except FutureTimeout:
            raise RequestTimeout(f"no response within {limit:g}s") from None

    def hello(self, *, nick: str = "", token: str = "") -> HelloOk:
        return self.request(HelloRequest(nick=nick, token=token), HelloOk)

    def time(self) -> ServerTime:
        return ServerTime.from_ok(self.request(TimeRequest(), TimeOk))

    def time_many(self, count: int, timeout: float | None = None) -> list[ServerTime]:
        """``count`` pipelined TIME requests: all sent at once, answers in order."""
        futures = [self.submit(TimeRequest()) for _ in range(count)]
        return [ServerTime.from_ok(cast(TimeOk, self.result(f, timeout))) for f in futures]

    def name(self) -> str:
        return self.request(NameRequest(), NameOk).name

    def list_clients(self, room: str | None = None) -> list[ClientInfo]:
        return list(self.request(ListRequest(room or ""), ListOk).clients)

    def send(self, target: int | str, text: str) -> SendOk:
        """Forward ``text`` to ``target``: a client id (int) or a nickname (str, resolved by
        the server when it forwards: SEND_NICK); returns once the server has forwarded it,
        with the id the message went to.  NoSuchClient if nobody has that id or nickname."""
        return as_send_ok(self.request(send_request(target, text), Frame))

    def rooms(self, after: str = "") -> RoomsOk:
        """One page of the server's rooms (ROOMS): those whose names sort after ``after``."""
        return self.request(RoomsRequest(after), RoomsOk)

    def list_rooms(self) -> list[RoomInfo]:
        """Every room on the server, in name order (page after page of ``rooms``)."""
        ok = self.rooms()
        found = list(ok.rooms)
        pages = 1
        while (after := next_rooms_page(ok, pages)) is not None:
            ok = self.rooms(after)
            found += ok.rooms
            pages += 1
        return found

    def wait_receipt(self, message_id: int, timeout: float | None = None) -> ReceiptStatus:
        """Wait for the RECEIPT of a message sent with ``send``: its status (DELIVERED or
        NOT_DELIVERED), RequestTimeout past ``timeout``.  The RECEIPT is an indication too:
        ``next_indication`` and iteration yield it as well, waited for or not."""
        future = self._receipt_future(message_id)
        limit = self.timeout if timeout is None else timeout
        try:
            return cast(ReceiptStatus, future.result(limit))
        except FutureTimeout:
            raise RequestTimeout(f"no receipt for message {message_id} within {limit:g}s") from None

    def set_nick(self, nick: str) -> str:
        return self.request(NickRequest(nick), NickOk).nick

    def join(self, room: str) -> JoinOk:
        return self.request(JoinRequest(room), JoinOk)

    def leave(self, room: str) -> LeaveOk:
        return self.request(LeaveRequest(room), LeaveOk)

    def history(
        self,
        room: str,
        mode: HistoryMode = HistoryMode.LATEST,
        anchor: int = 0,
        until: int = 0,
        limit: int = 0,
    ) -> HistoryPage:
        """One page of ``room``'s stored history (HISTORY; members only): the HistoryOk and
        its lines, oldest first."""
        future = self.submit(history_request(room, mode, anchor, until, limit))
        return cast(HistoryPage, self.result(future))  # the session gathers the lines

    def missed(self, room: str, after: int, epoch: int = 0) -> tuple[int, list[Message]]:
        """The lines of ``room`` after id ``after`` (HISTORY AFTER, page after page), with the
        store's epoch.  ``epoch``: the one ``after`` came from; when the store's is another
        (it was reset), no line is returned: ``after`` means nothing there.  Join first;
        live MESSAGEs that arrive meanwhile may repeat the newest of these (same ids)."""
        page = self.history(room, HistoryMode.AFTER, after)
        reset = missed_lines(page, epoch)
        if reset is not None:
            return reset
        lines = list(page.lines)
        pages = 1
        while (anchor := next_after(page, pages)) is not None:
            page = self.history(room, HistoryMode.AFTER, anchor)
            lines += page.lines
            pages += 1
        return page.epoch, lines

    def broadcast(self, room: str, text: str) -> BroadcastOk:
        return self.request(BroadcastRequest(room, text), BroadcastOk)

    def ping(self) -> float:
        """Round-trip time of a PING request, in seconds."""
        start = time.perf_counter()
        self.request(PingRequest(), PingOk)
        return time.perf_counter() - start

    # --- indications -------------------------------------------------------------------------

    def next_indication(self, timeout: float | None = None) -> Frame | None:
        """The next indication (MESSAGE, RECEIPT, JOINED, ...), None on timeout.  Every
        indication comes here once, RECEIPTs included (also those ``wait_receipt`` returned).

        Raises ConnectionLost once the connection is gone and every indication was read.
        """
        try:
            item = self._indications.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._indications.put(_CLOSED)  # keep telling later callers
            assert self._lost is not None
            raise self._lost
        return cast(Frame, item)

    def __iter__(self) -> Iterator[Frame]:
        """Indications as they arrive, until the connection closes."""
        while True:
            try:
                item = self.next_indication()
            except ConnectionLost:
                return
            if item is not None:
                yield item

    # --- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and join the receiver thread."""
        self._fail_all("closed by client")
        self._channel.close()
        if self._receiver.is_alive() and threading.current_thread() is not self._receiver:
            self._receiver.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the receiver thread -----------------------------------------------------------------

    def _write(self, data: bytes, msg: Frame | None = None) -> None:
        """Write under the send lock (caller and receiver threads both write)."""
        if self._trace is not None and msg is not None:
            trace_sent(self._trace, msg, data)
        try:
            with self._send_lock:
                self._channel.send(data)
        except OSError as exc:
            lost = self._fail_all(f"connection lost while sending: {exc.strerror or exc}")
            raise lost from exc

    def _receive_loop(self) -> None:
        reason = "connection closed by server"
        try:
            while True:
                data = self._channel.recv()
                if not data:
                    break
                for event, meaning in self._session.receive(data):
                    if self._trace is not None and event is not None:
                        trace_received(self._trace, event)
                    if meaning is not None:
                        self._dispatch(meaning)
                if self._channel.silence_limit is None:
                    self._channel.silence_limit = self._session.silence_limit
                auto = self._session.take_outgoing()
                if auto:
                    if self._trace is not None:
                        for msg, raw in auto:
                            trace_sent(self._trace, msg, raw)
                    self._write(b"".join(raw for _, raw in auto))
        except ProtocolError as exc:
            reason = f"protocol error from server: {exc.code.name}: {exc.message}"
        except ConnectionLost as exc:
            reason = exc.reason
        except OSError as exc:
            if self._lost is None:
                reason = f"connection lost: {exc.strerror or exc}"
        except Exception as exc:
            # An on_indication callback (or a bug) raised: without its receiver the
            # connection is dead, so fail everything now instead of letting requests time out,
            # and let the thread report the traceback.
            self._fail_all(f"receiver stopped: {exc.__class__.__name__}: {exc}")
            with contextlib.suppress(OSError):
                self._channel.sock.close()
            raise
        self._fail_all(reason)
        with contextlib.suppress(OSError):
            self._channel.sock.close()

    def _queue_indication(self, frame: Frame) -> None:
        self._indications.put(frame)

    def _queue_closed(self) -> None:
        self._indications.put(_CLOSED)
