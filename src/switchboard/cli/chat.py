"""``switchboard chat``: a chat room client (the lab's multi-person chat) on a terminal or a pipe.

Three parts, as for the interactive client:

* ``chat_model`` (pure): typed lines to actions, how lines look, which rooms we are in;
* ``ChatClient``: runs actions on a blocking ``Client``; the receiver thread prints what
  arrives through callbacks;
* two front ends: ``terminal.TerminalUi`` (prompt_toolkit, shared with the menu; lines printed
  above the line being typed) and ``PipedLines`` (stdin is not a terminal: each line is said
  or run in turn, plain text out, flushed line by line; at the end of input it waits for
  every answer, and briefly for /msg receipts, then exits 0).

Order on screen follows the server's: while our own line, a join notice or a /msg's
"forwarded" line waits for the server's answer, the indications that the server sent after
that answer are held back and printed after it (the receiver thread knows which: it
completes the answer's future before it reads the next frame).  The server
sends no copy of a BROADCAST to its sender and BroadcastOk carries no time, so our own line
is stamped when its OK arrives with this machine's clock corrected by the offset measured
with one TIME request at start: the server's clock, give or take half a round trip.

A lost connection or a server shutdown is followed by reconnecting (unless --no-reconnect):
with back-off (``client.reconnect``), under the same nickname, into the same rooms, saying
so; lines typed meanwhile are refused on a terminal and wait for the outcome when piped.

Catching up: the id of the last line shown of each room is remembered (``seen``: in memory,
and in the state directory for the next start).  On rejoining, the room's frames are held
while the server's history is asked for what came after it (HISTORY AFTER, page after page);
then the lines said meanwhile are shown once each, in id order, marked ``(missed)``, merged
with what arrived live meanwhile (``chat_model.caught_up``), and live lines go on.  A server
whose history store was reset (another epoch), or that has no HISTORY, gets a plain rejoin.

Exit codes (``exitcodes.ExitCode``): 0 after /quit, Ctrl-D or the end of piped input; 3 when
the connection is lost or the server shuts down and we do not (or no longer) reconnect; 2 when
we could not get in (unreachable, full, no token or a wrong one, nickname or room refused), or
for an argument that is not valid UTF-8; 130 after Ctrl-C where it ends the program (piped
input).
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Final, Protocol, TextIO

from switchboard import defaults
from switchboard.client import (
    AuthError,
    Client,
    ConnectionFailed,
    ConnectionLost,
    NicknameError,
    RequestTimeout,
    ServerError,
)
from switchboard.client.core import as_send_ok, send_request
from switchboard.client.reconnect import retry
from switchboard.protocol import (
    BroadcastOk,
    BroadcastRequest,
    Frame,
    HistoryMode,
    Joined,
    JoinOk,
    JoinRequest,
    LeaveRequest,
    Left,
    LocalProtocolError,
    Message,
    MessageFlags,
    NickChanged,
    Receipt,
    ReceiptStatus,
    Shutdown,
)

from . import chat_model as model
from . import render
from .common import CliExit, add_connection_args, connect, token
from .exitcodes import ExitCode
from .interactive import RECEIPT_GRACE_S, auth_hint, await_receipts, explain, utf8_argument
from .menu import CommandError, recipient_label, require_utf8
from .reconnect import (
    add_reconnect_args,
    backoff,
    check_reconnect_args,
    connect_again,
    seconds,
)
from .seen import Position, SeenLines, default_path
from .terminal import Output, Ui, plain_console, plain_stdio, run_terminal

HISTORY_FILE: Final = "chat_history"
#: Said when Ctrl-C meets an empty line: as in the interactive client, Ctrl-C only clears
#: the line (a chat is not left by accident while reaching for copy).
LEAVE_HINT: Final = "(Ctrl-D or /quit leaves)"
#: Lines held back while one request waits for its answer (a request timeout's worth of a
#: busy room at most); past it, further lines are dropped rather than held without bound.
MAX_HELD_LINES: Final = 10_000

#: A line to print and its style.
Line = tuple[str, str]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "chat",
        help="chat in a room: every line you type reaches the others, with a timestamp",
        description="Join a chat room under a nickname: each line you type is said to the "
        "room, the others' lines appear with the server's timestamp, joins and leaves as "
        "they happen.  /help lists the commands (/msg, /list, /who, /time, /name, /join, /leave, "
        "/nick, /quit).  With stdin not a terminal each line is said (or run) in turn, "
        "output is plain text, and the end of input waits for the answers, then quits.  "
        "A lost connection or a server shutdown is followed by reconnecting, under the same "
        "nickname and into the same rooms (see --no-reconnect, --reconnect-for).",
    )
    add_connection_args(p, json_flag=False)
    p.add_argument(
        "--nick", required=True, type=utf8_argument, help="your nickname (unique on the server)"
    )
    p.add_argument(
        "--room",
        default=defaults.DEFAULT_ROOM,
        type=utf8_argument,
        help=f"the room to join (default {defaults.DEFAULT_ROOM})",
    )
    p.add_argument(
        "--retry",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when the server is full, try again every second for up to this long "
        "(default 0: give up at once, exit code 2)",
    )
    add_reconnect_args(p)
    p.set_defaults(func=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    if args.retry < 0:
        raise CliExit(2, "--retry must not be negative")
    check_reconnect_args(args)
    if sys.stdin.isatty() and sys.stdout.isatty():
        return run_terminal(
            lambda out: ChatClient(args, out, interactive=True),
            HISTORY_FILE,
            leave_hint=LEAVE_HINT,
            erase_entered=True,
        )
    plain_stdio()  # a line that is not UTF-8 is refused, not sent with U+FFFD in it
    chat = ChatClient(args, Output(plain_console()), interactive=False)
    return chat.run(PipedLines(sys.stdin))


# --- front ends ------------------------------------------------------------------------------


class ChatUi(Ui, Protocol):
    """The interactive client's ``Ui``, which ``read_command`` also ends (returning None)
    after ``interrupt``."""

    def interrupt(self) -> None:
        """From any thread: make the pending (or next) ``read_command`` return None."""


class PipedLines:
    """stdin is not a terminal: lines come from a reader thread, so that a lost connection
    can end the wait for the next line at once."""

    def __init__(self, stream: TextIO) -> None:
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stream = stream
        # A daemon: a pipe that never ends must not keep the process alive after /quit.
        threading.Thread(target=self._pump, name="switchboard-chat-stdin", daemon=True).start()

    def _pump(self) -> None:
        try:
            for line in self._stream:
                self._lines.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass  # stdin closed under us: the same as its end
        finally:
            self._lines.put(None)

    def read_command(self) -> str | None:
        return self._lines.get()

    def ask(self, question: str, choices: Sequence[str] = ()) -> str | None:
        return None  # nobody to ask

    def refresh(self) -> None:
        pass

    def interrupt(self) -> None:
        self._lines.put(None)


# --- the client ------------------------------------------------------------------------------


class ChatClient:
    """Runs chat actions on a blocking Client; the receiver thread prints what arrives."""

    def __init__(self, args: argparse.Namespace, out: Output, *, interactive: bool) -> None:
        self.args = args
        self.out = out
        self.interactive = interactive
        self.state = model.ChatState(nick=args.nick)
        self._ui: ChatUi  # set by run(), before anything can call back
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._closing = False
        #: Until we are in the room, a lost connection is _start's to report (CliExit).
        self._starting = True
        #: Set when _start is over (its catch-up included): a reconnection waits for it, so
        #: that the two never hold the same room's lines (``_catching``) at once.
        self._started = threading.Event()
        #: Why the connection ended, when it was not our doing; the exit code is then 3.
        self._lost: str | None = None
        self._shutdown: str | None = None
        self._offset_ms = 0
        self._pending_receipts: set[int] = set()
        #: Lines held back while an ordered request waits for its answer (``_ordered``).
        self._holding = False
        self._gate: Future[Frame] | None = None
        self._held: list[Line] = []
        self.known_ids: list[int] = []
        self.known_nicks: list[str] = []  # of the last /who, for completing /msg
        #: Set while a reconnection is under way (the thread running it: _reconnect).
        self._reconnecting: threading.Thread | None = None
        #: Set to stop reconnecting (/quit while it waits); and, when it ends, to wake the
        #: piped reader waiting for its outcome.
        self._stop_reconnecting = threading.Event()
        self._reconnected = threading.Condition(self._lock)
        #: The id of the newest room line shown, per room, in the history store of
        #: ``_epoch`` (the current connection's; 0: not known); and where they are kept for
        #: the next start (set once connected: they are per server).
        self._shown: dict[str, int] = {}
        self._epoch = 0
        self._positions: SeenLines | None = None
        #: Rooms being caught up: their MESSAGEs (replay and live) held until it is done.
        self._catching: dict[str, list[Message]] = {}
        #: What a reconnection's catch-up shows, printed after "Reconnected" (_reconnect).
        self._caught_lines: list[Line] = []

    # --- what the terminal front end asks -------------------------------------------------

    def prompt_parts(self) -> list[tuple[str, str]]:
        with self._lock:
            parts = self.state.prompt_parts()
            if self._reconnecting is not None:
                parts.insert(0, ("class:offline", "(reconnecting) "))
            return parts

    def completion_words(self) -> dict[str, object]:
        with self._lock:
            return self.state.completion_words(self.known_ids, self.known_nicks)

    # --- the loop ---------------------------------------------------------------------------

    def run(self, ui: ChatUi) -> int:
        self._ui = ui
        try:
            self._start()
            if self.interactive:
                self.out.line("Type to chat; /help lists the commands, /quit leaves.", "dim")
            while self._lost is None:
                line = ui.read_command()
                if line is None or self._lost is not None:
                    break
                try:
                    action = model.parse_line(line)
                except CommandError as exc:
                    self.out.line(str(exc), "error")
                    continue
                if action is None:
                    continue
                if isinstance(action, model.Quit):
                    break
                client = self._connected_client()
                if client is not None:
                    self.execute(client, action)
        finally:
            self._close()
        if self._lost is not None:
            return ExitCode.SESSION_ENDED
        if self.interactive:
            self.out.line("Bye.", "dim")
        return ExitCode.OK

    def _connected_client(self) -> Client | None:
        """The client to run the next action on.  While reconnecting: on a terminal None
        (the line is refused, saying why); piped, the outcome is waited for (a script's
        next lines go to the new connection)."""
        with self._lock:
            if self._reconnecting is not None and not self.interactive:
                self._reconnected.wait_for(lambda: self._reconnecting is None)
            if self._reconnecting is None:
                return self._client if self._lost is None else None
        self.out.line("Not sent: reconnecting to the server (your line was dropped).", "error")
        return None

    def _start(self) -> Client:
        """Connect, take the nickname, join the room; CliExit(2) when any of it fails."""
        try:
            return self._start_up()
        finally:
            self._started.set()

    def _start_up(self) -> Client:
        client = connect(
            self.args,
            retry_full_s=self.args.retry,
            on_indication=self._on_indication,
            on_close=self._on_close,
        )
        with self._lock:
            self._client = client
            self.state.client_id = client.client_id
            self._positions = SeenLines(default_path(), f"{client.host}:{client.port}")
        try:
            try:
                # The first request: a server that demands a token refuses it (and closes).
                self._measure_clock(client)
            except AuthError as exc:
                hint = auth_hint(exc, token_given=token(self.args) is not None)
                raise CliExit(2, f"cannot connect to {client.host}:{client.port}: {hint}") from None
            self._take_nick(client, self.args.nick)
            with self._lock:
                me = model.who(self.state.nick, client.client_id)
            self.out.line(f"* connected to '{render.safe(client.server_name)}' as {me}", "notice")
            try:
                room, position = self._join(client, self.args.room, catch_up=True)
            except ServerError as exc:
                raise CliExit(
                    2, f"cannot join {self.args.room!r}: {exc.message} ({exc.name})"
                ) from None
        except (ConnectionLost, RequestTimeout) as exc:
            raise CliExit(2, f"lost the connection while joining: {exc}") from None
        with self._lock:
            self._starting = False
            lost = self._lost
        if lost is not None:  # lost just before _starting was cleared: said by nobody yet
            with self._lock:  # the room's lines held for the catch-up: shown as they are
                held = [self._describe(m) for m in self._catching.pop(room, [])]
            for text, style in filter(None, held):
                self.out.line(text, style)
            self.out.line(f"* Connection lost: {render.safe(lost)}.", "error")
        else:
            # In: a connection lost from here on is reconnected as any other.
            for text, style in self._catch_up(client, room, position, fresh=True):
                self.out.line(text, style)
        return client

    def _measure_clock(self, client: Client) -> None:
        before = time.time_ns()
        server = client.time()
        after = time.time_ns()
        self._offset_ms = server.epoch_ms - (before + after) // 2_000_000

    def server_now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self._offset_ms

    def _take_nick(self, client: Client, nick: str) -> None:
        while True:
            try:
                taken = client.set_nick(require_utf8(nick, "Nickname not used"))
            except CommandError as exc:  # an answer typed below
                refusal = str(exc)
            except NicknameError as exc:
                if not self.interactive:
                    raise CliExit(2, f"{exc.message} ({exc.name}): choose another --nick") from None
                refusal = f"{exc.message[:1].upper()}{exc.message[1:]} ({exc.name})."
            else:
                with self._lock:
                    self.state.nick = taken
                self._ui.refresh()
                return
            self.out.line(render.safe(refusal), "error")
            answer = self._ui.ask("Another nickname")
            if answer is None or not answer.strip():
                raise CliExit(2, "no nickname chosen") from None
            nick = answer.strip()

    def execute(self, client: Client, action: model.Action) -> None:
        """Run one action; every failure becomes one line and the chat goes on."""
        try:
            self._run_action(client, action)
        except CommandError as exc:
            self.out.line(str(exc), "error")
        except ConnectionLost:
            pass  # the on_close callback has said so
        except RequestTimeout as exc:
            self.out.line(f"No answer: {exc} (the connection stays open).", "error")
        except NicknameError as exc:
            self.out.line(f"Nickname refused: {render.safe(exc.message)}.", "error")
        except ServerError as exc:
            self.out.line(explain(exc, getattr(action, "target", None)), "error")
        except LocalProtocolError as exc:  # a nickname or room the wire cannot carry
            self.out.line(f"Not sent: {exc}.", "error")
        except KeyboardInterrupt:
            self.out.line("Interrupted.", "error")

    def _run_action(self, client: Client, action: model.Action) -> None:
        if isinstance(action, model.Say):
            self._say(client, action.text)
        elif isinstance(action, model.PrivateMessage):
            self._private(client, action)
        elif isinstance(action, model.Join):
            self._join(client, action.room)
        elif isinstance(action, model.Leave):
            self._leave(client, action.room)
        elif isinstance(action, model.ListMembers):
            self._list(client, action.everyone)
        elif isinstance(action, model.ListRooms):
            self.out.lines(render.rooms_lines(client.list_rooms()))
        elif isinstance(action, model.GetTime):
            self.out.line(f"Server time: {render.server_time(client.time())}")
        elif isinstance(action, model.GetName):
            self.out.line(f"Server name: {render.safe(client.name())}")
        elif isinstance(action, model.ChangeNick):
            nick = client.set_nick(action.nick)
            with self._lock:
                self.state.nick = nick
            self.out.line(f"* you are now {model.who(nick, client.client_id)}", "notice")
            self._ui.refresh()
        elif isinstance(action, model.Help):
            self.out.lines(model.help_lines())

    # --- requests whose answer is printed in the server's order -----------------------------

    def _ordered(
        self, client: Client, request: Frame, show: Callable[[Frame], list[Line]]
    ) -> Frame:
        """Send ``request`` and print ``show(answer)`` before every indication that the
        server sent after the answer (held back meanwhile): a JOIN's notice before the
        history, our own line before the replies to it.  ``show`` runs under the lock."""
        with self._lock:
            self._holding = True
            self._gate = None
        answer: Frame | None = None
        try:
            future = client.submit(request)
            with self._lock:
                self._gate = future
            answer = client.result(future)
            return answer
        finally:
            with self._lock:
                lines = show(answer) if answer is not None else []
                lines += self._held
                self._held = []
                self._holding = False
                self._gate = None
                for text, style in lines:
                    self.out.line(text, style)

    def _say(self, client: Client, text: str) -> None:
        with self._lock:
            room = self.state.target_room()

        # A line the server would refuse (too long, not Unicode) raises in submit: nothing
        # is sent, and execute() says why.
        def show(ok: Frame) -> list[Line]:
            state = self.state
            now_ms = self.server_now_ms()
            if isinstance(ok, BroadcastOk):
                self._note_shown(room, ok.message_id)
            line = model.own_line(
                state.nick,
                state.client_id,
                room,
                text,
                now_ms,
                show_room=state.show_rooms,
            )
            return [(line, "")]

        self._ordered(client, BroadcastRequest(room, text), show)

    def _private(self, client: Client, action: model.PrivateMessage) -> None:
        def show(answer: Frame) -> list[Line]:
            ok = as_send_ok(answer)
            self._pending_receipts.add(ok.message_id)
            to = recipient_label(action.target, ok.target)
            return [(model.sent_private_line(to, action.text, self.server_now_ms()), "")]

        self._ordered(client, send_request(action.target, action.text), show)

    def _join(
        self, client: Client, room: str, *, catch_up: bool = False
    ) -> tuple[str, Position | None]:
        """JOIN (or switch to a room we are in): the room as the server names it and, with
        ``catch_up``, where we were in it (at start: remembered from the last run), its
        lines held until ``_catch_up`` shows what was said since (or, with no position,
        until it has learnt the store's epoch: a line shown before would be remembered by
        an id that names nothing)."""
        with self._lock:
            switched = self.state.switch(room)
            position = self._position(room) if catch_up else None
            if catch_up and not switched:
                self._catching[room] = []
        if switched:
            self.out.line(f"* talking in {room} now", "notice")
            self._ui.refresh()
            return room, None

        def show(ok: Frame) -> list[Line]:
            assert isinstance(ok, JoinOk)
            self.state.joined(ok.room)
            if ok.room != room and room in self._catching:  # the server's name for it
                self._catching[ok.room] = self._catching.pop(room)
            replayed = 0 if position is not None else ok.history
            return [(model.you_joined_line(ok.room, ok.members, replayed), "notice")]

        try:
            ok = self._ordered(client, JoinRequest(room), show)
        except BaseException:
            with self._lock:
                self._catching.pop(room, None)
            raise
        assert isinstance(ok, JoinOk)
        self._ui.refresh()
        return ok.room, position

    def _position(self, room: str) -> Position | None:
        """Where we are in ``room`` (under the lock): the last line shown on this run, or
        remembered from the last one."""
        if self._epoch and room in self._shown:
            return Position(self._epoch, self._shown[room])
        return self._positions.position(room) if self._positions is not None else None

    def _catch_up(
        self, client: Client, room: str, position: Position | None, *, fresh: bool
    ) -> list[Line]:
        """Ask for what ``room`` said after ``position`` (and learn the store's epoch, on a
        ``fresh`` connection); the lines to show: the missed ones merged with the room's
        frames held meanwhile."""
        epoch = 0 if fresh else self._epoch
        missed: list[Message] | None = None
        failed: list[Line] = []
        try:
            if position is not None:
                epoch, got = client.missed(room, position.message_id, position.epoch)
                if epoch == position.epoch:
                    missed = got
            elif not epoch:  # the store's epoch, to remember positions in
                epoch = client.history(room, HistoryMode.LATEST, limit=1).epoch
        except (ServerError, ConnectionLost, RequestTimeout) as exc:
            # A server without HISTORY, its store failing, or the connection gone (then it
            # is reconnected as any other): what arrived is shown as a plain rejoin, and
            # the user told why (the next rejoin shows a replay again, not a catch-up).
            epoch, missed = self._epoch, None
            reason = f"{exc.message} ({exc.name})" if isinstance(exc, ServerError) else str(exc)
            notice = model.catch_up_failed_notice(
                room, render.safe(reason), had_position=position is not None
            )
            failed.append((notice, "error"))
        with self._lock:
            arrived = self._catching.pop(room, [])
            if epoch != self._epoch:
                # Ids shown so far name lines of another store, or of one whose epoch was
                # never learnt (its lookup failed): either way nothing to resume from here.
                self._shown.clear()
                self._epoch = epoch
            if missed is None or position is None:
                lines = [self._describe(m) for m in arrived]
                return failed + [line for line in lines if line is not None]
            shown = model.caught_up(position.message_id, missed, arrived)
            count = sum(1 for _, was_missed in shown if was_missed)
            out: list[Line] = [(model.missed_notice(room, count), "notice")]
            for msg, was_missed in shown:
                self._note_shown(room, msg.message_id)
                text = model.room_line(msg, show_room=self.state.show_rooms, missed=was_missed)
                out.append((text, "message"))
            self._note_shown(room, position.message_id)
            return out

    def _note_shown(self, room: str, message_id: int) -> None:
        """A line of ``room`` was shown (under the lock): remember it, and now and then
        write it down for the next start."""
        if message_id <= self._shown.get(room, 0):
            return
        self._shown[room] = message_id
        if self._epoch and self._positions is not None:
            self._positions.advance(room, self._epoch, message_id)
            self._positions.save(soon=True)

    def _leave(self, client: Client, room: str | None) -> None:
        with self._lock:
            name = room or self.state.target_room()
        left = client.leave(name)
        with self._lock:
            self.state.left(left.room)
            where = self.state.where_now()
        self.out.line(f"* you left {render.safe(left.room)}; {where}", "notice")
        self._ui.refresh()

    def _list(self, client: Client, everyone: bool) -> None:
        with self._lock:
            room = None if everyone else self.state.target_room()
        clients = client.list_clients(room)
        with self._lock:
            self.known_ids = [c.client_id for c in clients]
            self.known_nicks = [c.nick for c in clients if c.nick]
        title = "Connected clients" if room is None else f"In {room}"
        self.out.lines(model.members_lines(title, clients, client.client_id))

    # --- callbacks on the receiver thread ---------------------------------------------------

    def _on_indication(self, frame: Frame) -> None:
        if isinstance(frame, Shutdown):
            self._shutdown = frame.reason or "no reason given"
            return
        with self._lock:
            line = self._describe(frame)
            if line is None:
                return
            # While an ordered request waits, what came after its answer waits for it too.
            gate = self._gate
            if self._holding and (gate is None or gate.done()):
                if len(self._held) < MAX_HELD_LINES:
                    self._held.append(line)
                return
            self.out.line(*line)

    def _describe(self, frame: Frame) -> Line | None:
        """An indication as a line and its style (under the lock)."""
        if isinstance(frame, Message):
            if not frame.room:
                return model.private_line(frame), "message"
            catching = self._catching.get(frame.room)
            if catching is not None:  # shown once the catch-up knows what was missed
                if len(catching) < MAX_HELD_LINES:
                    catching.append(frame)
                return None
            history = bool(frame.flags & MessageFlags.HISTORY)
            if not history and frame.message_id <= self._shown.get(frame.room, 0):
                return None  # shown already, by a catch-up
            self._note_shown(frame.room, frame.message_id)
            line = model.room_line(frame, show_room=self.state.show_rooms)
            return line, "dim" if history else "message"
        if isinstance(frame, Joined):
            return model.joined_line(frame), "notice"
        if isinstance(frame, Left):
            return model.left_line(frame), "notice"
        if isinstance(frame, NickChanged):
            return model.nick_changed_line(frame), "notice"
        if isinstance(frame, Receipt):
            self._pending_receipts.discard(frame.message_id)
            delivered = frame.status == ReceiptStatus.DELIVERED
            return model.receipt_line(frame), "ok" if delivered else "error"
        return None

    def _on_close(self, reason: str) -> None:
        with self._lock:
            if self._closing or self._client is None:
                return  # our own /quit, or a connection refused before it was ours
            if self._starting or self.args.no_reconnect:
                self._lost = reason
            if self._starting:
                return  # _start says why it could not get in, in one line
            shutdown, self._shutdown = self._shutdown, None
            if not self.args.no_reconnect:
                why = f"the server shut down ({shutdown})" if shutdown else reason
                self._reconnecting = threading.Thread(
                    target=self._reconnect,
                    args=(why,),
                    name="switchboard-chat-reconnect",
                    daemon=True,
                )
                self._reconnecting.start()
        if not self.args.no_reconnect:
            self._ui.refresh()  # the prompt says so
            return
        if shutdown is not None:
            self.out.line(
                f"* The server shut down ({render.safe(shutdown)}): the chat is over.", "error"
            )
        else:
            self.out.line(f"* Connection lost: {render.safe(reason)}.", "error")
        self._ui.interrupt()

    def _reconnect(self, why: str) -> None:
        """On a thread of its own: try again with back-off until we are back (same nickname,
        same rooms) or give up (then the chat ends, exit code 3)."""
        self._started.wait()  # a connection lost during the start-up catch-up: it ends first
        first = True

        def waiting(delay: float, error: str | None) -> None:
            nonlocal first
            if first:
                line = f"* Connection lost: {render.safe(why)}; reconnecting in {seconds(delay)}."
                self.out.line(line, "error")
                first = False
            else:
                failed = render.safe(error or "")
                line = f"* Reconnect failed ({failed}); next try in {seconds(delay)}."
                self.out.line(line, "dim")

        client: Client | None
        try:
            client = retry(
                self._rejoin, backoff(self.args), on_wait=waiting, stop=self._stop_reconnecting
            )
            gave_up = f"no connection within {self.args.reconnect_for:g} s"
        except AuthError as exc:
            client, gave_up = None, f"the server refused the token ({exc.name})"
        stopped = self._stop_reconnecting.is_set()
        with self._lock:
            self._reconnecting = None
            if client is not None:
                self._client = client
                self.state.client_id = client.client_id
                me = model.who(self.state.nick, client.client_id)
                rooms = ", ".join(self.state.rooms)
            elif not stopped:  # /quit while reconnecting is no loss
                self._lost = gave_up
            self._reconnected.notify_all()
        if client is None:
            if not stopped:
                self.out.line(f"* Gave up reconnecting: {gave_up}. The chat is over.", "error")
                self._ui.interrupt()
            return
        with self._lock:
            reconnected = f"* Reconnected as {me}" + (f", rejoined {rooms}" if rooms else "")
            self.out.line(reconnected, "notice")
            for text, style in self._caught_lines + self._held:
                self.out.line(text, style)
            self._holding, self._held, self._caught_lines = False, [], []
        self._ui.refresh()
        if client.closed:  # lost again before it was ours: its on_close was not heard
            self._on_close("the connection was lost while rejoining")

    def _rejoin(self) -> Client:
        """One attempt: connect, take our nickname, join our rooms (each failure retried)."""
        client = connect_again(
            self.args, on_indication=self._on_indication, on_close=self._on_close_again
        )
        try:
            self._measure_clock(client)
            with self._lock:
                nick = self.state.nick
                rooms = list(self.state.rooms)
                positions = {room: self._position(room) for room in rooms}
                # Each room's lines wait for its catch-up (or for the store's epoch, where
                # there is no position), and what else arrives for the "Reconnected" line
                # (_reconnect).
                self._catching = {room: [] for room in rooms}
                self._holding, self._gate, self._held = True, None, []
                self._caught_lines = []
            try:
                client.set_nick(nick)
            except NicknameError as exc:
                # Our old connection may still hold it until the server notices it is gone.
                raise ConnectionFailed(f"the nickname {nick} is held: {exc.message}") from None
            caught: list[Line] = []
            for room in rooms:
                client.join(room)
                caught += self._catch_up(client, room, positions[room], fresh=True)
            with self._lock:
                self._caught_lines = caught
        except BaseException:
            with self._lock:
                self._holding, self._held, self._catching = False, [], {}
            client.close()
            raise
        return client

    def _on_close_again(self, reason: str) -> None:
        """on_close of a reconnected client: the same as the first one's, once it is ours."""
        with self._lock:
            ours = self._reconnecting is None
        if ours:
            self._on_close(reason)

    # --- closing ----------------------------------------------------------------------------

    def _close(self) -> None:
        self._stop_reconnecting.set()
        with self._lock:
            if self._positions is not None:
                self._positions.save()
        with self._lock:
            thread = self._reconnecting
        if thread is not None:
            thread.join()
        with self._lock:
            client = self._client
            if client is None:
                return
            self._closing = self._lost is None
            waiting = sorted(self._pending_receipts)
        if self._lost is None:
            missing = await_receipts(client, waiting, RECEIPT_GRACE_S)
            if missing:
                self.out.line(f"* {missing} private message(s) still without a receipt.", "dim")
            self._leave_rooms(client)
        client.close()

    def _leave_rooms(self, client: Client) -> None:
        """LEAVE every room (pipelined) so the others see us leave, not disconnect."""
        with self._lock:
            rooms = list(self.state.rooms)
        deadline = time.monotonic() + client.timeout
        try:
            futures = [client.submit(LeaveRequest(room)) for room in rooms]
            for future in futures:
                future.result(max(0.0, deadline - time.monotonic()))
        except (FutureTimeout, ServerError, ConnectionLost):
            pass  # closing anyway: the others then see us disconnect instead


__all__ = ["ChatClient", "PipedLines", "register"]
