"""docs/switchboard.example.toml against the settings' one declaration (``SETTINGS``, from
server/config.py, which reads its defaults from defaults.py): every setting named, each at
its default, and nothing else.  The list of settings comes from the code, so a new one
fails here by name until the example shows it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from switchboard.server.config import SETTINGS, ServerConfig, read_toml

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "switchboard.example.toml"
#: ``# key = value``: a setting shown commented out.
COMMENTED = re.compile(r"^#\s*([a-z][a-z_-]*)\s*=\s*(.+)$")


def settings() -> dict[str, Any]:
    """Every setting and its default; None where there is no fixed one (a default computed
    at start, such as this host's name)."""
    return {s.name: s.default for s in SETTINGS}


def commented_settings() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = COMMENTED.match(line)
        if match:
            key = match.group(1).replace("-", "_")
            out[key] = tomllib.loads(f"v = {match.group(2)}")["v"]  # an example must parse
    return out


def test_every_setting_is_in_the_example_and_nothing_else() -> None:
    given = read_toml(EXAMPLE)
    shown = set(given) | set(commented_settings())
    missing = sorted(set(settings()) - shown)
    assert not missing, (
        f"{EXAMPLE.name} lacks {', '.join(missing)}: add each with its default and a comment"
    )
    unknown = sorted(shown - set(settings()))
    assert not unknown, f"{EXAMPLE.name} names settings the server does not have: {unknown}"


def test_values_are_the_defaults_and_only_settings_without_one_are_commented_out() -> None:
    given = read_toml(EXAMPLE)
    for name, default in settings().items():
        if default is None:
            assert name not in given, f"{name} has no default value: show it commented out"
            continue
        assert name in given, f"{name} is commented out but has a default ({default!r})"
        assert given[name] == default and type(given[name]) is type(default), (
            f"{name} = {given[name]!r} in {EXAMPLE.name}, but its default is {default!r}"
        )
    assert ServerConfig.load(EXAMPLE) == ServerConfig(name=ServerConfig.load(EXAMPLE).name)


def test_every_setting_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z][a-z_-]*\s*=", line) or COMMENTED.match(line):
            above = lines[i - 1] if i else ""
            assert above.startswith("#") or re.match(r"^[a-z][a-z_-]*\s*=", above), (
                f"line {i + 1} ({line!r}) has no comment above it"
            )
