"""The server's modules import one another one way only, and cli/ uses only its public names.

Bytes (connection) -> decisions (handlers) -> state (registry, the directory): a module may
import those below it, never one that imports it back, directly or around a loop.  Imports
made only for type annotations (under ``if TYPE_CHECKING:``) and imports inside functions
count too: a loop of them is the same tangle for a reader, and turns into an import error
the day one of them is needed at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import switchboard

PACKAGE = Path(switchboard.__file__).parent
SERVER = PACKAGE / "server"


def _server_imports(path: Path, modules: set[str]) -> set[str]:
    """The server modules that the module at ``path`` imports, wherever the import is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                base = node.module
            elif node.level == 0 and (node.module or "").startswith("switchboard.server"):
                base = (node.module or "").removeprefix("switchboard.server").lstrip(".")
            else:
                continue
            if base:
                found.add(base.split(".")[0])
            else:
                found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("switchboard.server."):
                    found.add(alias.name.split(".")[2])
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """server module -> the server modules it imports (the package's __init__ left out: it
    is the public face that imports the others, and none of them may import it)."""
    modules = {p.stem for p in SERVER.glob("*.py") if p.stem != "__init__"}
    return {name: _server_imports(SERVER / f"{name}.py", modules) for name in sorted(modules)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                loop = visit(nxt)
                if loop is not None:
                    return loop
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            loop = visit(node)
            if loop is not None:
                return loop
    return None


def test_the_cycle_finder_finds_direct_and_indirect_loops() -> None:
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_two_server_modules_import_each_other() -> None:
    graph = import_graph()
    assert {"app", "connection", "handlers", "registry"} <= graph.keys()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_layers_point_one_way() -> None:
    """connection -> handlers -> directory -> registry, and nothing but app knows the server
    object."""
    graph = import_graph()
    assert "handlers" in graph["connection"]
    assert "directory" in graph["handlers"]
    assert "registry" in graph["directory"]
    for name, imported in graph.items():
        if name != "app":
            assert "app" not in imported, f"server/{name}.py imports server/app.py"


def test_no_server_module_imports_the_server_package() -> None:
    for path in SERVER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
                names = {alias.name for alias in node.names}
                assert all((SERVER / f"{n}.py").exists() for n in names), (path.name, names)
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module != "switchboard.server", path.name


def test_cli_uses_only_the_server_packages_public_names() -> None:
    for path in (PACKAGE / "cli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("switchboard.server."), (
                    f"cli/{path.name} imports {node.module}: use switchboard.server's exports"
                )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("switchboard.server."), path.name
