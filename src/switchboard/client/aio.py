"""The asyncio client: the same surface as the blocking Client, with ``await``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
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

from .core import (
    ClientCore,
    as_send_ok,
    history_request,
    missed_lines,
    next_after,
    next_rooms_page,
    send_request,
)
from .errors import ConnectionFailed, ConnectionLost, RequestTimeout, connect_failure
from .session import HistoryPage, ServerTime, silence_reason
from .tracing import Tracer, trace_received, trace_sent

R = TypeVar("R", bound=Frame)
_CLOSED = object()


class AsyncClient(ClientCore["asyncio.Future[Any]"], asyncio.Protocol):
    """An asyncio Switchboard client.  Create it with ``await AsyncClient.connect(...)``."""

    def __init__(
        self,
        *,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        on_indication: Callable[[Frame], None] | None = None,
        trace: Tracer | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        ClientCore.__init__(self, loop.create_future, contextlib.nullcontext(), on_indication)
        self.timeout = timeout
        self._trace = trace
        self._transport: asyncio.Transport | None = None
        self._indications: asyncio.Queue[Any] = asyncio.Queue()
        self._closed_event = asyncio.Event()
        self.welcome: Welcome
        #: loop.time() of the last bytes from the server, and the timer that checks it.
        self._last_heard = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(
        cls,
        host: str = defaults.HOST,
        port: int = defaults.PORT,
        *,
        nick: str | None = None,
        token: str | None = None,
        timeout: float = defaults.REQUEST_TIMEOUT_S,
        connect_timeout: float = defaults.CONNECT_TIMEOUT_S,
        on_indication: Callable[[Frame], None] | None = None,
        trace: Tracer | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_address: tuple[str, int] | None = None,
    ) -> AsyncClient:
        """Connect, wait for WELCOME, and say HELLO when a nickname or token is given.

        ``connect_timeout`` bounds the TCP connect, the TLS handshake and the WELCOME
        together; ``timeout`` bounds each response, the HELLO's too.  ``local_address``
        (host, port) binds the socket before it connects (port 0: any free one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        where = host_port(host, port)
        client = cls(timeout=timeout, on_indication=on_indication, trace=trace)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: client,
                    host,
                    port,
                    ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None,
                    local_addr=local_address,
                ),
                connect_timeout,
            )
        except TimeoutError as exc:
            raise ConnectionFailed(f"timed out connecting to {where}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionFailed(f"TLS certificate not accepted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise ConnectionFailed(f"TLS handshake failed: {exc}") from exc
        except ConnectionRefusedError as exc:
            raise ConnectionFailed(f"connection refused by {where}") from exc
        except socket.gaierror as exc:
            raise ConnectionFailed(f"cannot resolve {host!r}: {exc.strerror}") from exc
        except OSError as exc:
            raise connect_failure(exc, where, local_address) from exc
        try:
            client.welcome = await asyncio.wait_for(
                client._welcome_future, max(0.0, deadline - loop.time())
            )
            if nick is not None or token is not None:
                await client.hello(nick=nick or "", token=token or "")
        except TimeoutError:
            client._abandon()
            raise ConnectionFailed(
                f"{where} sent no WELCOME within {connect_timeout:g}s "
                "(not a Switchboard server, or one that needs --tls?)"
            ) from None
        except BaseException:
            client._abandon()
            raise
        return client

    def _abandon(self) -> None:
        """Drop a connection that never became a session, at once: no TLS close_notify
        exchange with a peer that may never answer it (``close`` would wait up to 5 s)."""
        self._fail_all("closed by client")
        if self._transport is not None:
            self._transport.abort()

    @property
    def client_id(self) -> int:
        return self.welcome.client_id

    @property
    def server_name(self) -> str:
        return self.welcome.server_name

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._last_heard = loop.time()
        try:
            for event, meaning in self._session.receive(data):
                if self._trace is not None and event is not None:
                    trace_received(self._trace, event)
                if meaning is not None:
                    self._dispatch(meaning)
        except ProtocolError as exc:
            self._fail_all(f"protocol error from server: {exc.code.name}: {exc.message}")
            if self._transport is not None:
                self._transport.abort()
            return
        auto = self._session.take_outgoing()
        if auto and self._transport is not None:
            if self._trace is not None:
                for msg, raw in auto:
                    trace_sent(self._trace, msg, raw)
            self._transport.write(b"".join(raw for _, raw in auto))
        if self._watchdog is None and self._session.silence_limit is not None:
            self._schedule_watchdog(loop, self._session.silence_limit)

    def _schedule_watchdog(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        # One timer per client, re-armed at a quarter of the limit: a server that sends
        # nothing for three heartbeat intervals is gone (see ClientSession.silence_limit).
        self._watchdog = loop.call_later(limit / 4, self._check_silence, loop, limit)

    def _check_silence(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        if self._lost is not None:
            return
        if loop.time() - self._last_heard >= limit:
            self._fail_all(silence_reason(limit))
            if self._transport is not None:
                self._transport.abort()
            return
        self._schedule_watchdog(loop, limit)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        reason = "connection closed by server" if exc is None else f"connection lost: {exc}"
        self._fail_all(reason)
        self._closed_event.set()

    # --- requests ----------------------------------------------------------------------------

    def submit(self, request: Frame) -> asyncio.Future[Frame]:
        """Send ``request`` without waiting; await the future for its result.

        A SEND or BROADCAST text the server would refuse raises at once, nothing sent:
        TextTooLong over ``welcome.max_text``, ProtocolRejected if it is not valid Unicode."""
        future, msg, data = self._register(request)
        if self._trace is not None:
            trace_sent(self._trace, msg, data)
        assert self._transport is not None
        self._transport.write(data)
        return cast("asyncio.Future[Frame]", future)

    async def request(
        self, request: Frame, response_type: type[R], timeout: float | None = None
    ) -> R:
        return cast(R, await self._wait(self.submit(request), timeout))

    async def _wait(self, future: asyncio.Future[Frame], timeout: float | None) -> Frame:
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(future), limit)
        except TimeoutError:
            raise RequestTimeout(f"no response within {limit:g}s") from None

    async def hello(self, *, nick: str = "", token: str = "") -> HelloOk:
        return await self.request(HelloRequest(nick=nick, token=token), HelloOk)

    async def time(self) -> ServerTime:
        return ServerTime.from_ok(await self.request(TimeRequest(), TimeOk))

    async def time_many(self, count: int, timeout: float | None = None) -> list[ServerTime]:
        futures = [self.submit(TimeRequest()) for _ in range(count)]
        return [ServerTime.from_ok(cast(TimeOk, await self._wait(f, timeout))) for f in futures]

    async def name(self) -> str:
        return (await self.request(NameRequest(), NameOk)).name

    async def list_clients(self, room: str | None = None) -> list[ClientInfo]:
        return list((await self.request(ListRequest(room or ""), ListOk)).clients)

    async def send(self, target: int | str, text: str) -> SendOk:
        """Forward ``text`` to ``target``: a client id (int) or a nickname (str, resolved by
        the server when it forwards: SEND_NICK); returns once the server has forwarded it,
        with the id the message went to.  NoSuchClient if nobody has that id or nickname."""
        return as_send_ok(await self.request(send_request(target, text), Frame))

    async def rooms(self, after: str = "") -> RoomsOk:
        """One page of the server's rooms (ROOMS): those whose names sort after ``after``."""
        return await self.request(RoomsRequest(after), RoomsOk)

    async def list_rooms(self) -> list[RoomInfo]:
        """Every room on the server, in name order (page after page of ``rooms``)."""
        ok = await self.rooms()
        found = list(ok.rooms)
        pages = 1
        while (after := next_rooms_page(ok, pages)) is not None:
            ok = await self.rooms(after)
            found += ok.rooms
            pages += 1
        return found

    async def wait_receipt(self, message_id: int, timeout: float | None = None) -> ReceiptStatus:
        """The RECEIPT status of a message sent with ``send`` (RequestTimeout past
        ``timeout``); ``next_indication`` and ``async for`` yield that RECEIPT as well."""
        limit = self.timeout if timeout is None else timeout
        future = self._receipt_future(message_id)
        try:
            return cast(ReceiptStatus, await asyncio.wait_for(asyncio.shield(future), limit))
        except TimeoutError:
            raise RequestTimeout(f"no receipt for message {message_id} within {limit:g}s") from None

    async def set_nick(self, nick: str) -> str:
        return (await self.request(NickRequest(nick), NickOk)).nick

    async def join(self, room: str) -> JoinOk:
        return await self.request(JoinRequest(room), JoinOk)

    async def leave(self, room: str) -> LeaveOk:
        return await self.request(LeaveRequest(room), LeaveOk)

    async def history(
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
        return cast(HistoryPage, await self._wait(future, None))  # the session's gathering

    async def missed(self, room: str, after: int, epoch: int = 0) -> tuple[int, list[Message]]:
        """As ``Client.missed``: the lines of ``room`` after id ``after``, with the epoch."""
        page = await self.history(room, HistoryMode.AFTER, after)
        reset = missed_lines(page, epoch)
        if reset is not None:
            return reset
        lines = list(page.lines)
        pages = 1
        while (anchor := next_after(page, pages)) is not None:
            page = await self.history(room, HistoryMode.AFTER, anchor)
            lines += page.lines
            pages += 1
        return page.epoch, lines

    async def broadcast(self, room: str, text: str) -> BroadcastOk:
        return await self.request(BroadcastRequest(room, text), BroadcastOk)

    async def ping(self) -> float:
        start = time.perf_counter()
        await self.request(PingRequest(), PingOk)
        return time.perf_counter() - start

    # --- indications -------------------------------------------------------------------------

    async def next_indication(self, timeout: float | None = None) -> Frame | None:
        """The next indication, None on timeout; ConnectionLost once closed and drained.
        Every indication comes here once, RECEIPTs included (also those ``wait_receipt``
        returned)."""
        try:
            item = await asyncio.wait_for(self._indications.get(), timeout)
        except TimeoutError:
            return None
        if item is _CLOSED:
            self._indications.put_nowait(_CLOSED)
            assert self._lost is not None
            raise self._lost
        return cast(Frame, item)

    async def __aiter__(self) -> AsyncIterator[Frame]:
        while True:
            try:
                item = await self.next_indication()
            except ConnectionLost:
                return
            if item is not None:
                yield item

    def _queue_indication(self, frame: Frame) -> None:
        self._indications.put_nowait(frame)

    def _queue_closed(self) -> None:
        self._indications.put_nowait(_CLOSED)

    # --- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        self._fail_all("closed by client")
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        if self._transport is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed_event.wait(), 5)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
