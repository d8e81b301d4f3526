"""The terminal clients' history file holds every line typed (message texts too): it is
created readable by its owner only, and an existing one that others could read is tightened
with a notice.  Run in a real pseudo-terminal, as a person would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from support.terminals import spawn_terminal

pexpect = pytest.importorskip("pexpect")


def run_client_session(state_home: Path, *lines: str) -> str:
    """``switchboard client`` in a pseudo-terminal: type ``lines``, then leave; the screen."""
    child = spawn_terminal("client", state_home=state_home, dimensions=(40, 120))
    try:
        child.expect_exact("]>")
        for line in lines:
            child.sendline(line)
            child.expect_exact("]>")
        child.sendline("quit")
        child.expect_exact("Bye.")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    return str(child.logfile_read.getvalue())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_history_file_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644 and 0755
    try:
        run_client_session(tmp_path / "state", "help")
    finally:
        os.umask(old_umask)
    history = tmp_path / "state" / "switchboard" / "client_history"
    assert "help" in history.read_text(encoding="utf-8")  # the file is the one in use
    assert mode(history) == 0o600
    assert mode(history.parent) == 0o700


def test_an_existing_readable_history_file_is_tightened_once(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "switchboard"
    folder.mkdir(parents=True)
    history = folder / "client_history"
    history.write_text("\n# 2026-01-01 00:00:00.000000\n+send 3 my secret\n", encoding="utf-8")
    history.chmod(0o644)
    screen = run_client_session(tmp_path / "state", "help")
    assert mode(history) == 0o600
    assert f"{history} could be read by others (mode 0644): now 0600" in screen
    assert "my secret" in history.read_text(encoding="utf-8")  # kept, not replaced
    # Said once: the next session finds nothing to tighten.
    assert "could be read by others" not in run_client_session(tmp_path / "state")
