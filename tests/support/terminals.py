"""The interactive clients (``switchboard client``, ``switchboard chat``) in a real
pseudo-terminal (pexpect), as a person runs them."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from support.servers import cli_env
from support.waiting import WAIT_S


def spawn_terminal(
    *args: str,
    state_home: Path,
    dimensions: tuple[int, int],
    timeout: float = WAIT_S,
    **env: str,
) -> Any:
    """``switchboard ARGS`` in a pseudo-terminal of ``dimensions`` (rows, columns), its history
    under ``state_home``; ``child.logfile_read`` collects everything the terminal showed."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard", *args],
        env=cli_env(
            **{
                "TERM": "xterm-256color",
                # pexpect's terminal never answers "where is the cursor?"; without this
                # prompt_toolkit waits for the answer and then warns about it.
                "PROMPT_TOOLKIT_NO_CPR": "1",
                "XDG_STATE_HOME": str(state_home),
                **env,
            }
        ),
        encoding="utf-8",
        timeout=timeout,
        dimensions=dimensions,
    )
    child.logfile_read = io.StringIO()
    return child


def spawn_chat(port: int, nick: str, tmp_path: Path, *args: str) -> Any:
    """``switchboard chat ARGS`` in a 30x120 pseudo-terminal (pexpect)."""
    return spawn_terminal(
        "chat", "--port", str(port), "--nick", nick, *args,
        state_home=tmp_path / "state", dimensions=(30, 120),
    )  # fmt: skip
