"""``switchboard completion bash|zsh``: a shell completion script generated from the parser
(shtab), so every command, option and choice completes as ``--help`` lists it."""

from __future__ import annotations

import argparse
from typing import Any, Final

from .common import say

SHELLS: Final = ("bash", "zsh")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for SHELL, generated from this program's "
        "options.  bash: add `source <(switchboard completion bash)` to ~/.bashrc.  zsh: save "
        "the output as _switchboard in a directory on your $fpath.",
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=cmd_completion)


def script(shell: str) -> str:
    import shtab

    from .main import build_parser

    return str(shtab.complete(build_parser(), shell=shell))


def cmd_completion(args: argparse.Namespace) -> int:
    say(script(args.shell).rstrip("\n"))
    return 0
