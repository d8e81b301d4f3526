"""The line editor of the lab clients (``reverse connect``, ``udpchat join``) on a terminal.

prompt_toolkit, as the menu and chat clients use it: editing and arrow keys, history (of the
session), and whatever is printed while a prompt is drawn goes above it, the typed line
redrawn intact (``output_above_prompt``).  Unlike those clients, Ctrl-C ends the program
(``KeyboardInterrupt``, exit code 130) and Escape pressed alone can be bound to a line of
its own (the reversal lab's way to say goodbye).

``LinePrompt.read`` (blocking, main thread) and ``read_async`` (on the running event loop)
return the typed line, or raise ``EOFError`` (Ctrl-D, or ``interrupt`` called from another
thread when the session ended under the prompt) or ``KeyboardInterrupt`` (Ctrl-C).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .interactive import output_above_prompt

#: The exit code of a program ended by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED: Final = 130

if TYPE_CHECKING:  # prompt_toolkit is imported only when a terminal is there
    from prompt_toolkit import PromptSession


class LinePrompt:
    """One prompt_toolkit session; ``escape_line``: what a lone Escape key submits."""

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
        self._lock = threading.Lock()
        self._interrupted = False

    def read(self, message: str | Callable[[], str]) -> str:
        self._session.app.erase_when_done = False
        return self._session.prompt(message, pre_run=self._end_if_interrupted)

    async def read_async(self, message: str | Callable[[], str]) -> str:
        self._session.app.erase_when_done = False
        return await self._session.prompt_async(message, pre_run=self._end_if_interrupted)

    def refresh(self) -> None:
        """Redraw the prompt (its message changed); from the prompt's own event loop."""
        app = self._session.app
        if app.is_running:
            app.invalidate()

    def interrupt(self) -> None:
        """From any thread: end the prompt shown now (or the next one) with ``EOFError``,
        erasing it, since the session it asked for is over."""
        with self._lock:
            self._interrupted = True
        app = self._session.app
        loop = app.loop
        if app.is_running and loop is not None:
            loop.call_soon_threadsafe(self._end_if_interrupted)

    def _end_if_interrupted(self) -> None:
        with self._lock:
            if not self._interrupted:
                return
        app = self._session.app
        if app.is_running and app.future is not None and not app.future.done():
            app.erase_when_done = True
            app.exit(exception=EOFError())


def interrupted() -> int:
    """End the terminal's line after Ctrl-C (the shell's prompt must not follow ``^C``) and
    return the exit code for it."""
    if sys.stdout.isatty():
        sys.stdout.write("\n")
        sys.stdout.flush()
    return EXIT_INTERRUPTED


__all__ = ["EXIT_INTERRUPTED", "LinePrompt", "interrupted", "output_above_prompt"]
