"""``switchboard lab``: the listing, an unknown name, and ``ports`` run as the real CLI."""

from __future__ import annotations

import json

from support.commands import assert_one_clear_error_line
from support.lab import left_on, tcp_table
from support.servers import run_cli
from switchboard.lab import NAMES, experiments


def test_the_listing_names_every_experiment_in_order_with_its_question() -> None:
    result = run_cli("lab")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # the questions may wrap
    positions = [text.find(f" {name} ") for name in NAMES]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), text
    for exp in experiments():
        assert " ".join(exp.question.split()[:4]) in text


def test_the_listing_as_json() -> None:
    result = run_cli("lab", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)["experiments"]
    assert [e["name"] for e in listed] == list(NAMES)
    assert all(e["question"] and isinstance(e["needs_root"], bool) for e in listed)


def test_an_unknown_experiment_is_one_line_and_exit_2() -> None:
    result = run_cli("lab", "nosuch")
    line = assert_one_clear_error_line(result, 2)
    assert "'nosuch'" in line and "ports" in line
    assert result.stdout == ""


def test_ports_as_json_shows_what_the_kernel_did_and_leaves_nothing() -> None:
    before = tcp_table()
    result = run_cli("lab", "ports", "--json", "--connects", "4")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["experiment"] == "ports"
    seen = doc["observations"]
    low, high = seen["ephemeral_range"]
    assert len(seen["source_ports"]) == 4
    assert all(low <= p <= high for p in seen["source_ports"])
    assert seen["all_in_ephemeral_range"] is True
    assert seen["distinct_source_ports"] == 4  # each connect() a new port
    assert seen["time_wait_on_bind_port"] is True
    assert 55 <= seen["time_wait_timer_s"] <= 60  # Linux's TCP_TIMEWAIT_LEN, just started
    assert seen["rebind"] == "EADDRINUSE"
    assert seen["rebind_reuseaddr_new_socket_only"] == "EADDRINUSE"
    assert seen["rebind_reuseaddr_both"] == "bound"
    assert seen["connect_over_time_wait"] == "connected"
    assert seen["time_wait_after_reconnect"] == 0
    assert "•" in result.stderr  # the steps, on stderr with --json
    left = left_on([seen["server_port"], seen["bind_port"]], before)
    assert left == [], left


def test_a_port_out_of_range_is_one_line_and_exit_2() -> None:
    result = run_cli("lab", "ports", "--bind-port", "70000")
    assert_one_clear_error_line(result, 2)
