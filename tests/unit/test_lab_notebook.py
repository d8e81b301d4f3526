"""The lab's notebook and how ``switchboard lab`` reports an experiment that cannot run: one
line and exit 2 for root, a missing tool or an impossible option, never a traceback."""

from __future__ import annotations

import argparse
import json
import os

import pytest

import switchboard.lab
from switchboard.cli.main import main
from switchboard.lab.notebook import (
    Experiment,
    Explanation,
    LabUnavailable,
    MissingTool,
    Notebook,
    Step,
    Table,
    no_arguments,
    require_tool,
)


def test_the_notebook_keeps_entries_in_order_and_tells_its_listener() -> None:
    heard: list[object] = []
    nb = Notebook(pcap="x.pcap", listener=heard.append)
    nb.step("did a thing")
    nb.table("t", ("a", "b"), [(1, 2)])
    nb.explain("because")
    nb.observe("accept_queue", {"1": 2})
    assert heard == nb.entries
    table = Table("t", ("a", "b"), ((1, 2),))
    assert nb.entries == [Step("did a thing"), table, Explanation("because")]
    assert nb.observations == {"accept_queue": {"1": 2}} and nb.pcap == "x.pcap"


def test_observations_must_be_json_and_recorded_once() -> None:
    nb = Notebook()
    with pytest.raises(ValueError, match="not JSON-able"):
        nb.observe("when", object())
    with pytest.raises(ValueError, match="not JSON-able"):
        nb.observe("nan", float("nan"))
    nb.observe("n", 1)
    with pytest.raises(ValueError, match="already"):
        nb.observe("n", 2)
    with pytest.raises(ValueError, match="cells"):
        nb.table("t", ("a", "b"), [(1,)])


def test_a_missing_tool_names_its_debian_package() -> None:
    assert require_tool("sh", "dash")
    with pytest.raises(MissingTool, match=r"apt-get install tshark-nonesuch"):
        require_tool("no-such-program-here", "tshark-nonesuch")


def fake(name: str, *, needs_root: bool = False, fails: Exception | None = None) -> Experiment:
    def run(args: argparse.Namespace, nb: Notebook) -> None:
        nb.step("running")
        if fails is not None:
            raise fails
        nb.observe("ran", True)

    return Experiment(name, "a question?", no_arguments, run, needs_root=needs_root)


def run_as(
    monkeypatch: pytest.MonkeyPatch, exp: Experiment, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    real = switchboard.lab.experiment
    monkeypatch.setattr(
        switchboard.lab, "experiment", lambda name: exp if name == "ports" else real(name)
    )
    code = main(["lab", "ports", "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_experiment_needing_root_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = run_as(monkeypatch, fake("ports", needs_root=True), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "needs root" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "failure",
    [MissingTool("tshark", "tshark"), LabUnavailable("--clients must be 1-64, not 0")],
)
def test_an_experiment_that_cannot_run_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], failure: Exception
) -> None:
    code, out, err = run_as(monkeypatch, fake("ports", fails=failure), capsys)
    assert code == 2 and out == ""
    last = err.strip().splitlines()[-1]  # after the step printed on stderr
    assert last == f"switchboard: lab ports: {failure}"


def test_json_holds_the_observations_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_as(monkeypatch, fake("ports"), capsys)
    assert code == 0
    assert json.loads(out) == {"experiment": "ports", "observations": {"ran": True}}
    assert "running" in err
