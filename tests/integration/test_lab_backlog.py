"""``switchboard lab backlog``: what the kernel shows of the accept queue, checked against
what Linux must do (backlog + 1 queued, the rest's SYNs dropped, each accept making room)."""

from __future__ import annotations

import sys

import pytest

from support.lab import run_experiment

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's accept queue")


def test_backlog_1_with_4_clients_queues_exactly_2_then_accepts_all() -> None:
    run = run_experiment("backlog", "--backlogs", "1", "--clients", "4")
    seen = run.observations
    assert seen["accept_queue"] == {"1": 2}
    one = seen["backlogs"]["1"]
    assert one["clients_established"] == 2 and one["clients_syn_sent"] == 2
    assert seen["accepted"] == 4
    timeline = seen["accept_timeline"]
    assert timeline[0]["accept_queue"] == 2 and timeline[0]["clients_syn_sent"] == 2
    # The two left out get in at their SYN retry, about 1 s after their first SYN.
    assert any(step["t_s"] >= 0.5 for step in timeline[1:])
    assert run.left_on(seen["listener_ports"]) == []


def test_each_backlog_queues_backlog_plus_one() -> None:
    run = run_experiment(
        "backlog", "--backlogs", "0,1,2,3", "--clients", "5", "--accept-backlog", "3"
    )
    seen = run.observations
    assert seen["accept_queue"] == {"0": 1, "1": 2, "2": 3, "3": 4}
    for backlog, counts in seen["backlogs"].items():
        assert counts["clients_syn_sent"] == 5 - (int(backlog) + 1)
    assert seen["accepted"] == 5
    assert run.left_on(seen["listener_ports"]) == []


def test_backlog_0_answers_with_syn_cookies_and_stops_without_waiting() -> None:
    run = run_experiment("backlog", "--backlogs", "0", "--accept-backlog", "0")
    seen = run.observations
    assert seen["accept_queue"] == {"0": 1}
    # After the first accept, the three retrying clients all complete their handshakes
    # (cookies), one is queued, the others are unknown to the server: nothing else arrives.
    assert seen["accepted"] + seen["clients_unknown_to_server"] == 4
    assert run.left_on(seen["listener_ports"]) == []
