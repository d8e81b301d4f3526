"""Where Switchboard keeps its state on this machine: $XDG_STATE_HOME/switchboard, or
~/.local/state/switchboard (the XDG base directory spec's state directory).  The server keeps
its history database there (``--data-dir``), the terminal clients their line-editing history
and ``chat`` what it last showed of each room."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """$XDG_STATE_HOME/switchboard, or ~/.local/state/switchboard (RuntimeError when there is
    no home directory to be found)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "switchboard"
