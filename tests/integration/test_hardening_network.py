"""The pulled cable: a client behind a veth pair whose link goes down without a FIN or RST.

The client runs in a network namespace of its own, joined to the host by a veth pair with
addresses from 10.231.0.0/16 (private, and only ever assigned inside this test's own pair:
the traffic never leaves the machine), made and removed by switchboard.lab.netns.  The
server binds the host end.  When that end goes down, the server must drop the client
within three heartbeat intervals while it keeps serving a bystander (which reaches the same
address over loopback), and the client must report that it lost the server.

Needs root and iproute2 (CI has both); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from support.servers import ServerProcess, cli_env
from switchboard.client import Client
from switchboard.lab.netns import NetworkSandbox, why_unavailable

HEARTBEAT = 0.5


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class VethPair:
    namespace: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


@pytest.fixture
def veth() -> Iterator[VethPair]:
    """A namespace joined to the host by a veth pair (switchboard.lab.netns, which removes
    both, whatever happens)."""
    reason = why_unavailable()
    if reason is not None:
        print(f"SKIPPED: {reason}")  # the issue asks for the reason printed, not only reported
        pytest.skip(str(reason))
    with NetworkSandbox() as net:
        namespace = net.namespace()
        link = net.veth(None, namespace)
        yield VethPair(namespace, link.a_if, link.b_if, link.a_ip, link.b_ip)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from switchboard.client import Client
    lost = threading.Event()
    reasons = []
    def on_close(reason):
        reasons.append(reason)
        lost.set()
    client = Client(sys.argv[1], int(sys.argv[2]), timeout=30, on_close=on_close)
    print("connected", client.client_id, flush=True)
    start = None
    for line in sys.stdin:  # the test says when the cable is pulled
        start = time.monotonic()
        break
    if lost.wait(30):
        print(f"lost after {time.monotonic() - start:.2f}s: {reasons[0]}", flush=True)
    else:
        print("still connected after 30s", flush=True)
    """
)


def test_a_pulled_cable_is_noticed_by_both_ends(
    veth: VethPair, server_process_factory: Callable[..., ServerProcess]
) -> None:
    sp = server_process_factory("--host", veth.host_ip, "--heartbeat", str(HEARTBEAT))
    assert sp.host == veth.host_ip
    remote = subprocess.Popen(
        ["ip", "netns", "exec", veth.namespace, sys.executable, "-c", CLIENT_SCRIPT,
         veth.host_ip, str(sp.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )  # fmt: skip
    try:
        assert remote.stdout is not None and remote.stdin is not None
        first = remote.stdout.readline().split()
        assert first[:1] == ["connected"], (first, remote.stderr and remote.stderr.read())
        remote_id = int(first[1])
        # The bystander reaches the same address over loopback, so the pulled link is not
        # its path: it must be served throughout.
        with Client(veth.host_ip, sp.port, timeout=5) as bystander:
            ids = [c.client_id for c in bystander.list_clients()]
            assert remote_id in ids
            remote_ip = next(c.ip for c in bystander.list_clients() if c.client_id == remote_id)
            assert remote_ip == veth.ns_ip  # it really came through the veth pair
            ip("link", "set", veth.host_if, "down")
            pulled = time.monotonic()
            remote.stdin.write("pulled\n")
            remote.stdin.flush()
            dropped_after = None
            answers = 0
            while time.monotonic() - pulled < 3 * HEARTBEAT + 3.0:
                ids = [c.client_id for c in bystander.list_clients()]
                answers += 1
                assert bystander.client_id in ids
                if remote_id not in ids:
                    dropped_after = time.monotonic() - pulled
                    break
                time.sleep(0.05)  # the bystander's request cadence while it watches the list
            assert dropped_after is not None, "the server never dropped the unreachable client"
            # Within three heartbeat intervals of the last frame it received (which came
            # before the pull), plus the heartbeat's check period (interval / 8).
            assert dropped_after <= 3 * HEARTBEAT + HEARTBEAT / 8 + 0.5, dropped_after
            assert answers > 5
            assert bystander.name() == "test-server"
        out, err = remote.communicate(timeout=40)
        assert out.startswith("lost after"), (out, err)
        lost_after = float(out.split()[2].rstrip("s:"))
        assert "stopped answering" in out, out
        assert lost_after <= 3 * HEARTBEAT + 1.0, out
        print(f"server dropped it after {dropped_after:.2f}s; client: {out.strip()}")
    finally:
        if remote.poll() is None:
            remote.kill()
            remote.wait(5)
    line = sp.wait_for_log(rf"disconnect #{remote_id} .*heartbeat timeout")
    assert veth.ns_ip in line
