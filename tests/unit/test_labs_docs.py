"""docs/LABS.md and docs/LABS.zh-CN.md against the registry: a section for every experiment
``switchboard lab`` lists, with its command and its real output; the English page quotes
each experiment's question as the listing says it; the README links both pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchboard.lab import NAMES, experiment

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("docs/LABS.md", "docs/LABS.zh-CN.md")


def sections(text: str) -> dict[str, str]:
    """Each ``## name`` section's text, by name."""
    parts = re.split(r"^## (\S+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("page", PAGES)
def test_every_experiment_has_a_section_with_its_command_and_output(page: str) -> None:
    found = sections((ROOT / page).read_text(encoding="utf-8"))
    for name in NAMES:
        assert name in found, f"{page} has no '## {name}' section"
        assert f"switchboard lab {name}" in found[name]
        assert f"```text\n$ switchboard lab {name}\n" in found[name], f"{page}: {name}'s output"
    assert list(found)[: len(NAMES)] == list(NAMES), "in the listing's order"


def test_the_english_page_asks_each_question_as_the_listing_does() -> None:
    found = sections((ROOT / "docs/LABS.md").read_text(encoding="utf-8"))
    for name in NAMES:
        assert one_line(experiment(name).question) in one_line(found[name]), name


def test_the_readme_links_both_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        assert f"]({page})" in readme
