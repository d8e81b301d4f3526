"""A cluster whose nodes and Redis are on separate hosts: three network namespaces the test
makes (switchboard.lab.netns: Redis in one, a node in each of the others, veth links to
Redis), then one node's link to Redis cut and restored: the other node counts it dead
within its lease, and it comes back and registers its clients again."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from support.peers import RawPeer
from support.redis_servers import SHORT_LEASE_S, redis_binary
from support.servers import ServerProcess, spawn_logged, switchboard_command
from support.waiting import wait_until
from switchboard.lab.netns import NetworkSandbox, in_namespace, inside, why_unavailable
from switchboard.protocol import (
    Ack,
    Message,
    Receipt,
    SendOk,
    SendRequest,
)

REDIS_PORT = 6380  # inside its own namespace: no other service can be on it


@pytest.fixture
def sandbox() -> Iterator[NetworkSandbox]:
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(str(reason))
    with NetworkSandbox() as net:
        yield net


def test_a_node_cut_from_redis_is_counted_dead_and_comes_back(sandbox: NetworkSandbox) -> None:
    lease = SHORT_LEASE_S
    redis_ns, ns_a, ns_b = sandbox.namespace(), sandbox.namespace(), sandbox.namespace()
    link_a = sandbox.veth(redis_ns, ns_a)
    link_b = sandbox.veth(redis_ns, ns_b)
    workdir = tempfile.mkdtemp(prefix="switchboard-redis-")
    redis = subprocess.Popen(
        in_namespace(
            redis_ns,
            [
                redis_binary(),
                "--port",
                str(REDIS_PORT),
                "--bind",
                link_a.a_ip,
                link_b.a_ip,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--protected-mode",
                "no",
            ],
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nodes: list[ServerProcess] = []
    try:
        for namespace, link, name in ((ns_a, link_a, "a"), (ns_b, link_b, "b")):
            url = f"redis://{link.a_ip}:{REDIS_PORT}/0"
            argv = switchboard_command(
                "serve", "--port", "0", "--http", "off", "--cluster", url, "--node-name", name,
                "--cluster-lease", str(lease),
            )  # fmt: skip
            assert wait_until(lambda ip=link.a_ip: _answers(redis_ns, ip), 10)
            nodes.append(spawn_logged(in_namespace(namespace, argv)))
        a, b = nodes
        with inside(ns_a):
            on_a = RawPeer(a.port)
        with inside(ns_b):
            on_b = RawPeer(b.port)
        try:
            both = {on_a.client_id, on_b.client_id}
            assert wait_until(lambda: on_b.listed() == both, 5)
            on_b.send(SendRequest(on_a.client_id, "across hosts", request_id=1))
            ok = on_b.expect(SendOk)
            message = on_a.expect(Message)
            assert message.text == "across hosts"
            on_a.send(Ack(message.message_id))
            assert on_b.expect(Receipt).message_id == ok.message_id
            # Cut node a's cable to Redis.
            sandbox.set_link(ns_a, link_a.b_if, "down")
            a.wait_for_log(r"lost the cluster's Redis", timeout=lease * 2)
            b.wait_for_log(r"node a stopped renewing its lease", timeout=lease * 2 + 2)
            assert wait_until(lambda: on_b.listed() == {on_b.client_id}, 3)
            assert on_a.client_id in on_a.listed()  # a goes on serving its own client
            # Restore it: a rejoins and registers its client again.
            sandbox.set_link(ns_a, link_a.b_if, "up")
            a.wait_for_log(r"registered this node's 1 client\(s\) in the cluster again", timeout=10)
            assert wait_until(lambda: on_b.listed() == both, 5)
        finally:
            on_a.close()
            on_b.close()
    finally:
        for node in nodes:
            node.stop(signal.SIGTERM)
        redis.kill()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _answers(namespace: str, host: str) -> bool:
    done = subprocess.run(
        in_namespace(namespace, ["redis-cli", "-h", host, "-p", str(REDIS_PORT), "PING"]),
        capture_output=True,
        text=True,
        check=False,
    )
    return "PONG" in done.stdout
