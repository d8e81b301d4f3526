"""What the blocking and the asyncio client share above the session: routing replies to
futures, receipts, the WELCOME, and failing everything at once when the connection dies.

Both futures (``concurrent.futures.Future`` and ``asyncio.Future``) offer ``set_result``,
``set_exception`` and ``done``, which is all this needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from switchboard.protocol import (
    BroadcastRequest,
    ErrorCode,
    Frame,
    HistoryMode,
    HistoryRequest,
    Message,
    Receipt,
    ReceiptStatus,
    RoomsOk,
    SendNickOk,
    SendNickRequest,
    SendOk,
    SendRequest,
    Shutdown,
    Welcome,
)

from .errors import ConnectionFailed, ConnectionLost, ServerError, SwitchboardError, error_for
from .session import ClientSession, ConnectionFault, HistoryPage, Reply, shutdown_reason

#: Receipts kept for messages nobody waits on before the oldest settled ones are forgotten.
MAX_KEPT_RECEIPTS = 10_000
#: ROOMS pages ``list_rooms`` asks for at most (256 rooms each): a server that keeps saying
#: "more" cannot keep a client asking for ever.
MAX_ROOM_PAGES = 1_000


def send_request(target: int | str, text: str) -> SendRequest | SendNickRequest:
    """SEND for a client id (an int), SEND_NICK for a nickname (a str, taken as it is: "12"
    is the nickname 12, never client #12)."""
    if isinstance(target, str):
        return SendNickRequest(target, text)
    return SendRequest(target, text)


def as_send_ok(ok: Frame) -> SendOk:
    """The answer to ``send_request``'s request as a SendOk (SendNickOk has the same fields:
    the message id and the client id the nickname resolved to)."""
    if isinstance(ok, SendNickOk):
        return SendOk(ok.message_id, ok.target, request_id=ok.request_id)
    return cast(SendOk, ok)


#: HISTORY AFTER pages ``missed`` asks for at most (1,000 lines each): catching up on more
#: than 100,000 lines is not catching up; the client shows the newest of them.
MAX_HISTORY_PAGES = 100


def history_request(
    room: str, mode: HistoryMode, anchor: int = 0, until: int = 0, limit: int = 0
) -> HistoryRequest:
    return HistoryRequest(room, mode, anchor, until, limit)


def next_after(page: HistoryPage, pages: int) -> int | None:
    """The ``anchor`` of the AFTER page that follows ``page`` (the ``pages``-th), None when
    caught up."""
    if not page.more or not page.lines or pages >= MAX_HISTORY_PAGES:
        return None
    return page.lines[-1].message_id


def missed_lines(first: HistoryPage, epoch: int) -> tuple[int, list[Message]] | None:
    """What the first AFTER page says of a catch-up from a position in store ``epoch``:
    (the store's epoch, []) when the store was reset (another epoch: the id means nothing
    there), else None (go on paging)."""
    if epoch and first.epoch != epoch:
        return first.epoch, []
    return None


def next_rooms_page(ok: RoomsOk, pages: int) -> str | None:
    """The ``after`` of the page that follows ``ok`` (the ``pages``-th), None when done."""
    if not ok.more or not ok.rooms or pages >= MAX_ROOM_PAGES:
        return None
    return ok.rooms[-1].name


class AnyFuture(Protocol):
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...
    def done(self) -> bool: ...


F = TypeVar("F", bound=AnyFuture)


class ClientCore(Generic[F]):
    """Reply routing on top of a ClientSession; subclasses bring I/O and a future type."""

    def __init__(
        self,
        new_future: Callable[[], F],
        lock: contextlib.AbstractContextManager[Any],
        on_indication: Callable[[Frame], None] | None,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self._new_future = new_future
        self._state_lock = lock
        self._on_indication = on_indication
        self._on_close = on_close
        self._session = ClientSession()
        self._futures: dict[int, F] = {}
        self._receipts: dict[int, F] = {}
        self._welcome_future: F = new_future()
        self._lost: ConnectionLost | None = None
        self._shutdown_reason: str | None = None

    @property
    def closed(self) -> bool:
        return self._lost is not None

    def _register(self, request: Frame) -> tuple[F, Frame, bytes]:
        if isinstance(request, SendRequest | SendNickRequest | BroadcastRequest):
            self._check_text(request.text)
        future = self._new_future()
        with self._state_lock:
            if self._lost is not None:
                raise self._lost
            request_id, msg, data = self._session.prepare(request)
            self._futures[request_id] = future
        return future, msg, data

    def _forget(self, request_id: int) -> None:
        with self._state_lock:
            self._futures.pop(request_id, None)
            self._session.forget(request_id)

    def _check_text(self, text: object) -> None:
        """Refuse, before anything is sent, a SEND or BROADCAST text the server would refuse,
        with the error it would answer: TextTooLong over ``WELCOME.max_text`` bytes, and
        ProtocolRejected (BAD_PAYLOAD) for text that has no UTF-8 form (lone surrogates,
        as ``surrogateescape`` makes of bytes that are not UTF-8)."""
        if not isinstance(text, str):
            return  # not text at all: the encoder refuses it with LocalProtocolError
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise error_for(
                ErrorCode.BAD_PAYLOAD, f"text is not valid Unicode ({exc.reason})"
            ) from None
        welcome = self._session.welcome
        if welcome is not None and size > welcome.max_text:
            raise error_for(
                ErrorCode.TEXT_TOO_LONG, f"text is {size} bytes of UTF-8 (max {welcome.max_text})"
            )

    def _dispatch(self, meaning: Any) -> None:
        if isinstance(meaning, Reply):
            with self._state_lock:
                future = self._futures.pop(meaning.request_id, None)
            if future is None or future.done():
                return
            if isinstance(meaning.result, ServerError):
                future.set_exception(meaning.result)
            else:
                if isinstance(meaning.result, SendOk | SendNickOk):
                    self._receipt_future(meaning.result.message_id)
                future.set_result(meaning.result)
        elif isinstance(meaning, ConnectionFault):
            if not self._welcome_future.done():
                self._welcome_future.set_exception(meaning.error)
            self._fail_all(f"{meaning.error.name}: {meaning.error.message}", meaning.error)
        else:
            frame = cast(Frame, meaning)
            if isinstance(frame, Welcome):
                if not self._welcome_future.done():
                    self._welcome_future.set_result(frame)
                return
            if isinstance(frame, Receipt):
                receipt = self._receipt_future(frame.message_id)
                if not receipt.done():
                    receipt.set_result(ReceiptStatus(frame.status))
            elif isinstance(frame, Shutdown):
                self._shutdown_reason = shutdown_reason(frame)
            if self._on_indication is not None:
                self._on_indication(frame)
            else:
                self._queue_indication(frame)

    def _queue_indication(self, frame: Frame) -> None:
        raise NotImplementedError

    def _queue_closed(self) -> None:
        raise NotImplementedError

    def _receipt_future(self, message_id: int) -> F:
        with self._state_lock:
            future = self._receipts.get(message_id)
            if future is None:
                future = self._receipts[message_id] = self._new_future()
                if self._lost is not None:  # no receipt can come any more: fail, never hang
                    future.set_exception(self._lost)
                if len(self._receipts) > MAX_KEPT_RECEIPTS:
                    settled = [k for k, f in self._receipts.items() if f.done()]
                    for key in settled[: MAX_KEPT_RECEIPTS // 2]:
                        del self._receipts[key]
            return future

    def _fail_all(self, reason: str, cause: SwitchboardError | None = None) -> ConnectionLost:
        """Mark the connection lost and fail every pending request and receipt at once."""
        with self._state_lock:
            if self._lost is not None:
                return self._lost
            if self._shutdown_reason is not None:
                reason = self._shutdown_reason
            self._lost = lost = ConnectionLost(reason)
            futures = list(self._futures.values())
            self._futures.clear()
            receipts = [f for f in self._receipts.values() if not f.done()]
        for future in futures + receipts:
            if not future.done():
                future.set_exception(lost)
        if not self._welcome_future.done():
            self._welcome_future.set_exception(cause or ConnectionFailed(reason))
        self._queue_closed()
        if self._on_close is not None:
            # Once per connection, on whichever thread noticed the end (the receiver for a
            # loss, the caller for close()), after every pending call has been failed.
            self._on_close(lost.reason)
        return lost
