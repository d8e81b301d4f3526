"""``switchboard client``: the lab's seven-option menu as a terminal program.

Three parts:

* ``menu`` (pure): what a typed line or a menu number means in which state;
* ``InteractiveClient``: runs those actions on a blocking ``Client`` and keeps the
  connection state, which the receiver thread may change at any moment (a message arrives,
  the server shuts down, the connection breaks);
* two front ends: ``TerminalUi`` (prompt_toolkit: history, completion, and notices printed
  above the line being typed through ``patch_stdout``) and ``PlainUi`` (stdin is not a
  terminal: one command or answer per line, plain text out, no escape codes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TextIO, cast

from rich.console import Console, RenderableType
from rich.text import Text

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

#: Seconds ``disconnect`` and ``quit`` wait for the receipts of messages just sent, so a
#: script that sends and then ends its input still learns whether they were delivered.
RECEIPT_GRACE_S: Final = 2.0
#: Receipts that arrive before their SEND's answer has been printed are held back (so that
#: "forwarded" is printed before "delivered"); a bound in case an answer is never printed.
MAX_EARLY_RECEIPTS: Final = 1000
#: Styles readable on light and dark backgrounds (no yellow, white or black); rich drops
#: every colour when NO_COLOR is set, prompt_toolkit too.
STYLES: Final = {
    "ok": "green",
    "error": "bold red",
    "message": "bold",
    "notice": "magenta",
    "menu": "bold",
    "dim": "dim",
}
PROMPT_STYLE: Final = {"prompt": "bold", "state": "ansigreen", "offline": "ansired"}
HISTORY_FILE: Final = "client_history"
#: Seconds the stdout proxy waits between redraws of the prompt, batching bursts of output.
#: prompt_toolkit's default (0.2 s) visibly draws the prompt before a command's output lands
#: above it; 20 ms is still one redraw for a burst like ``time 100``.
PROXY_PAUSE_S: Final = 0.02
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


def plain_stdio() -> None:
    """stdin and stdout as UTF-8 whatever the locale says.  Input bytes that are not UTF-8
    become lone surrogates (not a UnicodeDecodeError that would end the session, nor U+FFFD
    that would be sent), which the parsers refuse with one line (``menu.require_utf8``)."""
    for stream, errors in ((sys.stdin, "surrogateescape"), (sys.stdout, "replace")):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors=errors)


# --- output ----------------------------------------------------------------------------------


def plain_console() -> Console:
    """No colour and no escape codes at all; wide, so tables are not squeezed into 80 columns."""
    return Console(
        file=sys.stdout,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
        width=200,
    )


def terminal_console(file: TextIO | None = None) -> Console:
    """Without ``file``, writes to whatever ``sys.stdout`` is at the time: the proxy."""
    return Console(
        file=file,
        force_terminal=True,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
    )


class Output:
    """Whole lines from any thread (the receiver prints notices while the user types).

    With ``direct`` (the terminal itself), lines from the main thread bypass ``console`` (the
    stdout proxy): the main thread only prints while no prompt is drawn, and the proxy
    writes from a thread of its own, which could let the next prompt be drawn first.
    """

    def __init__(self, console: Console, direct: Console | None = None) -> None:
        self.console = console
        self.direct = direct
        self._lock = threading.Lock()

    def _target(self) -> Console:
        if self.direct is not None and threading.current_thread() is threading.main_thread():
            return self.direct
        return self.console

    def line(self, text: str, style: str = "") -> None:
        self.lines([text], style)

    def lines(self, texts: Sequence[str], style: str = "") -> None:
        with self._lock:
            console = self._target()
            for text in texts:
                console.print(Text(text, style=STYLES.get(style, "")))

    def table(self, table: RenderableType) -> None:
        with self._lock:
            self._target().print(table)


# --- front ends ------------------------------------------------------------------------------


class Ui(Protocol):
    def read_command(self) -> str | None:
        """The next command line; None at the end of input (Ctrl-D, EOF)."""

    def ask(self, question: str, choices: Sequence[str] = ()) -> str | None:
        """The answer to ``question``; None if the user cancelled (Ctrl-C, Ctrl-D, EOF)."""

    def refresh(self) -> None:
        """The connection state changed under the prompt: redraw it."""


class PlainUi:
    """stdin is not a terminal: each command and each answer is the next line."""

    def __init__(self, *, prompts: bool = False) -> None:
        # With a terminal on stdin but not on stdout, prompts go to stderr to stay out of
        # the captured output.
        self._prompts = prompts

    def _readline(self, prompt: str) -> str | None:
        if self._prompts:
            sys.stderr.write(prompt)
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return None
        return line.rstrip("\r\n")

    def read_command(self) -> str | None:
        return self._readline("> ")

    def ask(self, question: str, choices: Sequence[str] = ()) -> str | None:
        return self._readline(f"{question}: ")

    def refresh(self) -> None:
        pass


class PromptState(Protocol):
    def prompt_parts(self) -> list[tuple[str, str]]: ...
    def completion_words(self) -> dict[str, object]: ...


class TerminalApp(PromptState, Protocol):
    """A client that ``run_terminal`` can run: a prompt to show and a loop to run."""

    def run(self, ui: TerminalUi) -> int: ...


class TerminalUi:
    """prompt_toolkit: history, tab completion, Ctrl-C clears the line (on an empty line it
    calls ``on_idle_interrupt``, which says how to leave), Ctrl-D ends."""

    def __init__(
        self,
        state: PromptState,
        history_path: Path | None,
        on_idle_interrupt: Callable[[], None] | None = None,
        *,
        erase_entered: bool = False,
    ) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import DynamicCompleter, NestedCompleter

        #: Set when an existing history file was readable by others and has been tightened.
        self.history_notice: str | None = None
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory
        from prompt_toolkit.styles import Style

        history: History = InMemoryHistory()
        if history_path is not None:
            try:
                self.history_notice = private_history_file(history_path)
                history = FileHistory(str(history_path))
            except OSError:
                pass  # an unwritable home only costs the history across sessions
        style = Style.from_dict({f"{k}": v for k, v in PROMPT_STYLE.items()})
        self._session: PromptSession[str] = PromptSession(
            history=history,
            completer=DynamicCompleter(
                lambda: NestedCompleter.from_nested_dict(cast(Any, state.completion_words()))
            ),
            complete_while_typing=False,
            style=style,
            # The chat prints each line we said once, stamped, as irssi and weechat do: the
            # prompt with the typed line is erased when Enter is pressed, not left above it.
            erase_when_done=erase_entered,
        )
        self._questions: PromptSession[str] = PromptSession(history=InMemoryHistory(), style=style)
        self._state = state
        self._on_idle_interrupt = on_idle_interrupt
        self._interrupted = False

    def read_command(self) -> str | None:
        from prompt_toolkit.formatted_text import FormattedText

        while True:
            try:
                return self._session.prompt(
                    lambda: FormattedText(self._state.prompt_parts()),
                    pre_run=self._end_if_interrupted,
                )
            except KeyboardInterrupt:
                # Ctrl-C throws the line away and the prompt comes back, as in a shell; on
                # an empty line, where that does nothing, it says how to leave instead.
                buffer = self._session.default_buffer
                if not buffer.text and self._on_idle_interrupt is not None:
                    self._on_idle_interrupt()
                # Emptied now: a Ctrl-C before the next prompt is drawn (a SIGINT) finds
                # this line gone, as the user saw it go.
                buffer.reset()
                continue
            except EOFError:
                return None

    def ask(self, question: str, choices: Sequence[str] = ()) -> str | None:
        from prompt_toolkit.completion import WordCompleter

        try:
            return self._questions.prompt(
                [("class:prompt", f"{question}: ")],
                completer=WordCompleter(list(choices)) if choices else None,
            )
        except (KeyboardInterrupt, EOFError):
            return None

    def refresh(self) -> None:
        app = self._session.app
        if app.is_running:
            app.invalidate()

    def interrupt(self) -> None:
        """From any thread: end the prompt shown now, or the next one, as if Ctrl-D."""
        # The flag covers a prompt that is just starting: its pre_run hook sees it.
        self._interrupted = True
        app = self._session.app
        loop = app.loop
        if app.is_running and loop is not None:
            loop.call_soon_threadsafe(self._end_if_interrupted)

    def _end_if_interrupted(self) -> None:
        app = self._session.app
        if self._interrupted and app.is_running and app.future and not app.future.done():
            app.exit(exception=EOFError())


def private_history_file(path: Path) -> str | None:
    """Make sure the history file at ``path`` exists and only its owner can read it: it
    holds every line typed, message texts included.  A new file is created 0600 in a
    directory created 0700; an existing one that others could read is tightened to 0600,
    and the notice to print about it is returned."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            os.fchmod(fd, mode & 0o700)
            return (
                f"* {path} could be read by others (mode {mode:04o}): "
                f"now {mode & 0o700:04o}, readable only by you."
            )
    finally:
        os.close(fd)
    return None


def history_path(name: str = HISTORY_FILE) -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "switchboard" / name


@contextlib.contextmanager
def output_above_prompt() -> Iterator[None]:
    """prompt_toolkit's ``patch_stdout(raw=True)``, with a shorter pause between redraws.

    Everything written to stdout or stderr (notices from the receiver thread included) is
    printed above the prompt, and the line being typed is redrawn intact; raw, so rich's
    colour codes pass through.
    """
    from prompt_toolkit.patch_stdout import StdoutProxy

    with StdoutProxy(raw=True, sleep_between_writes=PROXY_PAUSE_S) as proxy:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = cast(TextIO, proxy)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def run_terminal(
    make_app: Callable[[Output], TerminalApp],
    history_file: str,
    *,
    leave_hint: str,
    erase_entered: bool = False,
) -> int:
    """Run the app that ``make_app(output)`` builds on this terminal: prompt_toolkit with
    the history in ``history_file`` (under ``history_path``), output printed above the
    prompt, ``leave_hint`` printed when Ctrl-C meets an empty line; ``erase_entered``: the
    prompt and the line typed vanish on Enter (the app prints what became of it)."""
    out = Output(terminal_console(), direct=terminal_console(sys.stdout))
    app = make_app(out)
    try:
        path: Path | None = history_path(history_file)
    except RuntimeError:  # no home directory to be found
        path = None
    ui = TerminalUi(
        app,
        path,
        on_idle_interrupt=lambda: out.line(leave_hint, "dim"),
        erase_entered=erase_entered,
    )
    if ui.history_notice is not None:
        out.line(ui.history_notice, "dim")
    with output_above_prompt():
        return app.run(ui)


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
    "Output",
    "PlainUi",
    "TerminalUi",
    "auth_hint",
    "await_receipts",
    "explain",
    "plain_stdio",
    "register",
    "run_terminal",
    "utf8_argument",
]
