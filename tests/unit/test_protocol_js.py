"""The JavaScript codec of the web page agrees with the Python codec byte for byte.

tests/js/protocol.test.mjs runs under Node's built-in test runner against the golden vectors
of docs/PROTOCOL.md as the Python codec decodes them (tests/support/golden.py writes them to
a JSON file), so `make test` checks both implementations of the specification.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support.golden import javascript_golden

JS_TESTS = Path(__file__).resolve().parents[1] / "js"


def test_the_javascript_codec_passes_its_node_tests(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install the Debian package nodejs")
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(javascript_golden()), encoding="utf-8")
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(JS_TESTS / "protocol.test.mjs")],
        env={"GOLDEN_JSON": str(golden), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "# fail 0" in result.stdout or "ℹ fail 0" in result.stdout, result.stdout[-3000:]
