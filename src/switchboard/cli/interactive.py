"""``switchboard client``: the lab's seven-option menu as a terminal program.

Three parts:

* ``menu`` (pure): what a typed line or a menu number means in which state;
* ``InteractiveClient``: runs those actions on a blocking ``Client`` and keeps the
  connection state, which the receiver thread may change at any moment (a message arrives,
  the server shuts down, the connection breaks);
* two front ends from ``terminal``, the toolkit the chat and the lab clients share:
  ``TerminalUi`` (prompt_toolkit: history, completion, and notices printed above the line
  being typed) and ``PlainUi`` (stdin is not a terminal: one command or answer per line,
  plain text out, no escape codes).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Final, cast

from switchboard.client import (
    AuthError,
    Client,
    ConnectionFailed,
    ConnectionLost,
    NicknameError,
    NoSuchClient,
    ProtocolRejected,
    RateLimited,
    RecipientBusy,
    RequestTimeout,
    ServerError,
    ServerFull,
    ServerTime,
    TextTooLong,
)
from switchboard.client.tracing import Tracer
from switchboard.protocol import (
    ErrorCode,
    Frame,
    LocalProtocolError,
    Message,
    Receipt,
    ReceiptStatus,
    TimeOk,
    TimeRequest,
)
from switchboard.protocol.trace import host_port

from . import menu, render
from .common import (
    add_connection_args,
    auth_hint,
    connect_timeout,
    endpoint,
    make_tracer,
    request_timeout,
    ssl_context,
    token,
)
from .exitcodes import ExitCode
from .menu import CommandError
from .terminal import Output, PlainUi, Ui, plain_console, plain_stdio, run_terminal

#: Seconds ``disconnect`` and ``quit`` wait for the receipts of messages just sent, so a
#: script that sends and then ends its input still learns whether they were delivered.
RECEIPT_GRACE_S: Final = 2.0
#: Receipts that arrive before their SEND's answer has been printed are held back (so that
#: "forwarded" is printed before "delivered"); a bound in case an answer is never printed.
MAX_EARLY_RECEIPTS: Final = 1000
HISTORY_FILE: Final = "client_history"
#: Said when Ctrl-C meets an empty line, since Ctrl-C only clears the line.
LEAVE_HINT: Final = "(Ctrl-D or quit leaves)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "client",
        help="the interactive client: the lab's seven-option menu",
        description="The interactive client: connect, ask the time (pipelined), the name and "
        "the client list, send messages by id, and see messages arrive as they come.  Type "
        "a menu number or a command (help lists them).  Starts disconnected unless --host, "
        "--port or --connect is given.  With stdin not a terminal it reads one command per "
        "line, prints plain text, and exits with the first failed command's code (0 if none "
        "failed).",
    )
    add_connection_args(p, json_flag=False)
    p.add_argument(
        "--connect",
        action="store_true",
        help="connect at once to the default server ($SWITCHBOARD_HOST/$SWITCHBOARD_PORT)",
    )
    p.add_argument("--nick", type=utf8_argument, help="a nickname to connect under")
    p.set_defaults(func=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    host, port = endpoint(args)
    settings = Settings(
        host=host,
        port=port,
        timeout=request_timeout(args),
        connect_timeout=connect_timeout(args),
        nick=args.nick,
        token=token(args),
        tracer=make_tracer(args),
        ssl_context=ssl_context(args),
        local_address=args.bind,
        connect_now=args.connect or args.host is not None or args.port is not None,
    )
    if sys.stdin.isatty() and sys.stdout.isatty():
        return run_terminal(
            lambda out: InteractiveClient(settings, out), HISTORY_FILE, leave_hint=LEAVE_HINT
        )
    plain_stdio()
    out = Output(plain_console())
    client = InteractiveClient(settings, out, scripted=True)
    return client.run(PlainUi(prompts=sys.stdin.isatty()))


def utf8_argument(text: str) -> str:
    """An argparse ``type`` for text that goes on the wire (a nickname, a room): argv
    decodes bytes that are not UTF-8 as lone surrogates, refused here as a usage error."""
    try:
        return menu.require_utf8(text)
    except CommandError:
        raise argparse.ArgumentTypeError("not valid UTF-8") from None


def await_receipts(client: Client, message_ids: Iterable[int], grace: float) -> int:
    """Wait up to ``grace`` seconds in all for the receipts of ``message_ids`` (messages
    sent with ``client``); how many of them are still without one."""
    deadline = time.monotonic() + grace
    missing = 0
    for message_id in message_ids:
        try:
            # Past the deadline a receipt already in is still counted: no wait, no miss.
            client.wait_receipt(message_id, max(0.0, deadline - time.monotonic()))
        except (RequestTimeout, ConnectionLost):
            missing += 1
    return missing


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    timeout: float
    connect_timeout: float
    nick: str | None
    token: str | None
    tracer: Tracer | None
    ssl_context: Any
    #: ``--bind``: the local address every connection is made from.
    local_address: tuple[str, int] | None
    connect_now: bool


@dataclass(frozen=True, slots=True)
class Connection:
    client: Client
    host: str
    port: int
    token: object


class Cancelled(Exception):
    """The user cancelled a question."""


class InteractiveClient:
    """Runs menu actions on a blocking Client; the receiver thread reports through callbacks.

    ``scripted`` (stdin is not a terminal): ``run`` returns the exit code of the first
    command that failed (``ExitCode``: 2 could not connect or not connected, 1 refused,
    unanswered or not delivered, 3 connection lost or server shut down), so a script can
    tell; on a terminal the user has seen each failure and leaving is success (0).
    """

    def __init__(self, settings: Settings, out: Output, *, scripted: bool = False) -> None:
        self.settings = settings
        self.out = out
        self.scripted = scripted
        self.failure: ExitCode | None = None
        self._ui: Ui = PlainUi()
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._closing = False
        self._lost: list[Client] = []  # lost connections whose receiver thread is not joined
        self._pending: set[int] = set()  # message ids whose receipt has not arrived
        self._early: dict[int, Receipt] = {}
        self.known_ids: list[int] = []

    # --- state shown in the prompt ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def prompt_parts(self) -> list[tuple[str, str]]:
        conn = self._conn
        if conn is None:
            state = ("class:offline", "not connected")
        else:
            state = ("class:state", f"#{conn.client.client_id} {conn.host}:{conn.port}")
        return [("class:prompt", "switchboard ["), state, ("class:prompt", "]> ")]

    def completion_words(self) -> dict[str, object]:
        return menu.completions(self.connected, self.known_ids)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, ui: Ui) -> int:
        self._ui = ui
        try:
            self.out.line(
                "Switchboard interactive client: type a number or a command (help lists them).",
                "dim",
            )
            if self.settings.connect_now:
                self.execute(menu.Connect(self.settings.host, self.settings.port))
            else:
                self.show_menu()
            while True:
                self._reap()
                line = ui.read_command()
                if line is None:
                    break
                try:
                    action = menu.parse_command(line, self.connected)
                except CommandError as exc:
                    self.out.line(str(exc), "error")
                    self._failed(ExitCode.USAGE)
                    continue
                if isinstance(action, menu.Exit):
                    break
                self.execute(action)
        finally:
            self._disconnect()
            self._reap()
        self.out.line("Bye.", "dim")
        if self.scripted and self.failure is not None:
            return self.failure
        return ExitCode.OK

    def _failed(self, code: ExitCode) -> None:
        """Remember the first failure: its code is the exit code of a scripted session."""
        with self._lock:
            if self.failure is None:
                self.failure = code

    def show_menu(self) -> None:
        self.out.lines(menu.menu_lines(self.connected), "menu")

    def execute(self, action: menu.Action) -> None:
        """Run one action; every failure becomes one line and the menu stays usable."""
        try:
            self._run_action(action)
        except Cancelled:
            self.out.line("Cancelled.", "dim")
        except CommandError as exc:
            self.out.line(str(exc), "error")
            # Not connected, or a bad answer (a refusal was recorded as such before).
            self._failed(ExitCode.USAGE)
        except ConnectionLost:
            pass  # the on_close callback has said so and put the menu back
        except RequestTimeout as exc:
            self.out.line(f"No answer: {exc} (the connection stays open).", "error")
            self._failed(ExitCode.REFUSED)
        except ServerError as exc:
            self.out.line(explain(exc), "error")
            self._failed(ExitCode.REFUSED)
        except LocalProtocolError as exc:  # a nickname or text the wire cannot carry
            self.out.line(f"Cannot be sent: {exc}.", "error")
            self._failed(ExitCode.USAGE)
        except KeyboardInterrupt:
            if self.scripted:
                raise  # no prompt to come back to: Ctrl-C ends the program (exit 130)
            self.out.line("Interrupted.", "error")

    def _run_action(self, action: menu.Action) -> None:
        if isinstance(action, menu.ShowMenu):
            self.show_menu()
        elif isinstance(action, menu.ShowHelp):
            self.out.lines(menu.help_lines(self.connected))
        elif isinstance(action, menu.Connect):
            self._connect(action)
        elif isinstance(action, menu.Disconnect):
            self._disconnect()
            self.show_menu()
        elif isinstance(action, menu.GetTime):
            self._time(action)
        elif isinstance(action, menu.GetName):
            self.out.line(f"Server name: {render.safe(self._client().name())}")
        elif isinstance(action, menu.ListClients):
            self._list()
        elif isinstance(action, menu.ListRooms):
            self.out.lines(render.rooms_lines(self._client().list_rooms()))
        elif isinstance(action, menu.SendMessage):
            self._send(action)

    def _ask(self, question: str, choices: Sequence[str] = ()) -> str:
        answer = self._ui.ask(question, choices)
        if answer is None:
            raise Cancelled
        return menu.require_utf8(answer, "Answer not used").strip()

    def _client(self) -> Client:
        conn = self._conn
        if conn is None:
            raise CommandError("Not connected: choose 1 (connect) first.")
        return conn.client

    # --- connecting -------------------------------------------------------------------------

    def _connect(self, action: menu.Connect) -> None:
        host, port = action.host, action.port
        if action.ask:
            answer = self._ask(f"Server address [{self.settings.host}]")
            if answer:
                host, port = menu.parse_address(answer)
            if port is None:
                answer = self._ask(f"Port [{self.settings.port}]")
                port = menu.parse_port(answer) if answer else None
        host = menu.parse_host(host or self.settings.host)  # --host too
        port = port or self.settings.port
        if self._conn is not None:
            self._disconnect()
        where = host_port(host, port)
        self.out.line(f"Connecting to {where} ...", "dim")
        marker = object()
        client = self._open(host, port, marker)
        if client is None:
            self._failed(ExitCode.NO_SESSION)
            return
        with self._lock:
            self._conn = Connection(client, host, port, marker)
            self.known_ids = []
        w = client.welcome
        self.out.line(
            f"Connected to {where}: server '{render.safe(w.server_name)}', you are client "
            f"#{w.client_id} (seen as {host_port(w.ip, w.port)}).",
            "ok",
        )
        if client.closed:  # lost between the WELCOME and now
            try:
                client.next_indication(0)
            except ConnectionLost as lost:
                self._on_close(marker, lost.reason)
            return
        self.show_menu()

    def _open(self, host: str, port: int, marker: object) -> Client | None:
        """A connected, admitted Client, or None after saying in one line why not."""
        where = host_port(host, port)
        try:
            client = Client(
                host,
                port,
                nick=self.settings.nick,
                token=self.settings.token,
                timeout=self.settings.timeout,
                connect_timeout=self.settings.connect_timeout,
                on_indication=self._on_indication,
                on_close=lambda reason: self._on_close(marker, reason),
                trace=self.settings.tracer,
                ssl_context=self.settings.ssl_context,
                local_address=self.settings.local_address,
            )
            self._check_admitted(client)
        except ConnectionFailed as exc:
            self.out.line(f"Cannot connect: {exc}", "error")
        except ServerFull:
            self.out.line(f"{where} is full: try again later.", "error")
        except AuthError as exc:
            hint = auth_hint(exc, token_given=self.settings.token is not None)
            self.out.line(f"Cannot connect to {where}: {hint}.", "error")
        except NicknameError as exc:
            self.out.line(
                f"{where} refused the nickname {self.settings.nick!r}: "
                f"{render.safe(exc.message)} ({render.safe(exc.name)}).",
                "error",
            )
        except ServerError as exc:
            self.out.line(
                f"{where} refused the connection: {render.safe(exc.message)} "
                f"({render.safe(exc.name)}).",
                "error",
            )
        except (ConnectionLost, RequestTimeout) as exc:  # may quote the server
            self.out.line(f"Cannot connect: {render.safe(str(exc))}", "error")
        except LocalProtocolError as exc:  # a --nick the wire cannot carry (too long)
            self.out.line(f"Cannot connect: {exc}.", "error")
        else:
            return client
        return None

    def _check_admitted(self, client: Client) -> None:
        """Without a HELLO (no nickname, no token) a server that demands a token refuses
        only the first request, so ask one now and ``connect`` reports the refusal.  PING,
        not a HELLO with an empty token: the server counts that as a failed attempt."""
        if self.settings.nick is not None or self.settings.token is not None:
            return  # the HELLO has been answered: we are in
        try:
            client.ping()
        except BaseException:
            client.close()
            raise

    def _disconnect(self) -> None:
        """Close the connection cleanly (receiver joined) after a short wait for receipts."""
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            self._closing = True
        try:
            self._await_receipts(conn.client)
            conn.client.close()
        finally:
            with self._lock:
                self._conn = None
                self._closing = False
                self._pending.clear()
                self._early.clear()
        self.out.line(f"Disconnected from {host_port(conn.host, conn.port)}.")

    def _await_receipts(self, client: Client) -> None:
        with self._lock:
            waiting = sorted(self._pending)
        missing = await_receipts(client, waiting, RECEIPT_GRACE_S)
        if missing:
            self.out.line(f"{missing} message(s) still without a receipt.", "dim")

    def _reap(self) -> None:
        """Join the receiver threads of connections that were lost (they end by themselves)."""
        with self._lock:
            lost, self._lost = self._lost, []
        for client in lost:
            client.close()

    # --- callbacks on the receiver thread ---------------------------------------------------

    def _on_indication(self, frame: Frame) -> None:
        if isinstance(frame, Receipt):
            with self._lock:
                if frame.message_id in self._pending:
                    self._pending.discard(frame.message_id)
                else:  # the SEND's answer is not printed yet: it will print this after it
                    if len(self._early) >= MAX_EARLY_RECEIPTS:
                        self._early.pop(next(iter(self._early)))
                    self._early[frame.message_id] = frame
                    return
            self._print_receipt(frame)
            return
        style = "message" if isinstance(frame, Message) else "notice"
        self.out.line(render.describe(frame), style)

    def _print_receipt(self, frame: Receipt) -> None:
        delivered = frame.status == ReceiptStatus.DELIVERED
        if not delivered:
            self._failed(ExitCode.REFUSED)
        self.out.line(render.describe(frame), "ok" if delivered else "error")

    def _on_close(self, marker: object, reason: str) -> None:
        with self._lock:
            conn = self._conn
            if conn is None or conn.token is not marker or self._closing:
                return  # our own disconnect, or a connection that never became current
            self._conn = None
            self._lost.append(conn.client)
            self._pending.clear()
            self._early.clear()
        self._failed(ExitCode.SESSION_ENDED)
        where = host_port(conn.host, conn.port)
        self.out.line(f"Disconnected from {where}: {render.safe(reason)}.", "error")
        self.show_menu()
        self._ui.refresh()

    # --- requests ---------------------------------------------------------------------------

    def _time(self, action: menu.GetTime) -> None:
        count = action.count
        if count is None:
            answer = self._ask("How many requests [1]")
            count = menu.parse_count(answer) if answer else 1
        client = self._client()
        start = time.perf_counter()
        futures = [client.submit(TimeRequest()) for _ in range(count)]
        deadline = time.monotonic() + client.timeout
        results: list[ServerTime | None] = []
        errors: Counter[str] = Counter()
        for future in futures:
            try:
                ok = future.result(max(0.0, deadline - time.monotonic()))
                results.append(ServerTime.from_ok(cast(TimeOk, ok)))
            except FutureTimeout:
                errors["no answer"] += 1
                results.append(None)
            except ServerError as exc:
                errors[exc.name] += 1
                results.append(None)
        elapsed_ms = (time.perf_counter() - start) * 1000
        width = len(str(count))
        texts = [
            f"{i:>{width}}. " + (render.server_time(t) if t else "-")
            for i, t in enumerate(results, 1)
        ]
        self.out.lines(texts)
        answered = sum(1 for t in results if t is not None)
        summary = f"{answered}/{count} responses in {elapsed_ms:.0f} ms"
        if errors:
            summary += " (" + ", ".join(f"{n} {name}" for name, n in errors.items()) + ")"
        self.out.line(summary, "ok" if answered == count else "error")
        if answered != count:
            self._failed(ExitCode.REFUSED)

    def _list(self) -> None:
        client = self._client()
        clients = client.list_clients()
        me = client.client_id
        self.known_ids = [c.client_id for c in clients]
        title = f"{len(clients)} client(s) connected"
        self.out.table(render.clients_view(self.out.console, clients, me, title))

    def _send(self, action: menu.SendMessage) -> None:
        client = self._client()
        target = action.target
        if target is None:
            answer = self._ask(
                f"Target id or nickname ({menu.ids_hint(self.known_ids)})",
                [str(i) for i in self.known_ids],
            )
            if not answer:
                raise Cancelled
            target = menu.parse_recipient(answer)
        text = action.text
        if text is None:
            text = self._ask("Text")
            if not text:
                raise CommandError("Nothing sent: the text is empty.")
        try:
            ok = client.send(target, text)
        except ServerError as exc:
            self._failed(ExitCode.REFUSED)
            raise CommandError(explain(exc, target)) from None
        with self._lock:  # held while printing: a receipt arriving now waits for this line
            early = self._early.pop(ok.message_id, None)
            if early is None:
                self._pending.add(ok.message_id)
            to = menu.recipient_label(target, ok.target)
            self.out.line(f"message {ok.message_id} to {to}: forwarded", "ok")
        if early is not None:
            self._print_receipt(early)


def explain(exc: ServerError, target: int | str | None = None) -> str:
    """An ERROR in words, with what to do about it."""
    who = menu.recipient_label(target) if target is not None else "that id"
    if isinstance(exc, NoSuchClient):
        if isinstance(target, str):
            return f"Nobody is connected as {who} — list the clients first."
        return f"No client {who} is connected — list the clients first."
    if isinstance(exc, TextTooLong):
        return f"The message is too long: {render.safe(exc.message)}."
    if isinstance(exc, RecipientBusy):
        return f"Client {who} is not reading its messages — try again later."
    if isinstance(exc, RateLimited):
        return "Too many requests: the server asks to slow down."
    if isinstance(exc, ProtocolRejected) and exc.code == ErrorCode.BAD_PAYLOAD:
        # Also raised by the client library itself, before sending (text with no UTF-8).
        return f"Cannot be sent: {render.safe(exc.message)}."
    return f"The server refused: {render.safe(exc.message)} ({render.safe(exc.name)})."


__all__ = [
    "InteractiveClient",
    "auth_hint",
    "await_receipts",
    "explain",
    "register",
    "utf8_argument",
]
