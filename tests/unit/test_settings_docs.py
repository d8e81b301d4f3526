"""The settings' one declaration (``ServerConfig``'s fields in server/config.py) against what
the docs say of them: README's list of ``switchboard serve`` options and the limits tables of
docs/PROTOCOL.md and docs/SECURITY.md.  A setting added, renamed or given another default
fails here, naming the place to change, until the docs follow (docs/switchboard.example.toml
is checked by test_example_config.py).

The docs write a default as people read it (``65,536 bytes``, ``64 KiB``, ``10 s``); a check
accepts those spellings of the declared value, as a whole number (``4`` is not found in
``4096``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchboard.server.config import SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[2]
BY_FLAG = {flag: s for s in SETTINGS for flag in s.flags}
#: Options of ``serve`` that are not settings of the server.
OTHER_SERVE_OPTIONS = {"--config", "--trace", "--trace-hex", "-h", "--help"}
#: An option in backticks, alone or first in a group: `--max-clients`, `-H/--host`,
#: `--log-format text|json`.
OPTION = re.compile(r"`(-{1,2}[a-zA-Z][a-z-]*(?:/-{1,2}[a-z][a-z-]*)*)[^`]*`")


def spellings(setting: Setting) -> list[str]:
    """The ways the docs may write the setting's default; none for a default that is no
    fixed value (None, this host's name) or a switch that is off."""
    value = setting.default
    if value is None or setting.kind is bool:
        return []
    if setting.kind is str:
        return [value]
    out = {f"{value:g}", f"{value:,g}"} if setting.kind is float else set()
    if float(value).is_integer():
        out |= {f"{int(value)}", f"{int(value):,}"}
    if setting.kind is int:
        for size, unit in ((1024 * 1024, "MiB"), (1024, "KiB")):
            if value >= size and value % size == 0:
                out.add(f"{value // size} {unit}")
    return sorted(out)


def shows_default(setting: Setting, text: str) -> bool:
    for spelling in spellings(setting):
        if re.search(rf"(?<![\d.,]){re.escape(spelling)}(?![\d]|[.,]\d)", text):
            return True
    return not spellings(setting)


def options_in(text: str) -> list[str]:
    return [flag for group in OPTION.findall(text) for flag in group.split("/")]


def grouped(text: str, first: re.Match[str], second: re.Match[str]) -> bool:
    """Whether two options are written as one group (`--rate`/`--burst`)."""
    return not text[first.end() : second.start()].strip("/ \n")


def readme_problems(readme: str) -> list[str]:
    """Every setting's option in README's list of ``serve`` options, with its default written
    after it (before the next option); no option there that ``serve`` does not have."""
    start = readme.index("Every option has a default")
    paragraph = readme[start : readme.index("\n\n", start)]
    problems = []
    # Each option, with the text up to the next option that is not in its group
    # (`--rate`/`--burst` (10,000 requests/s, bursts of 20,000)).
    matches = list(OPTION.finditer(paragraph))
    said: dict[str, list[str]] = {}
    for i, match in enumerate(matches):
        j = i
        while j + 1 < len(matches) and grouped(paragraph, matches[j], matches[j + 1]):
            j += 1
        end = matches[j + 1].start() if j + 1 < len(matches) else len(paragraph)
        for flag in match.group(1).split("/"):
            said.setdefault(flag, []).append(paragraph[match.end() : end])
    for flag in said:
        if flag not in BY_FLAG and flag not in OTHER_SERVE_OPTIONS:
            problems.append(f"README lists {flag}, which `switchboard serve` does not have")
    for setting in SETTINGS:
        long = setting.flags[-1]
        if long not in said:
            problems.append(f"README's list of serve options lacks {long}")
        elif not any(shows_default(setting, text) for text in said[long]):
            problems.append(f"README gives {long} no default, or not {spellings(setting)}")
        if setting.short and setting.short not in said:
            problems.append(f"README lists {long} without its short form {setting.short}")
    return problems


def limits_table(text: str, heading: str) -> list[list[str]]:
    """The rows of the table under ``heading``, each as its cells."""
    start = text.index(f"\n{heading}\n")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    header, rows = rows[0], rows[2:]
    assert header[1:3] == ["Default", "Option"], header
    return rows


def table_problems(name: str, rows: list[list[str]]) -> list[str]:
    """Each option in the Option column is a setting, with its default in the Default column
    (unless that cell names the option itself: "as many as `--max-clients`"); each limit
    among the settings has a row."""
    problems = []
    named = set()
    for limit, default, option, *_ in rows:
        for flag in options_in(option):
            setting = BY_FLAG.get(flag)
            if setting is None:
                problems.append(f"{name}: the row {limit!r} names {flag}, which is no setting")
                continue
            named.add(setting.name)
            if flag not in options_in(default) and not shows_default(setting, default):
                problems.append(
                    f"{name}: the row {limit!r} gives {flag} the default {default!r}, "
                    f"not {spellings(setting)}"
                )
    for setting in SETTINGS:
        if setting.limit and setting.name not in named:
            problems.append(f"{name}'s limits table has no row for {setting.flags[-1]}")
    return problems


TABLES = {
    "docs/PROTOCOL.md": "## Limits and defaults",
    "docs/SECURITY.md": "## Limits and their defaults",
}


def test_readme_lists_every_serve_option_with_its_default() -> None:
    assert readme_problems((ROOT / "README.md").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", sorted(TABLES))
def test_limits_tables_name_every_limit_with_its_default(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert table_problems(path, limits_table(text, TABLES[path])) == []


def test_the_checks_catch_a_wrong_default_a_missing_option_and_an_unknown_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "README gives --max-rooms no default, or not" in " ".join(
        readme_problems(readme.replace("`--max-rooms` (10,000", "`--max-rooms` (20,000"))
    )
    assert readme_problems(readme.replace("`--shutdown-grace`", "`--stop-grace`")) == [
        "README lists --stop-grace, which `switchboard serve` does not have",
        "README's list of serve options lacks --shutdown-grace",
    ]
    protocol = (ROOT / "docs/PROTOCOL.md").read_text(encoding="utf-8")
    doctored = protocol.replace("| frame size, header included | 65,536 bytes |",
                                "| frame size, header included | 65,535 bytes |")  # fmt: skip
    problems = table_problems("P", limits_table(doctored, TABLES["docs/PROTOCOL.md"]))
    assert problems == [
        "P: the row 'frame size, header included' gives --max-frame the default "
        "'65,535 bytes', not ['64 KiB', '65,536', '65536']"
    ]
    doctored = re.sub(r"\n\| rooms on the server \|[^\n]*", "", protocol)
    problems = table_problems("P", limits_table(doctored, TABLES["docs/PROTOCOL.md"]))
    assert problems == ["P's limits table has no row for --max-rooms"]


def test_spellings_are_whole_numbers() -> None:
    text_setting = next(s for s in SETTINGS if s.name == "max_text")  # 4096
    assert shows_default(text_setting, "4 KiB") and shows_default(text_setting, "4,096 bytes")
    assert not shows_default(text_setting, "40,960") and not shows_default(text_setting, "4.5 KiB")
