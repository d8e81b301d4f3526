"""The Makefile's bootstrap: ``make serve``/``make client`` install the runtime dependencies
only, ``make test``/``make lint`` add the dev extra (checked with ``make -n``, which runs
nothing, as if pyproject.toml had just changed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("target", ["serve", "client"])
def test_running_installs_the_runtime_dependencies_only(target: str) -> None:
    plan = planned(target)
    assert "pip install --quiet -e ." in plan
    assert "[dev" not in plan, plan
    assert f"switchboard {target}" in plan


@pytest.mark.parametrize("target", ["test", "lint"])
def test_testing_adds_the_dev_extra(target: str) -> None:
    plan = planned(target)
    assert "-e '.[dev]'" in plan, plan
    # From a fresh clone it builds the venv first.
    assert plan.index("-m venv") < plan.index("-e '.[dev]'")
