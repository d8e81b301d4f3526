"""``switchboard serve --workers N --cluster URL``: N supervised node processes on one port
(SO_REUSEPORT), with a Redis of the test's own: clients spread over the workers see one
server, a killed worker is restarted, SIGTERM stops them all."""

from __future__ import annotations

import re
import signal

import psutil

from support.peers import RawPeer
from support.redis_servers import RedisServer
from support.servers import run_cli, spawn_logged, switchboard_command
from support.waiting import wait_until
from switchboard.protocol import Ack, ListOk, ListRequest, Message, Receipt, SendOk, SendRequest


def test_workers_without_a_cluster_is_one_line_and_exit_2() -> None:
    result = run_cli("serve", "--port", "0", "--http", "off", "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "switchboard serve: --workers needs --cluster: worker processes share clients, "
        "nicknames and rooms only through a cluster's Redis"
    ]


def test_workers_with_redis_unreachable_is_one_line_and_exit_2(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.stop()
    result = run_cli("serve", "--port", "0", "--http", "off", "--workers", "2", "--cluster", url)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_two_workers_share_the_port_and_the_cluster(redis_server: RedisServer) -> None:
    supervisor = spawn_logged(
        switchboard_command(
            "serve",
            "--port",
            "0",
            "--workers",
            "2",
            "--cluster",
            redis_server.url,
            "--node-name",
            "pool",
            "--cluster-lease",
            "2",
        )
    )
    try:
        for index in (0, 1):
            supervisor.wait_for_log(rf"joined the cluster .* as node pool-w{index} ")
        workers = psutil.Process(supervisor.proc.pid).children()
        assert len(workers) == 2
        # The cluster's URL (a password could be in it) is on no command line.
        assert all(redis_server.url not in " ".join(w.cmdline()) for w in workers)
        peers = [RawPeer(supervisor.port) for _ in range(24)]
        try:
            ids = {p.client_id for p in peers}
            assert len(ids) == len(peers)

            def members(name: str) -> set[int]:
                raw = redis_server.command("SMEMBERS", f"switchboard:node-clients:{name}")
                return {int(x) for x in re.findall(rb"\$\d+\r\n(\d+)", raw)}

            assert wait_until(lambda: members("pool-w0") | members("pool-w1") == ids, 5)
            on_w0, on_w1 = members("pool-w0"), members("pool-w1")
            assert on_w0 and on_w1, "SO_REUSEPORT gave every connection to one worker"

            def lists_all(peer: RawPeer) -> bool:
                peer.send(ListRequest(request_id=5))
                return ids <= {c.client_id for c in peer.expect(ListOk).clients}

            assert all(wait_until(lambda p=p: lists_all(p), 5) for p in peers[:4])
            by_id = {p.client_id: p for p in peers}
            sender, recipient = by_id[min(on_w0)], by_id[min(on_w1)]
            sender.send(SendRequest(recipient.client_id, "across workers", request_id=6))
            ok = sender.expect(SendOk)
            message = recipient.expect(Message)
            assert message.text == "across workers"
            recipient.send(Ack(message.message_id))
            assert sender.expect(Receipt).message_id == ok.message_id
        finally:
            for peer in peers:
                peer.close()
        # A worker killed is restarted, under its name.
        victim = workers[0]
        victim.kill()
        supervisor.wait_for_log(r"worker \d \(pid \d+\) exited with code -9 .*; restarting it")
        assert wait_until(lambda: len(psutil.Process(supervisor.proc.pid).children()) == 2, 10)
        supervisor.wait_for_log(r"joined the cluster .* as node pool-w\d ", count=3, timeout=10)
    finally:
        code = supervisor.stop(signal.SIGTERM, timeout=15)
    assert code == 0
    assert wait_until(
        lambda: not any(w.is_running() and w.status() != "zombie" for w in workers), 5
    )
    supervisor.wait_for_log(r"stopping 2 workers: received SIGTERM")
