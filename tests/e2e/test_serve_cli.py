"""``switchboard serve`` as a subprocess: options, --config, logs, signals, the console."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

# The hand-driven protocol peer lives with the server's integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support.network import free_port, needs_ipv6
from support.peers import RawPeer
from support.servers import ServerProcess, cli_env, run_cli
from switchboard.client import Client, ConnectionLost, NoSuchClient, RecipientBusy, ServerFull
from switchboard.protocol import (
    Ack,
    ErrorCode,
    FrameDecoder,
    Message,
    NameOk,
    NameRequest,
    ReceiptStatus,
    SendRequest,
    Shutdown,
    TimeOk,
    TimeRequest,
    Welcome,
    encode,
)

HOST = "127.0.0.1"
Factory = Callable[..., ServerProcess]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} ")


def test_logs_one_line_per_event_with_reasons(server_process_factory: Factory) -> None:
    sp = server_process_factory("--heartbeat", "0.2")
    port = sp.port
    with Client(HOST, port, timeout=5) as a, Client(HOST, port, timeout=5) as b:
        a.send(b.client_id, "hi")
        with pytest.raises(NoSuchClient):
            a.send(4242, "nobody")
    line = sp.wait_for_log(rf"connect #{a.client_id} 127\.0\.0\.1:{a.welcome.port}")
    assert TIMESTAMP.match(line) and " INFO " in line
    assert TIMESTAMP.match(sp.wait_for_log(rf"forward #{a.client_id} -> #{b.client_id} "))
    assert TIMESTAMP.match(sp.wait_for_log(rf"error #{a.client_id} NO_SUCH_CLIENT"))
    sp.wait_for_log(rf"disconnect #{a.client_id} .*closed by peer")
    # A silent peer: heartbeat timeout.  A peer sending garbage: protocol error.
    with RawPeer(port) as silent:
        silent.expect_closed(timeout=5)
    sp.wait_for_log(rf"disconnect #{silent.client_id} .*heartbeat timeout")
    with RawPeer(port) as bad:
        bad.send(b"GET / HTTP/1.1\r\n\r\n")
        bad.expect_closed()
    sp.wait_for_log(rf"disconnect #{bad.client_id} .*protocol error.*BAD_FRAME")
    with Client(HOST, port, timeout=5) as last:
        assert sp.stop(signal.SIGTERM) == 0
        sp.wait_for_log(rf"disconnect #{last.client_id} .*shutdown")


def test_json_logs(server_process_factory: Factory) -> None:
    sp = server_process_factory("--log-format", "json")
    with Client(HOST, sp.port, timeout=5) as a, Client(HOST, sp.port, timeout=5) as b:
        a.send(b.client_id, "héllo 🌍")
    sp.wait_for_log(r'"event": "disconnect"')
    sp.wait_for_log(r'"event": "disconnect"')
    assert sp.stop(signal.SIGTERM) == 0
    sp.wait_for_log(r'"event": "shutdown"')
    events = []
    for line in sp.log:
        obj = json.loads(line)
        assert isinstance(obj["event"], str) and obj["level"] and obj["msg"]
        assert TIMESTAMP.match(obj["ts"] + " ")
        events.append(obj)
    names = [e["event"] for e in events]
    for name in ("listening", "connect", "forward", "disconnect", "shutdown"):
        assert name in names, names
    connect = next(e for e in events if e["event"] == "connect")
    assert connect["client_id"] == a.client_id and connect["ip"] == HOST
    disconnect = next(e for e in events if e["event"] == "disconnect")
    assert disconnect["reason"] == "closed by peer"


def test_config_file_with_command_line_winning(
    server_process_factory: Factory, tmp_path: Path
) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(
        '[server]\nname = "from-file"\nport = 1\nmax-clients = 2\nheartbeat = 4.5\n'
        'max-frame = 8192\nlog-format = "json"\n',
        encoding="utf-8",
    )
    # The fixture passes --port 0 and --name test-server: those win over the file.
    sp = server_process_factory("--config", str(config), "--max-frame", "4096")
    json.loads(sp.log[0])  # log-format came from the file
    with Client(HOST, sp.port, timeout=5) as a, Client(HOST, sp.port, timeout=5):
        w = a.welcome
        assert (w.server_name, w.max_clients, w.heartbeat_ms, w.max_frame) == (
            "test-server",
            2,
            4500,
            4096,
        )
        with pytest.raises(ServerFull):
            Client(HOST, sp.port, timeout=5)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("colour = 'blue'\n", "unknown setting"),
        ("max-clients = [\n", "not valid TOML"),
        ("max-clients = 'many'\n", "max_clients"),
        ("max-clients = 0\n", "max_clients"),
        ("heartbeat = -1\n", "heartbeat"),
        (None, "cannot read"),
    ],
    ids=["unknown key", "bad toml", "wrong type", "zero clients", "negative heartbeat", "missing"],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, content: str | None, expected: str) -> None:
    config = tmp_path / "bad.toml"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    result = run_cli("serve", "--port", "0", "--http", "off", "--config", str(config), timeout=20)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and expected in err, err


@pytest.mark.parametrize(
    "args",
    [
        ["--max-clients", "0"],
        ["--port", "70000"],
        ["--heartbeat", "0"],
        ["--heartbeat", "0.01"],
        ["--heartbeat", "inf"],
        ["--heartbeat", "1e300"],
        ["--heartbeat", "nan"],
    ],
)
def test_bad_options_are_refused(args: list[str]) -> None:
    result = run_cli("serve", "--http", "off", *args, timeout=20)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip()
    if args[0] == "--heartbeat":  # refused before listening, not when a client connects
        assert "heartbeat must be 0.1-86400 seconds" in result.stderr, result.stderr


def test_longest_heartbeat_is_served(server_process_factory: Factory) -> None:
    """A day's heartbeat still fits WELCOME and the TCP keepalive options (capped there)."""
    sp = server_process_factory("--heartbeat", "86400")
    with Client(HOST, sp.port, timeout=5) as client:
        assert client.welcome.heartbeat_ms == 86_400_000
        assert client.time() is not None
    sp.wait_for_log(r"disconnect #1 ")
    assert not [line for line in sp.log if "Traceback" in line or "ERROR" in line], sp.log


def test_port_in_use(server_process: ServerProcess) -> None:
    result = run_cli("serve", "--port", str(server_process.port), "--http", "off", timeout=20)
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert "cannot listen" in err[-1] and str(server_process.port) in err[-1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_shut_down_gracefully(server_process_factory: Factory, sig: int) -> None:
    sp = server_process_factory()
    with (
        Client(HOST, sp.port, timeout=5) as client,
        RawPeer(sp.port, rcvbuf=4096) as never_reads,
    ):
        # The peer that never reads gets a full pipe first, so its SHUTDOWN cannot be flushed.
        for _ in range(20_000):
            try:
                client.send(never_reads.client_id, "x" * 4000)
            except Exception as exc:
                assert getattr(exc, "code", None) == ErrorCode.RECIPIENT_BUSY, exc
                break
        start = time.monotonic()
        sp.proc.send_signal(sig)
        frame = client.next_indication(timeout=5)
        while frame is not None and not isinstance(frame, Shutdown):
            frame = client.next_indication(timeout=5)
        assert isinstance(frame, Shutdown)
        assert signal.Signals(sig).name in frame.reason
        assert sp.proc.wait(5) == 0
        assert time.monotonic() - start < 2.5
        with pytest.raises(ConnectionLost):
            client.time()
    sp.wait_for_log(r"shutting down")


def test_max_clients_option(server_process_factory: Factory) -> None:
    sp = server_process_factory("--max-clients", "1")
    with Client(HOST, sp.port, timeout=5) as only:
        for _ in range(3):
            with pytest.raises(ServerFull):
                Client(HOST, sp.port, timeout=5)
        sp.wait_for_log("refused")
        assert only.name() == "test-server"
        assert sp.proc.poll() is None
    sp.wait_for_log(r"disconnect #\d+ .*\(0 connected\)")
    with Client(HOST, sp.port, timeout=5) as again:
        assert again.name() == "test-server"


@needs_ipv6
def test_ipv6_host(server_process_factory: Factory) -> None:
    sp = server_process_factory("--host", "::1")
    with Client("::1", sp.port, timeout=5) as client:
        assert client.welcome.ip == "::1"
        assert [c.ip for c in client.list_clients()] == ["::1"]
    with RawPeer(sp.port, "::1") as raw:
        raw.send(TimeRequest(request_id=3))
        assert raw.expect(TimeOk).request_id == 3
    # Every endpoint in the log is written as IPv6 is: in brackets ([::1]:7000, not ::1:7000).
    assert re.search(rf"listening on \[::1\]:{sp.port} as ", sp.wait_for_log("listening on"))
    sp.wait_for_log(r"connect #1 \[::1\]:\d+ \(1 connected\)")
    sp.wait_for_log(r"disconnect #1 \[::1\]:\d+: ")


@needs_ipv6
def test_ipv6_endpoints_in_client_messages() -> None:
    port = free_port("::1")  # nothing listens there now
    result = run_cli("time", "--host", "::1", "--port", str(port))
    assert result.returncode == 2
    assert f"connection refused by [::1]:{port}" in result.stderr, result.stderr


def test_counts_are_singular_when_one(server_process_factory: Factory) -> None:
    sp = server_process_factory("--max-clients", "1")
    assert "(max 1 client, heartbeat" in sp.wait_for_log("listening on")
    with Client(HOST, sp.port, timeout=5):
        result = run_cli("time", port=sp.port)
        assert result.returncode == 2
        assert "the server is full (1 client); try again later" in result.stderr, result.stderr
        assert re.search(r"refused 127\.0\.0\.1:\d+: server full \(1 client\)$",
                         sp.wait_for_log("server full").rstrip())  # fmt: skip


def test_uses_uvloop_when_available(server_process_factory: Factory) -> None:
    pytest.importorskip("uvloop")
    sp = server_process_factory("--log-level", "debug")
    sp.wait_for_log(r"event loop: uvloop")


@pytest.mark.parametrize("how", ["quit", "ctrl-d"])
def test_the_console_stops_the_server(how: str) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "switchboard", "serve", "--port", "0", "--http", "off"],  # default host, name
        env=cli_env(),
        encoding="utf-8",
        timeout=10,
    )
    try:
        child.expect(r"listening on 127\.0\.0\.1:(\d+)")
        port = int(child.match.group(1))
        child.expect("quit")
        with Client(HOST, port, timeout=5) as client:
            child.sendline("what")
            child.expect("Unknown command")
            assert client.name() == socket.gethostname()
            if how == "quit":
                child.sendline("quit")
            else:
                child.sendeof()
            frame = client.next_indication(timeout=5)
            assert isinstance(frame, Shutdown)
            assert ("quit" if how == "quit" else "console closed") in frame.reason
            child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)


def test_server_stays_up_while_a_client_misbehaves(server_process: ServerProcess) -> None:
    with Client(HOST, server_process.port, timeout=5) as good:
        for payload in (b"\x00" * 14, b"SB\x01\x07" + b"\x00" * 10, b"SB\x09"):
            with socket.create_connection((HOST, server_process.port), timeout=5) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        assert good.name() == "test-server"
        assert good.next_indication(timeout=0.05) is None
    assert server_process.proc.poll() is None


def test_backpressure_under_the_real_event_loop(
    server_process_factory: Factory, tmp_path: Path
) -> None:
    """RECIPIENT_BUSY, then the hard limit, with the event loop ``serve`` really uses."""
    config = tmp_path / "small-buffers.toml"
    config.write_text("write-high-water = 65536\nwrite-hard-limit = 98304\n", encoding="utf-8")
    sp = server_process_factory("--config", str(config))
    with (
        Client(HOST, sp.port, timeout=10) as sender,
        RawPeer(sp.port) as helper,
        RawPeer(sp.port, rcvbuf=4096) as slow,
    ):
        slow.send(*[SendRequest(helper.client_id, "r", request_id=i + 1) for i in range(2000)])
        held = [helper.expect(Message).message_id for _ in range(2000)]
        forwarded = []
        for _ in range(20_000):
            try:
                forwarded.append(sender.send(slow.client_id, "x" * 4000).message_id)
            except RecipientBusy:
                break
        else:
            raise AssertionError("never RECIPIENT_BUSY")
        helper.send(*[Ack(mid) for mid in held])  # receipts push it over the hard limit
        sp.wait_for_log(rf"disconnect #{slow.client_id} .*too slow")
        statuses = set()
        for message_id in forwarded:
            statuses.add(sender.wait_receipt(message_id, timeout=10))
        assert statuses == {ReceiptStatus.NOT_DELIVERED}
        assert sender.name() == "test-server"


def test_half_closed_peer_gets_its_answers(server_process: ServerProcess) -> None:
    """``printf <requests> | nc``: the peer stops sending, then reads every answer."""
    with socket.create_connection((HOST, server_process.port), timeout=5) as s:
        s.sendall(encode(TimeRequest(request_id=1)) + encode(NameRequest(request_id=2)))
        s.shutdown(socket.SHUT_WR)
        decoder = FrameDecoder()
        while data := s.recv(65536):
            decoder.feed(data)
        frames = list(decoder)
    assert [type(f) for f in frames] == [Welcome, TimeOk, NameOk]
    assert [f.request_id for f in frames] == [0, 1, 2]
