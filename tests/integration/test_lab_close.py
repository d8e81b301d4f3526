"""``switchboard lab close``: the states the kernel must show on each side of a close, checked
against TCP's state machine: TIME_WAIT on the active closer only, FIN_WAIT_2 facing
CLOSE_WAIT, the half-close's answer after our FIN; nothing left behind."""

from __future__ import annotations

from support.lab import children, run_experiment
from switchboard.lab.sockets import kernel_setting


def test_who_closes_first_waits_and_nothing_is_left() -> None:
    run = run_experiment("close", "--leak-seconds", "0.3")
    seen = run.observations
    first = seen["client_closes_first"]
    assert (first["client"], first["server"]) == ("TIME_WAIT", None)
    assert 55 <= first["time_wait_timer_s"] <= 60  # Linux's 60 s, just started

    server = seen["server_closes_first"]
    assert server["before_client_close"] == {"client": "CLOSE_WAIT", "server": "FIN_WAIT2"}
    assert server["after_client_close"] == {"client": None, "server": "TIME_WAIT"}

    half = seen["half_close"]
    assert half["received_after_shutdown"] == "desserts"  # answered after our FIN
    assert (half["client"], half["server"]) == ("TIME_WAIT", None)

    leaky = seen["leaky_server"]
    assert (leaky["client"], leaky["server"]) == ("FIN_WAIT2", "CLOSE_WAIT")
    assert leaky["server_after_watch"] == "CLOSE_WAIT"  # no timer ends it
    assert leaky["after_server_close"] == {"client": "TIME_WAIT", "server": None}
    fin_timeout = int(kernel_setting("net/ipv4/tcp_fin_timeout"))
    assert seen["tcp_fin_timeout_s"] == fin_timeout
    assert 0 < leaky["client_fin_wait2_timer_s"] <= max(fin_timeout, 60)

    assert seen["time_wait_left_behind"] == 0
    assert run.left_on(seen["server_ports"]) == []
    assert children() == []
