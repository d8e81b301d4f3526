"""``output_above_prompt``: what is printed while no prompt is shown is on the screen when
``print`` returns, so that the next prompt is drawn after it, never under it."""

from __future__ import annotations

import io
import sys

import pytest

from switchboard.cli.terminal import output_above_prompt


def test_a_line_printed_between_prompts_is_written_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # prompt_toolkit's proxy wrote it later, from its own thread: the reversal client's
    # next prompt could then be drawn first ("Myself: Server: cbXa", CI's pty flake).
    screen, errors = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", errors)
    with output_above_prompt():
        print("Server: cbXa")
        assert screen.getvalue() == "Server: cbXa\n"
        print("Connection interrupted", file=sys.stderr)
        assert errors.getvalue() == "Connection interrupted\n"
    assert sys.stdout is screen and sys.stderr is errors
