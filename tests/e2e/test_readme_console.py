"""The README's console examples, run as a new user would type them, and compared with what
the README says they print.

Every ``$ command`` line of the README's ``text``/``console`` blocks is either run here, in
bash, against real servers (the commands as written: the server and clients find each other
through ``$SWITCHBOARD_PORT``, as the README says they do; only the lab services' fixed port is
changed to the test's), or listed in NOT_RUN with the reason and the test that covers it.  A
command added to the README falls into neither and fails the test until it is placed.

Output is compared line by line: every run of digits in the README matches any run of digits
(ids, ports, times and counts differ from run to run); everything else must be as printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.servers import ServerProcess, cli_env, spawn_logged, switchboard_command
from switchboard.client import Client

README = Path(__file__).resolve().parents[2] / "README.md"
RUN_TIMEOUT_S = 30.0

#: Commands not run here, and why (each is covered where said).
NOT_RUN = {
    "switchboard serve --trace": "runs until stopped; the trace format: test_trace_cli.py",
    "switchboard listen --nick alice": "stays connected; listen: test_oneshot_cli.py",
    "switchboard list": "the table is what a terminal shows (piped it is TSV): "
    "test_oneshot_cli.py runs list in a pty",
    '(echo "hello, room"; sleep 3) | switchboard udpchat join --nick alice': "needs bob "
    "typing in a terminal at the same time: test_services_cli.py",
    "switchboard udpchat join --nick bob": "interactive: test_services_cli.py",
    "switchboard client": "interactive: test_interactive_client.py",
    "switchboard chat --nick alice": "interactive: test_chat_cli.py",
    "switchboard chat --nick bob": "interactive: test_chat_cli.py",
    "switchboard chat --nick carol": "interactive: test_chat_cli.py",
}


@dataclass(frozen=True)
class Example:
    command: str
    expected: tuple[str, ...]
    line: int


def examples() -> list[Example]:
    """Every ``$`` command of the README's console blocks with the lines that follow it."""
    found: list[Example] = []
    in_block = False
    command: str | None = None
    expected: list[str] = []
    start = 0

    def close() -> None:
        nonlocal command
        if command is not None:
            while expected and not expected[-1].strip():
                expected.pop()
            found.append(Example(command, tuple(expected), start))
        command = None

    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            close()
            in_block = line.strip() in ("```text", "```console")
            continue
        if not in_block:
            continue
        prompt = re.match(r"^\w*\$ (.*)$", line)
        if prompt:
            close()
            # A trailing "# comment" explains the command to the reader; bash ignores it.
            command = re.sub(r"\s+#[^'\"]*$", "", prompt.group(1)).strip()
            expected, start = [], number
        elif command is not None:
            expected.append(line)
    return found


def pattern(line: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(line)))


def compare(example: Example, output: str) -> None:
    got = output.rstrip("\n").splitlines()
    want = list(example.expected)
    context = f"README line {example.line}: $ {example.command}\nprinted:\n{output}"
    assert len(got) == len(want), context
    for expected, actual in zip(want, got, strict=True):
        assert pattern(expected).fullmatch(actual), f"{context}\nwanted: {expected!r}"


@pytest.fixture
def lab() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """``switchboard serve --name lab-server`` as the README starts it, on the port that
    $SWITCHBOARD_PORT names, and the reversal service beside it."""
    server = spawn_logged(
        switchboard_command("serve", "--name", "lab-server", "--http", "off"),
        env=cli_env(SWITCHBOARD_PORT="0"),
    )
    try:
        reverse = spawn_logged(switchboard_command("reverse", "serve", "--port", "0"))
    except BaseException:
        server.stop()
        raise
    yield server, reverse
    reverse.stop()
    server.stop()


def run(command: str, env: dict[str, str]) -> str:
    # What a terminal shows: both streams, in order (the README shows errors too).
    done = subprocess.run(
        ["bash", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout


def test_every_readme_command_is_run_or_says_why_not() -> None:
    commands = {example.command for example in examples()}
    assert commands, "no console examples found in the README"
    assert not set(NOT_RUN) - commands, "NOT_RUN names commands the README no longer has"


def test_the_readme_console_examples_print_what_the_readme_says(
    lab: tuple[ServerProcess, ServerProcess],
) -> None:
    server, reverse = lab
    first_log_line = server.log[0] if server.log else ""
    env = cli_env(SWITCHBOARD_PORT=str(server.port))
    # `switchboard` on PATH, as after `source .venv/bin/activate`.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    ran = 0
    # The clients the examples talk about: alice (#1, in lobby and chess) and two more in lobby.
    with (
        Client("127.0.0.1", server.port, nick="alice") as alice,
        Client("127.0.0.1", server.port) as bob,
        Client("127.0.0.1", server.port) as carol,
    ):
        assert alice.client_id == 1
        for client in (alice, bob, carol):
            client.join("lobby")
        alice.join("chess")
        for example in examples():
            if example.command in NOT_RUN:
                continue
            if example.command == "switchboard serve --name lab-server":
                # Started by the fixture exactly so; its first line is the listening line.
                compare(
                    Example(example.command, example.expected[:1], example.line), first_log_line
                )
                ran += 1
                continue
            command = example.command.replace(" 7001", f" {reverse.port}")
            if command.endswith("switchboard reverse connect"):
                command += f" --port {reverse.port}"
            compare(example, run(command, env))
            ran += 1
    assert ran >= 8, f"only {ran} README examples ran"
