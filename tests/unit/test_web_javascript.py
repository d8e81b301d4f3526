"""The web page's JavaScript under Node's built-in test runner (``node --test``), so that
`make test` runs it: tests/js/protocol.test.mjs holds the JavaScript codec to the golden
vectors of docs/PROTOCOL.md as the Python codec decodes them (tests/support/golden.py writes
them to a JSON file) and to the Python message tables, byte for byte; tests/js/session.test.mjs
drives the page's session (answers, PONG and ACK, reconnecting) against a scripted socket.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from support.golden import javascript_golden

JS_TESTS = Path(__file__).resolve().parents[1] / "js"
TEST_FILES = sorted(JS_TESTS.glob("*.test.mjs"))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_node_tests_pass(test_file: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install the Debian package nodejs")
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(javascript_golden()), encoding="utf-8")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(test_file)],
        env={"GOLDEN_JSON": str(golden), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", result.stdout, re.MULTILINE)
    assert passed is not None and failed is not None, report
    assert int(passed.group(1)) >= 10 and int(failed.group(1)) == 0, report
