"""What people see lives in ``cli/``: the lab services report events and outcomes, and the
CLI prints them, prompts, and picks the exit code from the one table (``ExitCode``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import switchboard.services

SERVICES = Path(switchboard.services.__file__).parent
MODULES = sorted(SERVICES.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVICES)))
def test_a_service_module_prints_nothing_and_picks_no_exit_code(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("print", "input")
        ):
            found.append(f"line {node.lineno}: {node.func.id}()")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
            and node.attr in ("stdout", "stderr", "exit")
        ):
            found.append(f"line {node.lineno}: sys.{node.attr}")
        if isinstance(node, ast.Name) and node.id.startswith("EXIT_"):
            found.append(f"line {node.lineno}: {node.id}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("switchboard.cli"):
            found.append(f"line {node.lineno}: imports {node.module}")
    assert not found, found


def test_every_service_module_is_checked() -> None:
    names = {p.name for p in MODULES}
    assert {"server.py", "peer.py", "core.py", "client.py"} <= names
