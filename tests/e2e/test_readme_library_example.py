"""The README's client-library example, run as written (only the port changed) against a
real server, with what each of its comments says it prints checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support.servers import ServerThread, cli_env
from switchboard.client import Client

README = Path(__file__).resolve().parents[2] / "README.md"
WAIT_S = 15.0


def library_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The client library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_library_example_prints_what_it_says(server: ServerThread) -> None:
    code = library_example()
    assert 'Client("127.0.0.1", 7000' in code
    code = code.replace('Client("127.0.0.1", 7000', f'Client("127.0.0.1", {server.port}')
    # Client #1, whom the example sends to; it acknowledges by itself.
    with Client("127.0.0.1", server.port, nick="alice") as alice:
        assert alice.client_id == 1
        alice.join("lobby")  # the one room the example's ROOMS loop prints
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        try:
            assert proc.stdout is not None
            out: list[str] = []
            # The loop over indications runs until the connection ends: wait for the
            # first thing it prints, then shut the server down.
            while len(out) < 9:
                line = proc.stdout.readline()
                assert line, (out, proc.communicate(timeout=WAIT_S))
                out.append(line.rstrip("\n"))
            server.stop()
            rest, err = proc.communicate(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out += rest.splitlines()
    assert proc.returncode == 0, err
    first, me, bob, status, resolved, room, refused, *receipts = out[:9]
    assert re.fullmatch(r"2 \d{4}-\d\d-\d\dT\S+ test-server", first), first
    assert re.fullmatch(r"1 127\.0\.0\.1 \d+ alice", me)
    assert re.fullmatch(r"2 127\.0\.0\.1 \d+ bob", bob)
    # What the comments say, word for word.
    assert status == "DELIVERED"
    assert "# DELIVERED" in code
    assert resolved == "1"  # "alice" is client #1
    assert room == "lobby 1 False"  # bob is not in it
    assert refused == "6 no client #99 is connected"
    assert f"# {refused}" in code
    # The receipt waited for is yielded by the loop as well, as the README says (with the
    # receipt of the message sent by nickname).
    assert receipts == ["Receipt", "Receipt"]
    assert "RECEIPT (the one above too)" in code
    assert out[9:] == ["Shutdown"], out
