"""``switchboard lab cable`` as the real CLI (as root, which CI is): the pulled cable's
observations checked against what the kernel must show, and no namespace, link or socket
left behind.  Skipped with the reason without root or iproute2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from support.commands import assert_one_clear_error_line
from support.servers import cli_env, run_cli, switchboard_command
from switchboard import defaults
from switchboard.lab.cable import HEARTBEAT_S, KEEPALIVE_PROBES, KEEPALIVE_S
from switchboard.lab.netns import why_unavailable

#: Slack for scheduling and the sampling cadence (0.05 s) on a loaded machine.
SLACK_S = 0.75


def lab_namespaces_and_links(pid: int) -> set[str]:
    """The namespaces and host links that process ``pid`` made, as switchboard.lab.netns names
    them (``sblab-PID-N``, ``sbPID-Nh``): only its own, since other sandboxes on the machine
    (another test run's, a cluster test's hosts) come and go meanwhile."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    names = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    names |= {line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()}
    return {name for name in names if re.match(rf"sblab-{pid}-\d+$|sb{pid}-\d+[hn]$", name)}


def sandbox_pid(steps: str) -> int:
    """The id of the process whose sandbox the steps name (``namespaces sblab-PID-1 ...``)."""
    pids = set(re.findall(r"sblab-(\d+)-\d+", steps))
    assert len(pids) == 1, steps
    return int(pids.pop())


def test_a_pulled_cable_as_each_server_sees_it() -> None:
    reason = why_unavailable()
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(str(reason))
    result = run_cli("lab", "cable", "--json", timeout=90)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)["observations"]
    assert "scaled-down" in result.stderr and "pulled the cable" in result.stderr

    # The client's FINs never arrive: no server socket ever reaches CLOSE_WAIT.
    assert seen["client_fin_reached_server"] is False
    for key, states in seen["client_states"].items():
        assert "FIN_WAIT1" in [s for _, s in states], (key, states)
    # No heartbeat: ESTABLISHED throughout, and the program has heard nothing.
    assert [s for _, s in seen["server_states"]["no_heartbeat"]] == ["ESTABLISHED"]
    assert seen["dropped_after_s"]["no_heartbeat"] is None
    assert seen["recv_on_server"]["no_heartbeat"].startswith("nothing")
    # TCP keepalive: the kernel drops it after idle + probes x interval (scaled down).
    keepalive = KEEPALIVE_S + KEEPALIVE_PROBES * KEEPALIVE_S
    dropped = seen["dropped_after_s"]["tcp_keepalive"]
    assert dropped is not None and keepalive - 1.0 <= dropped <= keepalive + SLACK_S, dropped
    assert "ETIMEDOUT" in seen["recv_on_server"]["tcp_keepalive"]
    host_default = Path("/proc/sys/net/ipv4/tcp_keepalive_time").read_text()
    assert seen["kernel_keepalive_defaults"]["time_s"] == int(host_default)
    # Switchboard's heartbeat: dropped within three intervals of the last frame (which came
    # at most one interval before the pull), plus its check period; LIST shows the stale
    # entry until then.
    limit = defaults.HEARTBEAT_MISSES * HEARTBEAT_S
    heartbeat = seen["dropped_after_s"]["switchboard_heartbeat"]
    assert heartbeat is not None
    assert limit - HEARTBEAT_S - 0.1 <= heartbeat <= limit + HEARTBEAT_S / 8 + SLACK_S, heartbeat
    assert seen["listed_until_s"] is not None and seen["listed_until_s"] <= heartbeat + 0.2
    assert "heartbeat timeout" in seen["recv_on_server"]["switchboard_heartbeat"]
    assert heartbeat < dropped  # the application's timer beats the kernel's

    # Nothing left: the namespaces and their veth pair are gone, and the server with them.
    assert lab_namespaces_and_links(sandbox_pid(result.stderr)) == set()
    pid = seen["server"]["pid"]
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"serve" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


def test_cable_without_root_is_one_line_and_exit_2() -> None:
    """Run without root: as root (the suite in CI), in a user namespace of its own
    (util-linux's ``unshare --user``), where the command's effective uid is nobody's and it
    holds no capability outside, as a user's shell would."""
    if os.geteuid() == 0:
        argv = ["unshare", "--user", *switchboard_command("lab", "cable")]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=cli_env())
    else:
        proc = run_cli("lab", "cable")
    line = assert_one_clear_error_line(proc, 2)
    assert "root" in line


def test_cable_without_ip_is_one_line_naming_iproute2(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("without root the root check answers first")
    line = assert_one_clear_error_line(run_cli("lab", "cable", env=cli_env(PATH=str(tmp_path))), 2)
    assert "iproute2" in line


def test_ctrl_c_with_the_cable_pulled_removes_the_namespaces() -> None:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(str(reason))
    proc = subprocess.Popen(
        switchboard_command("lab", "cable", "--json"),  # --json: the steps on stderr
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stderr is not None
        made = set()
        for line in proc.stderr:
            made |= set(re.findall(r"sblab-\d+-\d+", line))
            if "pulled the cable" in line:
                break
        assert made, "the experiment named no namespace"
        assert sandbox_pid(" ".join(made)) == proc.pid
        assert made <= lab_namespaces_and_links(proc.pid)  # they exist while it watches
        proc.send_signal(signal.SIGINT)  # to the experiment alone, as kill -INT does
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert lab_namespaces_and_links(proc.pid) == set()
