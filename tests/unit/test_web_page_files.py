"""The web page's files, read as text: nothing loaded from elsewhere, no way for a peer's
string to become HTML, and the reconnection delays the terminal clients use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchboard import defaults
from switchboard.protocol import wire

STATIC = Path(__file__).resolve().parents[2] / "src" / "switchboard" / "web" / "static"
FILES = sorted(p for p in STATIC.iterdir() if p.suffix in {".html", ".js", ".css"})


def test_the_page_is_these_files() -> None:
    assert {p.name for p in FILES} == {
        "index.html",
        "app.js",
        "session.js",
        "protocol.js",
        "style.css",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_nothing_is_loaded_from_elsewhere(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # No absolute or protocol-relative URL in an attribute, an import, a url() or a string.
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?(?:[a-z]+:)?//""", text, re.I)
    assert not re.search(r"""\bimport\b[^;]*?["'](?:[a-z]+:)?//""", text)
    assert not re.search(r"""url\(\s*["']?(?:[a-z]+:)?//""", text, re.I)
    assert not re.search(r"@import|@font-face", text)


@pytest.mark.parametrize("path", [p for p in FILES if p.suffix == ".js"], ids=lambda p: p.name)
def test_no_string_is_ever_parsed_as_html(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "createContextualFragment", "srcdoc"):  # fmt: skip
        assert sink not in text, f"{path.name} uses {sink}"


def test_the_content_security_policy_allows_only_the_page_itself() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert policy is not None
    directives = dict(
        (d.split()[0], d.split()[1:]) for d in policy.group(1).split(";") if d.strip()
    )
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]


def test_reconnection_delays_are_the_terminal_clients() -> None:
    session = (STATIC / "session.js").read_text(encoding="utf-8")
    initial = re.search(r"RECONNECT_INITIAL_MS = (\d+);", session)
    cap = re.search(r"RECONNECT_MAX_MS = (\d+);", session)
    assert initial is not None and cap is not None
    assert int(initial.group(1)) == round(defaults.RECONNECT_INITIAL_S * 1000)
    assert int(cap.group(1)) == round(defaults.RECONNECT_MAX_S * 1000)


def test_the_websocket_subprotocol_is_the_servers() -> None:
    session = (STATIC / "session.js").read_text(encoding="utf-8")
    name = re.search(r'SUBPROTOCOL = "([^"]+)";', session)
    assert name is not None and name.group(1) == wire.WEBSOCKET_SUBPROTOCOL
