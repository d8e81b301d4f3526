"""``switchboard lab demux``: every client LIST names is one accepted socket on the server's
port, told apart by its 4-tuple; two clients share a source port on two addresses."""

from __future__ import annotations

from support.lab import children, run_experiment


def test_each_listed_client_is_one_four_tuple_on_the_one_server_port() -> None:
    run = run_experiment("demux", "--clients", "3")
    seen = run.observations
    port = seen["server_port"]
    clients = seen["clients"]
    assert len(clients) == 5 == seen["accepted_sockets"] == seen["distinct_four_tuples"]
    assert seen["local_ends"] == [f"127.0.0.1:{port}"]
    for c in clients:
        # LIST's ip:port is the remote end of the server's accepted socket, as the kernel has it.
        assert c["state"] == "ESTABLISHED"
        assert c["local"] == f"127.0.0.1:{port}"
        assert c["remote"] == f"{c['ip']}:{c['port']}"
    assert len({c["id"] for c in clients}) == 5
    shared = seen["shared_source_port"]
    assert seen["connections_from_shared_port"] == [f"127.0.0.1:{shared}", f"127.0.0.2:{shared}"]
    assert run.left_on([port, shared]) == []
    assert children() == []
