"""switchboard.lab.netns: namespaces and veth links an experiment makes are always removed,
on an error, on Ctrl-C, on SIGTERM, and (by the next run) after SIGKILL; a socket opened
``inside`` a namespace lives there.

Needs root and iproute2 (CI has both); elsewhere skipped with the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from support.servers import cli_env
from support.waiting import wait_until
from switchboard.lab.netns import (
    THREAD_TCP_TABLES,
    NetnsError,
    NetworkSandbox,
    existing_namespaces,
    inside,
    ip,
    why_unavailable,
)
from switchboard.lab.sockets import TcpState, read_sockets


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = why_unavailable()
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(str(reason))


def host_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()}


def test_everything_made_is_removed_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetworkSandbox() as net:
        server, client = net.namespace(), net.namespace()
        pair = net.veth(server, client)
        to_host = net.veth(None, client)
        made = {server, client}
        assert made <= set(existing_namespaces())
        assert to_host.a_if in host_links()
        assert pair.a_ip != to_host.a_ip
        raise RuntimeError("boom")
    assert not made & set(existing_namespaces())
    assert to_host.a_if not in host_links()


def test_a_veth_pair_carries_tcp_between_namespaces() -> None:
    with NetworkSandbox() as net:
        server, client = net.namespace(), net.namespace()
        cable = net.veth(server, client)
        with inside(server):
            listener = socket.create_server((cable.a_ip, 0))
            port = listener.getsockname()[1]
            mine = read_sockets([port], THREAD_TCP_TABLES)
        with inside(client):
            sock = socket.create_connection((cable.a_ip, port), timeout=5)
        with listener, sock:
            accepted, (peer, _) = listener.accept()
            accepted.close()
            assert peer == cable.b_ip
        # The listener is in the server's namespace's table, not the host's.
        assert [s.state for s in mine] == [TcpState.LISTEN]
        assert read_sockets([port]) == []


def test_a_bad_namespace_name_is_a_clear_error() -> None:
    with pytest.raises(NetnsError, match="no namespace"), inside("sblab-no-such-namespace"):
        pass


SCRIPT = textwrap.dedent(
    """
    import time
    from switchboard.lab.netns import NetworkSandbox
    with NetworkSandbox() as net:
        ns = net.namespace()
        link = net.veth(None, ns)
        print(ns, link.a_if, flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_removes_its_namespace(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        assert proc.stdout is not None
        namespace, link = proc.stdout.readline().split()
        assert namespace in existing_namespaces()
        proc.send_signal(sig)
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert namespace not in existing_namespaces()
    assert link not in host_links()


def test_what_a_killed_run_left_is_swept_by_the_next() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=cli_env()
    )
    try:
        assert proc.stdout is not None
        namespace, link = proc.stdout.readline().split()
    finally:
        proc.kill()  # SIGKILL: nothing of the process runs
        proc.wait(5)
    assert namespace in existing_namespaces()  # left behind, as SIGKILL must
    with NetworkSandbox():
        assert wait_until(lambda: namespace not in existing_namespaces(), 5)
        assert link not in host_links()


def test_a_second_ctrl_c_during_the_cleanup_waits_for_it() -> None:
    """Also with another thread alive (a resolver or executor thread): the kernel hands a
    signal sent to the process to a thread that does not block it, so masking it in the main
    thread alone held nothing back."""
    deleted: list[bool] = []
    namespace = ""
    net = NetworkSandbox()
    done = threading.Event()
    bystander = threading.Thread(target=done.wait, name="bystander")
    bystander.start()
    try:
        with pytest.raises(KeyboardInterrupt), net:
            namespace = net.namespace()
            delete_all = net._delete_all

            def interrupted_cleanup() -> None:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, as the cleanup starts
                delete_all()
                deleted.append(namespace not in existing_namespaces())

            net._delete_all = interrupted_cleanup  # type: ignore[method-assign]
        # The KeyboardInterrupt came after the cleanup, which ran to its end.
        assert deleted == [True]
    finally:
        done.set()
        bystander.join()
        if namespace and namespace in existing_namespaces():
            ip("netns", "del", namespace)
