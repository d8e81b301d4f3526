"""``switchboard udpchat join``: what a room member sees, an asyncio shell around the session
logic of ``services.udpchat.peer.ChatPeer`` (sans I/O: it reports events, this prints them).

Three sources feed one queue (``services.udpchat.member.MemberLink``, the datagram I/O):
datagrams from the server, lines typed (from stdin by a daemon thread, or on a terminal from
a ``LineReader``: prompt_toolkit in the CLI, on this event loop) and the clock (the queue
wait is bounded by the peer's next deadline).  Everything received
is printed as one flushed line, so a script can drive the client through pipes (on a
terminal the CLI prints it above the prompt); notices about the room start with ``*``,
warnings about the network with ``!``.  With ``trace``, every datagram sent and received is
also printed on stderr, decoded field by field (``trace.format_datagram``).

Exit codes (the project's table): 0 after leaving (``exit``, ``/quit``, Ctrl-D or end of
input); 2 when no session could be had (no answer to JOIN within the retries or the
timeout, or the nickname refused with no terminal to ask for another); 3 when the server
shut down; 130 after Ctrl-C (which still leaves the room politely; a second one does not wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
import time
from collections.abc import Callable
from typing import Final, Protocol, TextIO

from switchboard.cli.exitcodes import ExitCode
from switchboard.display import safe
from switchboard.protocol.trace import host_port
from switchboard.services.udpchat.codec import LeftReason, nick_problem
from switchboard.services.udpchat.member import Datagram, Icmp, Line, MemberLink
from switchboard.services.udpchat.peer import (
    ChatPeer,
    Event,
    Ignored,
    JoinRefused,
    LeaveDone,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    MessageRefusedError,
    MessagesLost,
    NoAnswer,
    NotJoinedError,
    Phase,
    Rejoining,
    Retrying,
    SendRefused,
    ServerBack,
    ServerShutdown,
    ServerSilent,
    Welcomed,
)
from switchboard.services.udpchat.trace import format_datagram

#: Lines that leave the room.
QUIT_COMMANDS: Final = frozenset({"exit", "/quit"})

#: The prompt on a terminal, and the question after a refused nickname.
PROMPT: Final = "> "
NICK_QUESTION: Final = "Another nickname: "


class LineReader(Protocol):
    """A terminal line editor on the running event loop (``cli.terminal.LinePrompt``)."""

    async def read_async(self, message: Callable[[], str]) -> str:
        """The typed line; ``EOFError`` at Ctrl-D or after ``interrupt``,
        ``KeyboardInterrupt`` at Ctrl-C."""

    def interrupt(self) -> None:
        """End the prompt shown now, or the next one, with ``EOFError`` (and erase it)."""

    def refresh(self) -> None:
        """Redraw the prompt (its message changed)."""


def clock(timestamp_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp_ms / 1000))


def describe(event: Event) -> str | None:
    """The line shown for ``event`` (None: nothing to show)."""
    match event:
        case MessageReceived(nick, stamp, text):
            return f"[{clock(stamp)}] {safe(nick)}: {safe(text)}"
        case MemberJoined(nick, stamp):
            return f"[{clock(stamp)}] * {safe(nick)} joined"
        case MemberLeft(nick, stamp, reason):
            why = " (timed out)" if reason == LeftReason.TIMED_OUT else ""
            return f"[{clock(stamp)}] * {safe(nick)} left{why}"
        case MessagesLost("", count):
            return f"! {count} room announcement{'s were' if count > 1 else ' was'} lost"
        case MessagesLost(nick, count):
            plural = "messages" if count > 1 else "message"
            verb = "were" if count > 1 else "was"
            return f"! {count} {plural} from {safe(nick)} {verb} lost"
        case Welcomed(nick, others):
            if others == 0:
                company = "you are alone in the room"
            else:
                company = f"{others} other{'s' if others > 1 else ''} in the room"
            return f"* Welcome, {safe(nick)}! {company}"
        case ServerSilent(seconds):
            return f"! The server is not answering (nothing heard for {seconds:g} s)"
        case ServerBack():
            return "! The server is answering again"
        case ServerShutdown():
            return "* The server is shutting down"
        case Rejoining(reason):
            return f"! The server no longer knows us ({safe(reason)}); joining again"
    return None


class ChatSession:
    """One run of the client: join, relay lines both ways, leave."""

    def __init__(
        self,
        peer: ChatPeer,
        *,
        server: tuple[str, int],
        out: TextIO,
        err: TextIO,
        interactive: bool,
        reader: LineReader | None = None,
        join_timeout_s: float | None = None,
        trace: bool = False,
        trace_hex: bool = False,
    ) -> None:
        self.peer = peer
        self.server = server
        self.out = out
        self.err = err
        self.interactive = interactive or reader is not None
        self.reader = reader
        self.join_timeout_s = join_timeout_s
        self.trace = trace
        self.trace_hex = trace_hex
        self.interrupted = False
        self._join_deadline: float | None = None
        self.link = MemberLink()
        self.waiting_lines: list[bytes] = []
        self.asking_nick = False
        self.input_done = False
        self.exit_code: int | None = None
        self.icmp_reported = False
        self.ignored = 0

    def input_line(self, data: bytes) -> None:
        """Take ``data`` as a line typed by the user (``b""``: end of input).  Loop thread only."""
        self.link.put_line(data)

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def warn(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    async def run(self, stdin_fd: int | None) -> int:
        from switchboard.services.runtime import read_lines_in_thread

        loop = asyncio.get_running_loop()
        await self.link.open(self.server)
        put_line = self.link.put_line
        typing: asyncio.Task[None] | None = None
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._interrupted)
            if self.reader is not None:
                typing = asyncio.ensure_future(self._read_terminal(self.reader))
            elif stdin_fd is not None:

                def on_line(line: bytes) -> None:
                    loop.call_soon_threadsafe(put_line, line)

                read_lines_in_thread(stdin_fd, on_line)
            if not self._start_join(None):
                return ExitCode.NO_SESSION
            while self.exit_code is None:
                deadline = self.peer.next_deadline()
                if self._join_deadline is not None:
                    deadline = min(deadline or self._join_deadline, self._join_deadline)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                item = await self.link.next(timeout)
                now = loop.time()
                if isinstance(item, Datagram):
                    self._trace("<<-", item.data)
                    self.peer.receive(item.data, now)
                elif isinstance(item, Line):
                    self._line(item.data, now)
                elif isinstance(item, Icmp):
                    self._icmp(item.error)
                self.peer.tick(now)
                self._flush()
                self._handle_events(now)
                self._flush()
                self._check_join_deadline(now)
            if self.interrupted and self.exit_code == ExitCode.OK:
                return ExitCode.INTERRUPTED
            return self.exit_code
        finally:
            if typing is not None and self.reader is not None and not typing.done():
                self.reader.interrupt()  # the session is over: the prompt goes
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(typing, 1.0)
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
            self.link.close()

    # --- input ---------------------------------------------------------------------------------

    async def _read_terminal(self, reader: LineReader) -> None:
        """Lines typed at the prompt into the queue, until Ctrl-D, Ctrl-C or the end."""
        put_line = self.link.put_line
        while self.exit_code is None:
            try:
                text = await reader.read_async(self._prompt)
            except EOFError:
                put_line(b"")
                return
            except KeyboardInterrupt:
                self._interrupted()
                return
            put_line(text.encode("utf-8", "surrogateescape") + b"\n")

    def _prompt(self) -> str:
        return NICK_QUESTION if self.asking_nick else PROMPT

    def _interrupted(self) -> None:
        if self.interrupted or self.peer.phase is Phase.LEAVING:
            self.exit_code = ExitCode.INTERRUPTED  # again: do not wait for the acknowledgement
            self.link.put_line(b"")
            return
        self.interrupted = True
        self.waiting_lines.clear()  # typed before we were in: not said after all
        self.link.put_line(b"")

    def _check_join_deadline(self, now: float) -> None:
        if self._join_deadline is None or self.exit_code is not None or self.asking_nick:
            return
        if self.peer.phase is not Phase.JOINING:
            if self.peer.phase is not Phase.IDLE:
                self._join_deadline = None  # in (or leaving): the timeout was for getting in
            return
        if now >= self._join_deadline:
            host, port = self.server
            self.warn(
                f"! no answer from the server at {host_port(host, port)} to JOIN within "
                f"{self.join_timeout_s:g} s (--timeout)"
            )
            self.exit_code = ExitCode.NO_SESSION

    def _start_join(self, nick: str | None) -> bool:
        """Send a JOIN; False when the nickname is invalid and nobody can be asked again."""
        name = nick if nick is not None else self.peer.nick
        problem = nick_problem(name)
        if problem is not None:
            return self._nick_refused(f"invalid nickname {name!r}: {problem}")
        now = asyncio.get_running_loop().time()
        if self.join_timeout_s is not None:
            self._join_deadline = now + self.join_timeout_s
        self.peer.join(now, name)
        self._flush()
        return True

    def _nick_refused(self, message: str) -> bool:
        self.warn(f"switchboard udpchat join: {message}")
        if not self.interactive or self.input_done:
            self.exit_code = ExitCode.NO_SESSION
            return False
        self.asking_nick = True
        if self.reader is not None:
            self.reader.refresh()  # the prompt asks now
        else:
            self.err.write(NICK_QUESTION)
            self.err.flush()
        return True

    def _line(self, raw: bytes, now: float) -> None:
        if not raw:
            self.input_done = True
            if self.asking_nick:
                self.exit_code = ExitCode.INTERRUPTED if self.interrupted else ExitCode.NO_SESSION
            elif self.peer.phase is not Phase.JOINING:
                self._leave(now)
            # While joining, the lines read so far are sent once we are in, then we leave.
            return
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.warn("! line not sent: it is not valid UTF-8")
            return
        if self.asking_nick:
            self.asking_nick = False
            if self.reader is not None:
                self.reader.refresh()
            self._start_join(text.strip())
            return
        if text.strip() in QUIT_COMMANDS:
            self._leave(now)
            return
        if not text.strip():
            return
        if self.peer.phase is Phase.JOINING:
            self.waiting_lines.append(raw)  # sent once we are in
            return
        self._send(text, now)

    def _send(self, text: str, now: float) -> None:
        try:
            self.peer.send(text, now)
        except MessageRefusedError as exc:
            self.warn(f"! message not sent: {exc}")
        except NotJoinedError:
            pass  # leaving or left: the line has nowhere to go

    def _leave(self, now: float) -> None:
        self.waiting_lines.clear()
        if self.peer.phase in (Phase.LEAVING, Phase.CLOSED):
            return
        self.peer.leave(now)

    def _icmp(self, error: Exception) -> None:
        if not self.icmp_reported:
            self.icmp_reported = True
            host, port = self.server
            reason = getattr(error, "strerror", None) or str(error)
            self.warn(f"! nothing is listening at {host_port(host, port)} ({reason}); still trying")

    # --- output --------------------------------------------------------------------------------

    def _flush(self) -> None:
        for data in self.peer.datagrams_to_send():
            if self.link.can_send():
                self._trace("->>", data)
                self.link.send(data)

    def _trace(self, direction: str, data: bytes) -> None:
        if self.trace:
            self.warn(
                format_datagram(direction, data, at=dt.datetime.now(), with_hex=self.trace_hex)
            )

    def _handle_events(self, now: float) -> None:
        for event in self.peer.pop_events():
            line = describe(event)
            if line is not None:
                self.say(line)
            match event:
                case Welcomed():
                    self.icmp_reported = False
                    for raw in self.waiting_lines:
                        self._send(raw.decode("utf-8"), now)
                    self.waiting_lines.clear()
                    if self.input_done:
                        self._leave(now)
                case JoinRefused(_, reason):
                    self._nick_refused(f"nickname refused: {safe(reason)}")
                case NoAnswer(request, attempts, waited):
                    host, port = self.server
                    self.warn(
                        f"! no answer from the server at {host_port(host, port)} to {request} "
                        f"after {attempts} attempts ({waited:g} s)"
                    )
                    if request == "JOIN":
                        self.exit_code = ExitCode.NO_SESSION
                case Retrying(request, attempt, of):
                    self.warn(f"! no answer to {request} yet, retrying ({attempt}/{of})")
                case SendRefused(reason):
                    self.warn(f"! message refused by the server: {safe(reason)}")
                case LeaveDone():
                    if self.exit_code is None:
                        self.exit_code = ExitCode.OK
                case ServerShutdown():
                    self.exit_code = ExitCode.SESSION_ENDED
                case Ignored():
                    self.ignored += 1


async def join_room(
    peer: ChatPeer,
    *,
    host: str,
    port: int,
    stdin_fd: int | None,
    interactive: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    reader: LineReader | None = None,
    join_timeout_s: float | None = None,
    trace: bool = False,
    trace_hex: bool = False,
) -> int:
    """Run one member until it leaves; the exit code.  ``out``/``err`` default to what
    ``sys.stdout``/``sys.stderr`` are when it starts (a terminal's stdout proxy)."""
    session = ChatSession(
        peer,
        server=(host, port),
        out=out or sys.stdout,
        err=err or sys.stderr,
        interactive=interactive,
        reader=reader,
        join_timeout_s=join_timeout_s,
        trace=trace,
        trace_hex=trace_hex,
    )
    return await session.run(None if reader is not None else stdin_fd)
