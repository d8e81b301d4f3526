"""The directory a cluster's nodes share through Redis (server/cluster.py's RedisDirectory),
with real nodes (``switchboard serve --cluster``) and a Redis of the test's own: client ids
unique across the cluster, LIST showing every node's clients, a nickname held on one node
refused on another, a dead node's clients gone within its lease, and every node's clients
registered again after Redis restarts empty."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis

from support.peers import RawPeer
from support.redis_servers import SHORT_LEASE_S, Node, RedisServer, start_inproc_node
from support.servers import ServerProcess
from support.waiting import wait_until
from switchboard import defaults
from switchboard.protocol import (
    ErrorCode,
    ErrorResponse,
    ListOk,
    ListRequest,
    NickOk,
    NickRequest,
    TimeOk,
    TimeRequest,
)
from switchboard.server.cluster import CLIENTS_KEY, unpack_client


@pytest.fixture
def node(node: Node) -> Node:
    """The shared ``node`` fixture, each node waited for until it has joined the cluster."""

    def start(name: str, *args: str) -> ServerProcess:
        process = node(name, *args)
        process.wait_for_log(rf"as node {name} ")
        return process

    return start


def listed(peer: RawPeer, request_id: int = 77) -> dict[int, str]:
    """LIST through ``peer``: client id -> nickname."""
    peer.send(ListRequest(request_id=request_id))
    answer = peer.expect(ListOk)
    ids = [c.client_id for c in answer.clients]
    assert ids == sorted(ids)  # in id order, whichever node each is on
    return {c.client_id: c.nick for c in answer.clients}


def lists(peer: RawPeer, expected: dict[int, str], timeout: float = 5.0) -> bool:
    seen: dict[int, str] = {}

    def check() -> bool:
        seen.clear()
        seen.update(listed(peer))
        return seen == expected

    ok = wait_until(check, timeout)
    if not ok:
        print(f"LIST showed {seen}, expected {expected}")
    return ok


def test_list_shows_every_node_s_clients_with_ids_unique_across_nodes(node: Node) -> None:
    a, b, c = node("a"), node("b"), node("c")
    peers = [RawPeer(n.port) for n in (a, b, c, a, b, c)]
    try:
        ids = [p.client_id for p in peers]
        assert len(set(ids)) == len(ids)
        for i, peer in enumerate(peers):
            peer.send(NickRequest(f"user{i}", request_id=1))
            assert peer.expect(NickOk).nick == f"user{i}"
        everyone = {p.client_id: f"user{i}" for i, p in enumerate(peers)}
        for peer in peers[:3]:
            assert lists(peer, everyone)
        peers[4].close()  # on b
        del everyone[peers[4].client_id]
        assert lists(peers[0], everyone)
        assert lists(peers[2], everyone)
    finally:
        for peer in peers:
            peer.close()


def test_a_nickname_held_on_one_node_is_refused_on_another(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice, RawPeer(b.port) as impostor:
        alice.send(NickRequest("Alice", request_id=1))
        alice.expect(NickOk)
        assert lists(impostor, {alice.client_id: "Alice", impostor.client_id: ""})
        impostor.send(NickRequest("alice", request_id=2))
        error = impostor.expect_error(ErrorCode.NICK_IN_USE, 2)
        assert f"#{alice.client_id}" in error.message
        impostor.send(NickRequest("A1ice", request_id=3))  # looks alike
        impostor.expect_error(ErrorCode.NICK_IN_USE, 3)
        alice.close()
        # Gone from the cluster: the nickname is free on b.
        assert wait_until(lambda: len(listed(impostor)) == 1, 5)
        impostor.send(NickRequest("alice", request_id=4))
        assert impostor.expect(NickOk).nick == "alice"


def test_a_killed_node_s_clients_leave_the_cluster_within_its_lease(node: Node) -> None:
    lease = SHORT_LEASE_S
    a = node("a", "--cluster-lease", str(lease))
    b = node("b", "--cluster-lease", str(lease))
    victims = [RawPeer(b.port) for _ in range(3)]
    with RawPeer(a.port) as survivor:
        expected = {survivor.client_id: "", **{v.client_id: "" for v in victims}}
        assert lists(survivor, expected)
        b.stop(signal.SIGKILL)
        # Within the lease and a renewal interval (a quarter lease), plus the test's polling.
        assert lists(survivor, {survivor.client_id: ""}, timeout=lease * 1.25 + 1.0)
        a.wait_for_log(r"node b stopped renewing its lease: removed it and its 3 client\(s\)")
    for v in victims:
        v.close()


def test_redis_restarted_empty_gets_every_node_s_clients_back(
    node: Node, redis_server: RedisServer
) -> None:
    lease = SHORT_LEASE_S
    a = node("a", "--cluster-lease", str(lease))
    b = node("b", "--cluster-lease", str(lease))
    with RawPeer(a.port) as pa, RawPeer(b.port) as pb:
        pa.send(NickRequest("anna", request_id=1))
        pa.expect(NickOk)
        everyone = {pa.client_id: "anna", pb.client_id: ""}
        assert lists(pb, everyone)
        redis_server.stop()
        a.wait_for_log("lost the cluster's Redis")
        # The node goes on answering what it can alone.
        assert pa.client_id in listed(pa)
        redis_server.start()  # empty: nothing was saved
        a.wait_for_log(r"registered this node's 1 client\(s\) in the cluster again", timeout=10)
        b.wait_for_log(r"registered this node's 1 client\(s\) in the cluster again", timeout=10)
        assert lists(pa, everyone)
        assert lists(pb, everyone)
        # A node joining now takes its ids from the restarted counter, which the others
        # raised above every id they hold: without that its first client would be #1, anna.
        c = node("c", "--cluster-lease", str(lease))
        with RawPeer(c.port) as newcomer:
            assert newcomer.client_id > max(everyone) >= defaults.CLUSTER_ID_BLOCK
            assert lists(newcomer, {**everyone, newcomer.client_id: ""})


def test_two_nodes_claiming_one_nickname_at_once_exactly_one_wins(node: Node) -> None:
    a, b = node("a"), node("b")
    rounds = 30
    with RawPeer(a.port) as pa, RawPeer(b.port) as pb:
        last_won: dict[int, str] = {}
        for i in range(rounds):
            nick = f"racer{i}"
            # Both written before either is read: the two claims cross in Redis.
            pa.send(NickRequest(nick, request_id=i + 1))
            pb.send(NickRequest(nick.upper(), request_id=i + 1))
            answers = [peer.next() for peer in (pa, pb)]
            won = [isinstance(x, NickOk) for x in answers]
            assert won.count(True) == 1, (nick, answers)
            loser = answers[won.index(False)]
            assert isinstance(loser, ErrorResponse) and loser.code == ErrorCode.NICK_IN_USE
            winner = (pa, pb)[won.index(True)]
            ok = answers[won.index(True)]
            assert isinstance(ok, NickOk)
            last_won[winner.client_id] = ok.nick
        # Each holds the last nickname it won, as both nodes list it.
        expected = {p.client_id: last_won.get(p.client_id, "") for p in (pa, pb)}
        assert lists(pa, expected)
        assert lists(pb, expected)


def test_answers_stay_in_request_order_behind_a_claim(node: Node) -> None:
    a = node("a")
    with RawPeer(a.port) as peer:
        peer.send(
            NickRequest("first", request_id=1),
            TimeRequest(request_id=2),
            NickRequest("second", request_id=3),
            TimeRequest(request_id=4),
        )
        got = [peer.next() for _ in range(4)]
        assert [type(x) for x in got] == [NickOk, TimeOk, NickOk, TimeOk], got
        assert [x.request_id for x in got if x is not None] == [1, 2, 3, 4]


def test_a_nick_without_redis_is_cluster_unavailable_and_time_goes_on(
    node: Node, redis_server: RedisServer
) -> None:
    a = node("a", "--cluster-lease", str(SHORT_LEASE_S))
    with RawPeer(a.port) as peer:
        redis_server.stop()
        a.wait_for_log("lost the cluster's Redis", timeout=5)
        peer.send(NickRequest("nobody", request_id=5), TimeRequest(request_id=6))
        error = peer.expect_error(ErrorCode.CLUSTER_UNAVAILABLE, 5)
        assert "try again later" in error.message
        assert peer.expect(TimeOk).request_id == 6
        redis_server.start()
        a.wait_for_log("rejoined the cluster", timeout=10)
        peer.send(NickRequest("nobody", request_id=7))
        assert peer.expect(NickOk).nick == "nobody"


def test_a_node_counted_dead_while_stopped_leaves_no_duplicate_nickname(node: Node) -> None:
    lease = SHORT_LEASE_S
    a = node("a", "--cluster-lease", str(lease))
    b = node("b", "--cluster-lease", str(lease))
    with RawPeer(a.port) as sleeper, RawPeer(b.port) as taker:
        sleeper.send(NickRequest("zed", request_id=1))
        sleeper.expect(NickOk)
        assert lists(taker, {sleeper.client_id: "zed", taker.client_id: ""})
        a.proc.send_signal(signal.SIGSTOP)  # cut off: it cannot renew its lease
        try:
            b.wait_for_log(r"node a stopped renewing its lease", timeout=lease * 3)
            taker.send(NickRequest("zed", request_id=2))
            assert taker.expect(NickOk).nick == "zed"  # freed with the dead node
        finally:
            a.proc.send_signal(signal.SIGCONT)
        a.wait_for_log(r"#\d+ lost its nickname 'zed'", timeout=lease * 4)
        a.wait_for_log(r"rejoined the cluster", timeout=lease * 4)
        # One holder of "zed" in the whole cluster, as both nodes list it.
        expected = {sleeper.client_id: "", taker.client_id: "zed"}
        assert lists(taker, expected, timeout=lease * 4)
        assert lists(sleeper, expected, timeout=lease * 4)


class _Unheard(asyncio.Event):
    """A wake-up call that never rings: the node's writer then runs only on its timer."""

    def set(self) -> None:
        pass


def test_redis_s_record_shows_a_nickname_from_its_nick_ok_on(redis_server: RedisServer) -> None:
    """A node writes its clients' records to Redis after the change, asynchronously; a
    node that died just after answering NICK left the record with the name before, and its
    clients' LEFT notices named nobody (seen under load). The claim now writes the record
    too: here the writer is held (it runs only every quarter lease, 3.75 s) and the record
    must show the nickname as soon as NICK is answered."""
    st = start_inproc_node(redis_server, node_name="a", cluster_lease=15.0)
    store = redis.Redis.from_url(redis_server.url)
    try:
        directory = st.server.shared_directory
        assert directory is not None
        with RawPeer(st.port) as bob:
            assert wait_until(lambda: store.hexists(CLIENTS_KEY, bob.client_id), 5)
            st.call(lambda: setattr(directory, "_wake", _Unheard()))
            bob.send(NickRequest("bob", request_id=1))
            assert bob.expect(NickOk).nick == "bob"
            record = store.hget(CLIENTS_KEY, bob.client_id)
            assert record is not None
            assert unpack_client(bob.client_id, record).nick == "bob"
    finally:
        store.close()
        st.stop()
