"""The terminal toolkit of every interactive command: ``client`` (the menu), ``chat``,
``reverse connect`` and ``udpchat join``.

* ``output_above_prompt``: whatever is printed while a prompt is drawn (notices from a
  receiver thread, lines arriving from the network) goes above it, the typed line redrawn
  intact (prompt_toolkit's stdout proxy, with a shorter pause between redraws); what is
  printed while no prompt is drawn is written at once.
* ``Output``: whole lines and tables from any thread, styled by name (``STYLES``), through
  a rich console made with ``markup=False``: a peer's "[bold]" is text, never markup.
* ``TerminalUi`` (menu and chat) and ``LinePrompt`` (the lab clients): prompt_toolkit
  sessions with line editing and history, both ended from another thread by ``interrupt``
  (the session ended under the prompt: ``EOFError``, as Ctrl-D).
* The history file (``history_path``, ``private_history_file``): under $XDG_STATE_HOME,
  created 0600 in a 0700 directory, tightened to 0600 if others could read it.
* ``run_terminal``: a menu or chat app on this terminal, all of the above put together.

The Ctrl-C and Ctrl-D conventions: Ctrl-D (EOF) ends the session everywhere (exit 0).  In
the menu and the chat, Ctrl-C clears the line typed, as in a shell, and on an empty line says
how to leave; in the lab clients, as the lab prescribes, Ctrl-C ends the program
(``KeyboardInterrupt``; ``interrupted`` ends the terminal's line, exit 130).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, cast

from rich.console import Console, RenderableType
from rich.text import Text

from switchboard.statedir import state_dir

from .exitcodes import ExitCode

if TYPE_CHECKING:  # prompt_toolkit is imported only when a terminal is there
    from prompt_toolkit import PromptSession

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
#: Seconds the stdout proxy waits between redraws of the prompt, batching bursts of output.
#: prompt_toolkit's default (0.2 s) visibly draws the prompt before a command's output lands
#: above it; 20 ms is still one redraw for a burst like ``time 100``.
PROXY_PAUSE_S: Final = 0.02


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
        self._ender = PromptEnder(self._session, erase=False)

    def read_command(self) -> str | None:
        from prompt_toolkit.formatted_text import FormattedText

        while True:
            try:
                return self._session.prompt(
                    lambda: FormattedText(self._state.prompt_parts()),
                    pre_run=self._ender.end_if_asked,
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
        self._ender.ask()


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


def history_path(name: str) -> Path:
    """Where the history file ``name`` lives: $XDG_STATE_HOME/switchboard/ (or
    ~/.local/state/switchboard/)."""
    return state_dir() / name


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
        lock = threading.Lock()
        sys.stdout = cast(TextIO, AbovePrompt(proxy, saved[0], lock))
        sys.stderr = cast(TextIO, AbovePrompt(proxy, saved[1], lock))
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


class AbovePrompt:
    """``sys.stdout`` or ``sys.stderr`` inside ``output_above_prompt``: through the proxy
    while a prompt is shown, written at once while none is.

    The proxy writes from a thread of its own, later: a line printed between two prompts
    (the reversal service's answer, printed before the next prompt is drawn) could then land
    after the new prompt, on its line ("Myself: Server: ...").  Written at once, it is on
    the screen when ``write`` returns."""

    def __init__(self, proxy: Any, stream: TextIO, lock: threading.Lock) -> None:
        self._proxy = proxy
        self._stream = stream
        self._lock = lock

    def _prompt_shown(self) -> bool:
        app = self._proxy.app_session.app
        return app is not None and app.loop is not None

    def write(self, data: str) -> int:
        if self._prompt_shown():
            return int(self._proxy.write(data))
        with self._lock:
            return self._stream.write(data)

    def flush(self) -> None:
        if self._prompt_shown():
            self._proxy.flush()
        else:
            with self._lock:
                self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proxy, name)


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


class LinePrompt:
    """The lab clients' prompt (``reverse connect``, ``udpchat join``): one prompt_toolkit
    session with the session's history; ``escape_line``: what a lone Escape key submits (the
    reversal lab's way to say goodbye).

    ``read`` (blocking, main thread) and ``read_async`` (on the running event loop) return
    the typed line, or raise ``EOFError`` (Ctrl-D, or ``interrupt`` called from another
    thread when the session ended under the prompt) or ``KeyboardInterrupt`` (Ctrl-C).
    """

    def __init__(self, *, escape_line: str | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

        bindings = KeyBindings()
        if escape_line is not None:
            # Bound alone, Escape is still the start of arrow keys and of Meta chords:
            # prompt_toolkit waits for what follows before deciding it was pressed alone.
            @bindings.add("escape")
            def _escape(event: KeyPressEvent) -> None:
                event.current_buffer.text = escape_line
                event.current_buffer.validate_and_handle()

        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), key_bindings=bindings
        )
        self._ender = PromptEnder(self._session, erase=True)

    def read(self, message: str | Callable[[], str]) -> str:
        self._session.app.erase_when_done = False
        return self._session.prompt(message, pre_run=self._ender.end_if_asked)

    async def read_async(self, message: str | Callable[[], str]) -> str:
        self._session.app.erase_when_done = False
        return await self._session.prompt_async(message, pre_run=self._ender.end_if_asked)

    def refresh(self) -> None:
        """Redraw the prompt (its message changed); from the prompt's own event loop."""
        app = self._session.app
        if app.is_running:
            app.invalidate()

    def interrupt(self) -> None:
        """From any thread: end the prompt shown now (or the next one) with ``EOFError``,
        erasing it, since the session it asked for is over."""
        self._ender.ask()


class PromptEnder:
    """Ends a session's prompt with ``EOFError`` when asked from any thread: the prompt
    shown now, or the next one (``end_if_asked`` is its ``pre_run`` hook, so a prompt that
    is just starting sees the request); ``erase``: the prompt vanishes from the screen."""

    def __init__(self, session: PromptSession[str], *, erase: bool) -> None:
        self._session = session
        self._erase = erase
        self._lock = threading.Lock()
        self._asked = False

    def ask(self) -> None:
        with self._lock:
            self._asked = True
        app = self._session.app
        loop = app.loop
        if app.is_running and loop is not None:
            loop.call_soon_threadsafe(self.end_if_asked)

    def end_if_asked(self) -> None:
        with self._lock:
            if not self._asked:
                return
        app = self._session.app
        if app.is_running and app.future is not None and not app.future.done():
            if self._erase:
                app.erase_when_done = True
            app.exit(exception=EOFError())


def interrupted() -> int:
    """End the terminal's line after Ctrl-C (the shell's prompt must not follow ``^C``) and
    return the exit code for it."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
        sys.stdout.flush()
    return ExitCode.INTERRUPTED


__all__ = [
    "STYLES",
    "LinePrompt",
    "Output",
    "PlainUi",
    "PromptEnder",
    "PromptState",
    "TerminalApp",
    "TerminalUi",
    "Ui",
    "history_path",
    "interrupted",
    "output_above_prompt",
    "plain_console",
    "plain_stdio",
    "private_history_file",
    "run_terminal",
    "terminal_console",
]
