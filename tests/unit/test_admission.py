"""The admission bookkeeping (server/admission.py) and the log summariser (server/logs.py),
without sockets: bounded tables, capped holds, prefixes, constant-time token checks."""

from __future__ import annotations

import dataclasses
import hmac
import logging
from pathlib import Path

import pytest

from switchboard import defaults
from switchboard.protocol import ErrorCode
from switchboard.server import ClientConnection, ServerConfig
from switchboard.server.admission import AuthThrottle, ConnectionCounts, source_of
from switchboard.server.app import SwitchboardServer
from switchboard.server.errors import RequestFailed
from switchboard.server.logs import EventLog, RepeatedEvents
from switchboard.server.states import ConnectionState


@pytest.mark.parametrize(
    ("ip", "prefix", "loopback"),
    [
        ("203.0.113.77", "203.0.113.0/24", False),
        ("127.0.0.5", "127.0.0.0/24", True),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", False),
        ("::1", "::/64", True),
        ("::ffff:198.51.100.9", "198.51.100.0/24", False),  # a dual-stack listener's IPv4 peer
        ("fe80::1%eth0", "fe80::/64", False),
        ("not an address", "not an address", False),
    ],
)
def test_source_of_groups_addresses_by_network(ip: str, prefix: str, loopback: bool) -> None:
    assert source_of(ip) == (prefix, loopback)


def test_the_hold_doubles_and_is_capped_without_overflow() -> None:
    throttle = AuthThrottle()
    holds = [throttle.begin("203.0.113.1") for _ in range(5000)]
    free = defaults.AUTH_FAILURES_BEFORE_DELAY
    assert holds[:free] == [0.0] * free
    assert holds[free : free + 3] == [0.5, 1.0, 2.0]
    assert max(holds) == holds[-1] == defaults.AUTH_DELAY_MAX_S


def test_a_right_token_forgets_the_address_but_not_its_network() -> None:
    throttle = AuthThrottle()
    for _ in range(4):
        throttle.begin("203.0.113.1")
    throttle.begin("203.0.113.1")
    throttle.succeeded("203.0.113.1")
    assert throttle.failures("203.0.113.1") == (0, 4, 4)  # the right attempt taken back


def test_many_networks_hold_everyone_back_server_wide() -> None:
    throttle = AuthThrottle()
    # One failure from each of many networks: no address or network is over its share ...
    for n in range(defaults.AUTH_SERVER_FAILURES_BEFORE_DELAY):
        throttle.begin(f"10.{n // 256}.{n % 256}.1")
    # ... but the server is: a newcomer from anywhere waits.
    assert throttle.delay("192.0.2.1") == defaults.AUTH_DELAY_BASE_S * 2


def test_the_failure_tables_stay_bounded_under_many_addresses() -> None:
    throttle = AuthThrottle(max_sources=100)
    for n in range(20_000):  # 20,000 IPv6 addresses in 20,000 different /64s
        throttle.begin(f"2001:db8:{n // 65536:x}:{n % 65536:x}::1")
    assert len(throttle.by_address) == len(throttle.by_prefix) == 100
    assert throttle.total.count == 20_000  # the server-wide count still holds them back
    assert throttle.delay("2001:db8:ffff::1") == defaults.AUTH_DELAY_MAX_S


def test_failures_are_forgotten_after_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("switchboard.server.admission.time.monotonic", lambda: now[0])
    throttle = AuthThrottle(memory_s=600)
    for _ in range(10):
        throttle.begin("203.0.113.1")
    assert throttle.delay("203.0.113.1") > 0
    now[0] += 601
    assert throttle.delay("203.0.113.1") == 0.0
    throttle.sweep()
    assert not throttle.by_address and not throttle.by_prefix


def test_connection_counts_per_address_and_network() -> None:
    counts = ConnectionCounts(per_address=2, per_prefix=3, limit_loopback=False)
    for ip in ("203.0.113.1", "203.0.113.1", "203.0.113.2"):
        assert counts.refusal(ip) is None
        counts.add(ip)
    assert "your address" in (counts.refusal("203.0.113.1") or "")
    assert "203.0.113.0/24" in (counts.refusal("203.0.113.9") or "")
    assert counts.refusal("198.51.100.1") is None
    counts.remove("203.0.113.1")
    assert counts.refusal("203.0.113.1") is None and counts.from_address("203.0.113.1") == 1
    for _ in range(5):
        counts.add("127.0.0.1")
    assert counts.refusal("127.0.0.1") is None  # loopback exempt unless limit_loopback


def _server(tmp_path: Path, tokens: list[str]) -> SwitchboardServer:
    path = tmp_path / "tokens"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return SwitchboardServer(
        ServerConfig(port=0, name="unit", auth_token_file=str(path), data_dir="none")
    )


def _conn(server: SwitchboardServer) -> ClientConnection:
    """A connection that has not said HELLO (no transport: authenticate needs none)."""
    conn = ClientConnection(server)
    conn.client_id, conn.ip, conn.port = 1, "203.0.113.1", 5000
    return conn


@pytest.mark.parametrize("presented", ["token-one", "token-three", "token-on", "", "x" * 300])
def test_tokens_are_compared_in_constant_time_with_every_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    server = _server(tmp_path, ["token-one", "token-two", "token-three"])
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    conn = _conn(server)
    try:
        server.authenticate(conn, presented)
    except RequestFailed as failure:
        assert failure.code == ErrorCode.AUTH_FAILED
    # Every token is compared, with hmac.compare_digest, whether or where one matches.
    assert sorted(b for _, b in compared) == sorted(server.tokens)
    accepted = presented in ("token-one", "token-three")
    assert conn.authenticated is accepted
    assert conn.state is (ConnectionState.READY if accepted else ConnectionState.HANDSHAKE)


def test_repeated_events_log_a_burst_then_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    events = EventLog()
    runs = RepeatedEvents(events, "#7 203.0.113.1:5000", interval=60.0, burst=3, max_runs=2)
    for n in range(100):
        runs.event("error RATE_LIMITED", logging.INFO, "error", "error #7 RATE_LIMITED %d", n)
    runs.event("forward", logging.INFO, "forward", "forward #7")
    shown = [r.getMessage() for r in caplog.records if r.__dict__["event"] == "error"]
    assert shown == [f"error #7 RATE_LIMITED {n}" for n in range(3)]
    runs.flush()
    (summary,) = [r for r in caplog.records if r.__dict__["event"] == "suppressed"]
    assert summary.__dict__["count"] == 97 and summary.__dict__["kind"] == "error RATE_LIMITED"
    assert "#7 203.0.113.1:5000: 97 more 'error RATE_LIMITED' line(s)" in summary.getMessage()
    assert not runs.pending


def test_repeated_events_stay_bounded_over_many_sources(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    runs = RepeatedEvents(EventLog(), "", interval=60.0, burst=1, max_runs=10)
    for n in range(1000):
        for _ in range(3):
            runs.event("refused", logging.WARNING, "refused", "refused", source=f"10.0.{n}.0/24")
    assert len(runs._runs) == 10
    runs.flush()
    counts = [r.__dict__["count"] for r in caplog.records if r.__dict__["event"] == "suppressed"]
    counted = sum(counts)
    shown = sum(1 for r in caplog.records if r.__dict__["event"] == "refused")
    assert shown + counted == 3000  # an evicted source's count is logged, not lost


def test_the_limits_are_toml_keys_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        "[server]\nmax-per-address = 8\nmax-per-prefix = 16\nlimit-loopback = true\n"
        "max-unauthenticated = 4\n",
        encoding="utf-8",
    )
    config = ServerConfig.load(path)
    assert (config.max_per_address, config.max_per_prefix) == (8, 16)
    assert config.limit_loopback is True and config.unauthenticated_limit == 4
    assert ServerConfig().unauthenticated_limit == int(
        defaults.MAX_CLIENTS * defaults.UNAUTHENTICATED_SHARE
    )
    path.write_text('limit-loopback = "yes"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="limit_loopback must be bool"):
        ServerConfig.load(path)
    for key in ("max_per_address", "max_per_prefix", "max_unauthenticated"):
        with pytest.raises(ValueError, match=f"{key} must be at least 1"):
            ServerConfig.load(None, **{key: 0})


def test_the_log_summary_is_configurable_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("log-repeat-burst = 50\nlog-repeat-interval = 60\n", encoding="utf-8")
    config = ServerConfig.load(path)
    assert (config.log_repeat_burst, config.log_repeat_interval) == (50, 60.0)
    server = SwitchboardServer(dataclasses.replace(config, data_dir="none"))
    assert (server.source_log.burst, server.source_log.interval) == (50, 60.0)
    for bad in ({"log_repeat_burst": 0}, {"log_repeat_interval": 0.0}):
        with pytest.raises(ValueError, match="log_repeat_"):
            ServerConfig.load(None, **bad)
