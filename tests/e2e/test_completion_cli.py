"""``switchboard completion bash|zsh``: scripts generated from the parser, valid for their
shell, completing subcommands and options."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from support.servers import run_cli


def bash_complete(script: str, *words: str) -> list[str]:
    """What bash completes for the command line ``words`` (the last one being typed)."""
    probe = (
        f"{script}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
        '_shtab_switchboard "$1" "${@: -1}" "${@: -2:1}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", probe, "bash", *words], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    result = run_cli("completion", "bash")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_bash_script_is_valid_bash(bash_script: str) -> None:
    checked = subprocess.run(["bash", "-n"], input=bash_script, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "complete " in bash_script and "switchboard" in bash_script


def test_bash_completes_subcommands_and_options(bash_script: str) -> None:
    assert bash_complete(bash_script, "switchboard", "ti") == ["time"]
    assert set(bash_complete(bash_script, "switchboard", "")) >= {
        "serve", "time", "name", "list", "send", "listen", "client", "chat", "bench", "completion"
    }  # fmt: skip
    assert bash_complete(bash_script, "switchboard", "time", "--ti") == ["--timeout"]
    assert "--nick" in bash_complete(bash_script, "switchboard", "chat", "--")
    assert bash_complete(bash_script, "switchboard", "completion", "z") == ["zsh"]


def test_the_zsh_script() -> None:
    result = run_cli("completion", "zsh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#compdef switchboard")
    assert "--timeout" in result.stdout and "listen" in result.stdout
    if shutil.which("zsh"):
        checked = subprocess.run(["zsh", "-n"], input=result.stdout, text=True)
        assert checked.returncode == 0


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run_cli("completion", "fish")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_bash_completes_the_lab_and_its_experiments(bash_script: str) -> None:
    from switchboard.lab import NAMES

    assert "lab" in bash_complete(bash_script, "switchboard", "")
    assert set(bash_complete(bash_script, "switchboard", "lab", "")) >= set(NAMES)
    assert bash_complete(bash_script, "switchboard", "lab", "ports", "--bind-p") == ["--bind-port"]
