"""SEND to a client of another node (server/cluster.py, cluster_ops.py), with real nodes and
a Redis of the test's own: the same answers as on one server (OK once the recipient's node
has handed the MESSAGE over, RECEIPT when it acknowledges, NO_SUCH_CLIENT, RECIPIENT_BUSY by
the recipient node's limits), answers in request order, and no SEND left without exactly one
answer and at most one receipt when a node dies or Redis restarts."""

from __future__ import annotations

import signal
import threading

from support.peers import RawPeer
from support.redis_servers import SHORT_LEASE_S, Node, RedisServer, start_inproc_node
from support.servers import ServerThread
from support.waiting import wait_until
from switchboard import defaults
from switchboard.protocol import (
    Ack,
    ErrorCode,
    ErrorResponse,
    HelloOk,
    HelloRequest,
    ListOk,
    ListRequest,
    Message,
    NickOk,
    NickRequest,
    Ping,
    Receipt,
    Receipts,
    ReceiptStatus,
    SendNickOk,
    SendNickRequest,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
)


def quiet_for(peer: RawPeer, timeout: float) -> object | None:
    """The next event, or None if none comes within ``timeout`` (PINGs skipped)."""
    while True:
        try:
            event = peer.next(timeout)
        except AssertionError:
            return None
        if not isinstance(event, Ping):
            return event


def known_everywhere(peers: list[RawPeer]) -> None:
    """Wait until every peer's node lists every peer (the copies have caught up)."""
    ids = {p.client_id for p in peers}

    for peer in peers:
        assert wait_until(lambda peer=peer: ids <= peer.listed(), 5)


def test_send_across_nodes_is_answered_and_receipted_as_on_one_server(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        known_everywhere([alice, bob])
        alice.send(SendRequest(bob.client_id, "hello across", request_id=1))
        ok = alice.expect(SendOk)
        assert (ok.request_id, ok.target) == (1, bob.client_id)
        message = bob.expect(Message)
        assert (message.message_id, message.sender_id, message.text) == (
            ok.message_id,
            alice.client_id,
            "hello across",
        )
        assert message.room == ""
        bob.send(Ack(message.message_id))
        receipt = alice.expect(Receipt)
        assert (receipt.message_id, receipt.target, receipt.status) == (
            ok.message_id,
            bob.client_id,
            ReceiptStatus.DELIVERED,
        )
        # An id no node has: NO_SUCH_CLIENT, as on one server.
        alice.send(SendRequest(999_999, "nobody", request_id=2))
        alice.expect_error(ErrorCode.NO_SUCH_CLIENT, 2)


def test_version_2_senders_get_receipts_batched_across_nodes(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        alice.send(HelloRequest(version=2, request_id=1))
        alice.expect(HelloOk)
        known_everywhere([alice, bob])
        alice.send(*(SendRequest(bob.client_id, f"m{i}", request_id=10 + i) for i in range(5)))
        oks = [alice.expect(SendOk) for _ in range(5)]
        assert [o.request_id for o in oks] == [10, 11, 12, 13, 14]
        messages = [bob.expect(Message) for _ in range(5)]
        assert [m.text for m in messages] == [f"m{i}" for i in range(5)]
        for m in messages:
            bob.send(Ack(m.message_id))
        receipted: list[int] = []
        while len(receipted) < 5:
            r = alice.expect(Receipts)
            assert r.status == ReceiptStatus.DELIVERED and r.target == bob.client_id
            receipted += r.message_ids
        assert sorted(receipted) == sorted(o.message_id for o in oks)


def test_answers_keep_request_order_around_a_send_across_nodes(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob, RawPeer(a.port) as carol:
        known_everywhere([alice, bob, carol])
        alice.send(
            TimeRequest(request_id=1),
            SendRequest(bob.client_id, "far", request_id=2),
            SendRequest(carol.client_id, "near", request_id=3),
            TimeRequest(request_id=4),
        )
        got = [alice.next() for _ in range(4)]
        assert [type(x) for x in got] == [TimeOk, SendOk, SendOk, TimeOk], got
        assert [x.request_id for x in got if x is not None] == [1, 2, 3, 4]


def test_the_recipient_node_s_limits_answer_recipient_busy(node: Node) -> None:
    a, b = node("a"), node("b", "--max-unacked", "2")
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        known_everywhere([alice, bob])
        alice.send(*(SendRequest(bob.client_id, f"m{i}", request_id=1 + i) for i in range(3)))
        assert isinstance(alice.next(), SendOk)
        assert isinstance(alice.next(), SendOk)
        alice.expect_error(ErrorCode.RECIPIENT_BUSY, 3)


def test_a_recipient_that_leaves_without_acking_is_not_delivered(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice:
        bob = RawPeer(b.port)
        known_everywhere([alice, bob])
        alice.send(SendRequest(bob.client_id, "unread", request_id=1))
        ok = alice.expect(SendOk)
        bob.expect(Message)
        bob.close()
        receipt = alice.expect(Receipt)
        assert (receipt.message_id, receipt.status) == (ok.message_id, ReceiptStatus.NOT_DELIVERED)


def test_a_killed_recipient_node_leaves_every_send_answered_and_not_delivered(
    node: Node,
) -> None:
    lease = SHORT_LEASE_S
    a = node("a", "--cluster-lease", str(lease))
    b = node("b", "--cluster-lease", str(lease))
    count = 40
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        known_everywhere([alice, bob])
        alice.send(*(SendRequest(bob.client_id, f"m{i}", request_id=1 + i) for i in range(count)))
        oks = [alice.expect(SendOk) for _ in range(count)]
        for _ in range(count):
            bob.expect(Message)  # read, never acknowledged
        b.stop(signal.SIGKILL)
        statuses: dict[int, int] = {}
        for _ in range(count):
            r = alice.expect(Receipt, timeout=lease * 1.25 + 3)
            assert r.message_id not in statuses  # at most one receipt per message
            statuses[r.message_id] = r.status
        assert statuses == {o.message_id: ReceiptStatus.NOT_DELIVERED for o in oks}
        assert quiet_for(alice, 0.5) is None  # and nothing more


def test_redis_restarted_under_traffic_every_send_gets_exactly_one_answer(
    node: Node, redis_server: RedisServer
) -> None:
    lease = SHORT_LEASE_S
    a = node("a", "--cluster-lease", str(lease))
    b = node("b", "--cluster-lease", str(lease))
    with RawPeer(a.port, timeout=20) as alice, RawPeer(b.port, timeout=20) as bob:
        known_everywhere([alice, bob])
        total = 300
        answers: dict[int, object] = {}
        receipts: dict[int, list[int]] = {}
        stop_acking = threading.Event()

        def ack_all() -> None:  # bob acknowledges whatever reaches him
            while not stop_acking.is_set():
                event = quiet_for(bob, 0.2)
                if isinstance(event, Message):
                    bob.send(Ack(event.message_id))

        acker = threading.Thread(target=ack_all, daemon=True)
        acker.start()
        for i in range(total):
            alice.send(SendRequest(bob.client_id, f"m{i}", request_id=1 + i))
            if i == total // 3:
                redis_server.stop()
            if i == 2 * total // 3:
                redis_server.start()
            while True:  # one at a time: the answer before the next SEND
                event = quiet_for(alice, lease * 3)
                assert event is not None, f"no answer to SEND {1 + i}"
                if isinstance(event, Receipt):
                    receipts.setdefault(event.message_id, []).append(event.status)
                    continue
                break
            assert isinstance(event, SendOk | ErrorResponse), event
            assert event.request_id == 1 + i and event.request_id not in answers
            answers[event.request_id] = event
        while (event := quiet_for(alice, lease * 2)) is not None:
            if isinstance(event, Receipt):
                receipts.setdefault(event.message_id, []).append(event.status)
        stop_acking.set()
        acker.join(5)
        assert sorted(answers) == list(range(1, total + 1))
        ok_ids = {e.message_id for e in answers.values() if isinstance(e, SendOk)}
        errors = [e for e in answers.values() if isinstance(e, ErrorResponse)]
        # Only the outage's refusal (the others named: a list of 100 refusals is cut short).
        assert [e for e in errors if e.code != ErrorCode.CLUSTER_UNAVAILABLE] == []
        assert ok_ids and errors  # both sides of the outage were seen
        assert all(len(s) == 1 for s in receipts.values()), receipts  # at most one each
        assert set(receipts) <= ok_ids  # receipts only for messages answered OK


def test_send_nick_reaches_the_holder_on_another_node(node: Node) -> None:
    a, b = node("a"), node("b")
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        bob.send(NickRequest("Bobby", request_id=1))
        bob.expect(NickOk)
        known_everywhere([alice, bob])
        assert wait_until(lambda: nick_listed(alice, bob.client_id) == "Bobby", 5)
        alice.send(SendNickRequest("bobby", "by name", request_id=2))
        ok = alice.expect(SendNickOk)
        assert (ok.request_id, ok.target) == (2, bob.client_id)
        message = bob.expect(Message)
        assert (message.message_id, message.text) == (ok.message_id, "by name")
        bob.send(Ack(message.message_id))
        assert alice.expect(Receipt).status == ReceiptStatus.DELIVERED
        alice.send(SendNickRequest("nobody-here", "?", request_id=3))
        alice.expect_error(ErrorCode.NO_SUCH_CLIENT, 3)


def nick_listed(peer: RawPeer, client_id: int) -> str | None:
    peer.send(ListRequest(request_id=98))
    return {c.client_id: c.nick for c in peer.expect(ListOk).clients}.get(client_id)


def test_a_sender_may_have_only_so_many_sends_waiting_for_another_node(node: Node) -> None:
    a, b = node("a"), node("b", "--max-unacked", "10000")
    cap = defaults.CLUSTER_MAX_WAITING_SENDS
    extra = 5
    with RawPeer(a.port, timeout=20) as alice, RawPeer(b.port, timeout=20) as bob:
        known_everywhere([alice, bob])
        b.proc.send_signal(signal.SIGSTOP)  # no answers from b until the whole run is read
        try:
            alice.send(
                *(SendRequest(bob.client_id, "x", request_id=1 + i) for i in range(cap + extra))
            )
            # The refusals wait in their place, behind the answers b has not given yet.
            assert quiet_for(alice, 0.5) is None
        finally:
            b.proc.send_signal(signal.SIGCONT)
        answers = [alice.next(timeout=20) for _ in range(cap + extra)]
        assert [type(x) for x in answers] == [SendOk] * cap + [ErrorResponse] * extra
        assert all(
            isinstance(x, ErrorResponse) and x.code == ErrorCode.RATE_LIMITED for x in answers[cap:]
        )
        assert [x.request_id for x in answers if x is not None] == list(range(1, cap + extra + 1))


def test_a_recipient_node_shut_down_sends_each_receipt_once(node: Node) -> None:
    a, b = node("a"), node("b")
    count = 20
    with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
        known_everywhere([alice, bob])
        alice.send(*(SendRequest(bob.client_id, f"m{i}", request_id=1 + i) for i in range(count)))
        oks = [alice.expect(SendOk) for _ in range(count)]
        for _ in range(count):
            bob.expect(Message)  # read, never acknowledged
        assert b.stop(signal.SIGTERM) == 0
        statuses: dict[int, int] = {}
        for _ in range(count):
            r = alice.expect(Receipt, timeout=5)
            assert r.message_id not in statuses
            statuses[r.message_id] = r.status
        assert statuses == {o.message_id: ReceiptStatus.NOT_DELIVERED for o in oks}
        assert quiet_for(alice, 1.0) is None


def restart_redis_empty_under(a: ServerThread, redis_server: RedisServer) -> None:
    """Restart Redis empty, and wait until node ``a`` (in this process) has read the whole,
    empty, state again and is back in the cluster (until then it refuses
    CLUSTER_UNAVAILABLE)."""
    directory = a.server.shared_directory
    assert directory is not None

    def rereading() -> bool:
        return bool(a.call(lambda: directory._snapshot_needed))

    redis_server.stop()
    assert wait_until(rereading, 10)
    redis_server.start()  # empty: nothing was saved
    assert wait_until(lambda: not rereading(), 10)
    assert wait_until(lambda: a.call(lambda: directory.node.available), 10)


def test_a_send_while_redis_comes_back_empty_waits_for_the_recipient_s_node(
    node: Node, redis_server: RedisServer
) -> None:
    """Redis restarts empty; node a reads the whole (empty) state again before node b has
    noticed and registered its clients again (b is stopped meanwhile). A SEND from a to b's
    client is forwarded to b and answered once b is back, not refused NO_SUCH_CLIENT (seen
    under load as 78 refusals in the traffic test above)."""
    lease = SHORT_LEASE_S
    a = start_inproc_node(redis_server, node_name="a", cluster_lease=lease)
    try:
        b = node("b", "--cluster-lease", str(lease))
        with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
            known_everywhere([alice, bob])
            b.proc.send_signal(signal.SIGSTOP)
            try:
                restart_redis_empty_under(a, redis_server)
                assert bob.client_id in alice.listed()  # still listed: b has not said otherwise
                alice.send(SendRequest(bob.client_id, "through the restart", request_id=7))
                assert quiet_for(alice, 0.5) is None  # waiting for b, not refused
            finally:
                b.proc.send_signal(signal.SIGCONT)
            ok = alice.expect(SendOk, timeout=lease * 3)
            assert ok.request_id == 7
            assert bob.expect(Message, timeout=lease * 3).text == "through the restart"
    finally:
        a.stop()


def test_another_node_s_clients_that_redis_lost_go_within_a_lease_if_it_never_comes_back(
    node: Node, redis_server: RedisServer
) -> None:
    lease = SHORT_LEASE_S
    a = start_inproc_node(redis_server, node_name="a", cluster_lease=lease)
    try:
        b = node("b", "--cluster-lease", str(lease))
        with RawPeer(a.port) as alice, RawPeer(b.port) as bob:
            known_everywhere([alice, bob])
            b.proc.send_signal(signal.SIGSTOP)
            try:
                restart_redis_empty_under(a, redis_server)
                assert bob.client_id in alice.listed()
            finally:
                b.stop(signal.SIGKILL)
            # Within a lease and a renewal interval (a quarter lease), plus polling.
            assert wait_until(lambda: alice.listed() == {alice.client_id}, lease * 1.25 + 3)
            alice.send(SendRequest(bob.client_id, "anyone?", request_id=8))
            alice.expect_error(ErrorCode.NO_SUCH_CLIENT, 8)
    finally:
        a.stop()
