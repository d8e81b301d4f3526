"""TLS and token authentication over real sockets, with a certificate made in the test.

Constant-time comparison is a property of the code, not of a measurement: the server checks
every token with ``hmac.compare_digest`` against every configured token with no early exit
(``SwitchboardServer.authenticate``); see docs/SECURITY.md.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from support.peers import RawPeer
from support.servers import ServerThread
from support.tls_certs import TestCert, make_self_signed
from switchboard import defaults
from switchboard.client import AsyncClient, AuthError, Client, ConnectionFailed, NoSuchClient
from switchboard.client.channel import client_ssl_context
from switchboard.protocol import (
    ErrorCode,
    HelloOk,
    HelloRequest,
    ListOk,
    ListRequest,
    Message,
    NameRequest,
    SendOk,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)

HOST = "127.0.0.1"
TOKEN = "s3cret-token-for-tests"
OTHER_TOKEN = "second-valid-token"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TestCert:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"# one token per line\n{TOKEN}\n\n{OTHER_TOKEN}\n", encoding="utf-8")
    return str(path)


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(server_factory: Any, cert: TestCert) -> ServerThread:
    st: ServerThread = server_factory(tls_cert=cert.cert, tls_key=cert.key)
    return st


def test_blocking_client_over_tls_with_a_ca_file(tls_server: ServerThread, cert: TestCert) -> None:
    ctx = client_ssl_context(cafile=cert.cert)
    with (
        Client(HOST, tls_server.port, timeout=5, ssl_context=ctx) as a,
        Client(HOST, tls_server.port, timeout=5, ssl_context=ctx) as b,
    ):
        assert a.name() == "test-server"
        assert len(a.time_many(100)) == 100
        ok = a.send(b.client_id, "über TLS ✓")
        msg = b.next_indication(timeout=5)
        assert msg is not None and getattr(msg, "text", None) == "über TLS ✓"
        assert a.wait_receipt(ok.message_id) == 1  # DELIVERED


async def test_async_client_over_tls(tls_server: ServerThread, cert: TestCert) -> None:
    for ctx in (client_ssl_context(cafile=cert.cert), client_ssl_context(insecure=True)):
        client = await AsyncClient.connect(HOST, tls_server.port, timeout=5, ssl_context=ctx)
        try:
            assert await client.name() == "test-server"
            assert len(await client.time_many(50)) == 50
        finally:
            await client.close()


def test_an_untrusted_certificate_is_refused_clearly(tls_server: ServerThread) -> None:
    # System CAs only: the self-signed certificate must not be accepted.
    with pytest.raises(ConnectionFailed, match="certificate not accepted"):
        Client(HOST, tls_server.port, timeout=5, ssl_context=client_ssl_context())


def test_a_certificate_for_another_name_is_refused(server_factory: Any, tmp_path: Path) -> None:
    other = make_self_signed(tmp_path, "elsewhere", san="DNS:elsewhere.example")
    st = server_factory(tls_cert=other.cert, tls_key=other.key)
    with pytest.raises(ConnectionFailed, match="certificate not accepted"):
        Client(HOST, st.port, timeout=5, ssl_context=client_ssl_context(cafile=other.cert))
    # --insecure is the escape hatch for exactly this (self-signed test servers).
    with Client(HOST, st.port, timeout=5, ssl_context=client_ssl_context(insecure=True)) as c:
        assert c.name() == "test-server"


def test_a_plain_client_against_a_tls_server_fails_clearly(
    tls_server: ServerThread, cert: TestCert
) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionFailed, match="needs --tls"):
        Client(HOST, tls_server.port, timeout=5, connect_timeout=1)
    assert time.monotonic() - start < 4
    # Plain protocol bytes at a TLS listener: the server drops them, nothing else changes.
    with socket.create_connection((HOST, tls_server.port), timeout=5) as raw:
        raw.sendall(encode(TimeRequest(request_id=1)))
        # Not a TLS ClientHello: at most a TLS alert comes back, never a protocol frame.
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            assert not raw.recv(1024).startswith(encode(TimeRequest())[:2])
    tls_server.wait_for(lambda s: len(s._connections) == 0)
    ctx = client_ssl_context(cafile=cert.cert)
    with Client(HOST, tls_server.port, timeout=5, ssl_context=ctx) as c:
        assert c.name() == "test-server"


def test_a_tls_client_against_a_plain_server_fails_clearly(server: ServerThread) -> None:
    with pytest.raises(ConnectionFailed, match="TLS handshake failed"):
        Client(HOST, server.port, timeout=5, ssl_context=client_ssl_context(insecure=True))
    server.wait_for(lambda s: s.directory.client_count() == 0)
    with Client(HOST, server.port, timeout=5) as c:
        assert c.name() == "test-server"


def test_tls_and_tokens_together(server_factory: Any, cert: TestCert, token_file: str) -> None:
    st = server_factory(tls_cert=cert.cert, tls_key=cert.key, auth_token_file=token_file)
    ctx = client_ssl_context(cafile=cert.cert)
    with Client(HOST, st.port, timeout=5, ssl_context=ctx, token=TOKEN) as c:
        assert c.name() == "test-server"
    with pytest.raises(AuthError) as info:
        Client(HOST, st.port, timeout=5, ssl_context=ctx, token="wrong")
    assert info.value.code == ErrorCode.AUTH_FAILED


# --- authentication ---------------------------------------------------------------------------


@pytest.fixture
def auth_server(
    server_factory: Any, token_file: str, caplog: pytest.LogCaptureFixture
) -> ServerThread:
    caplog.set_level(logging.DEBUG, logger="switchboard")
    st: ServerThread = server_factory(auth_token_file=token_file)
    return st


def test_a_request_before_hello_gets_auth_required_and_close(auth_server: ServerThread) -> None:
    with RawPeer(auth_server.port) as peer:
        # The WELCOME comes first (it carries the limits); anything but HELLO is refused.
        peer.send(TimeRequest(request_id=5), NameRequest(request_id=6))
        peer.expect_error(ErrorCode.AUTH_REQUIRED, 5)
        assert peer.expect_closed() == []
    auth_server.wait_for(lambda s: s.directory.client_count() == 0)


def test_a_wrong_token_gets_auth_failed_and_close(auth_server: ServerThread) -> None:
    for token in ("wrong", "", TOKEN + "x", TOKEN[:-1], TOKEN.upper()):
        with RawPeer(auth_server.port) as peer:
            peer.send(HelloRequest(token=token, request_id=7), TimeRequest(request_id=8))
            peer.expect_error(ErrorCode.AUTH_FAILED, 7, timeout=15)
            assert peer.expect_closed(timeout=15) == []


def test_the_right_token_opens_every_request(auth_server: ServerThread) -> None:
    with RawPeer(auth_server.port) as peer:
        peer.send(HelloRequest(nick="ada", token=OTHER_TOKEN, request_id=1))
        assert peer.expect(HelloOk).nick == "ada"
        peer.send(TimeRequest(request_id=2))
        assert peer.expect(TimeOk).request_id == 2
    with Client(HOST, auth_server.port, timeout=5, token=TOKEN) as a:
        assert a.name() == "test-server"
        # Unauthenticated connections are invisible and unreachable to those who are.
        with RawPeer(auth_server.port) as stranger:
            assert [c.client_id for c in a.list_clients()] == [a.client_id]
            with pytest.raises(NoSuchClient) as info:
                a.send(stranger.client_id, "hello?")
            assert info.value.code == ErrorCode.NO_SUCH_CLIENT


async def test_async_client_token(auth_server: ServerThread) -> None:
    client = await AsyncClient.connect(HOST, auth_server.port, timeout=5, token=TOKEN)
    try:
        assert await client.name() == "test-server"
    finally:
        await client.close()
    with pytest.raises(AuthError):
        await AsyncClient.connect(HOST, auth_server.port, timeout=5, token="nope")


def test_tokens_never_reach_the_log(
    auth_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(HOST, auth_server.port, timeout=5, token=TOKEN) as c:
        c.name()
    with pytest.raises(AuthError):
        Client(HOST, auth_server.port, timeout=5, token="wrong-" + OTHER_TOKEN)
    text = "\n".join(
        f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith("switch")
    )
    assert "auth failed" in text  # the failure itself is logged ...
    assert TOKEN not in text and OTHER_TOKEN not in text  # ... never a token


def test_repeated_failures_from_one_address_are_slowed_down(auth_server: ServerThread) -> None:
    free = defaults.AUTH_FAILURES_BEFORE_DELAY
    answered_after: list[float] = []
    for attempt in range(free + 2):
        with RawPeer(auth_server.port) as peer:
            start = time.monotonic()
            peer.send(HelloRequest(token=f"guess-{attempt}", request_id=1))
            peer.expect_error(ErrorCode.AUTH_FAILED, 1, timeout=15)
            answered_after.append(time.monotonic() - start)
            assert peer.expect_closed(timeout=5) == []
    # The documented back-off: 0.25 s x 2^(failures - AUTH_FAILURES_BEFORE_DELAY + 1), capped,
    # chosen before the token is looked at.
    assert answered_after[free] >= 0.5 * 0.95, answered_after
    assert answered_after[free + 1] >= 1.0 * 0.95, answered_after
    # A right token from the same address waits the same hold (timing must not tell it from
    # a wrong one: tests/integration/test_hardening_admission.py), then clears the record.
    start = time.monotonic()
    with Client(HOST, auth_server.port, timeout=15, token=TOKEN) as c:
        assert c.name() == "test-server"
    assert time.monotonic() - start >= 2.0 * 0.95
    assert auth_server.call(lambda: auth_server.server.auth.delay(HOST)) == 0.0


def test_a_silent_connection_is_closed_after_the_handshake_timeout(
    server_factory: Any, token_file: str
) -> None:
    st = server_factory(auth_token_file=token_file, handshake_timeout=0.3, heartbeat=5.0)
    with RawPeer(st.port) as peer:
        start = time.monotonic()
        peer.expect_error(ErrorCode.IDLE_TIMEOUT, 0, timeout=5)
        assert peer.expect_closed() == []
        # Well before the heartbeat (3 x 5 s) would have noticed it.
        assert 0.3 * 0.9 <= time.monotonic() - start < 3.0
    st.wait_for(lambda s: len(s._connections) == 0)


def test_an_authenticated_client_is_not_bound_by_the_handshake_timeout(
    server_factory: Any, token_file: str
) -> None:
    st = server_factory(auth_token_file=token_file, handshake_timeout=0.3, heartbeat=5.0)
    with RawPeer(st.port) as peer:
        peer.send(HelloRequest(token=TOKEN, request_id=1))
        peer.expect(HelloOk)
        time.sleep(0.8)  # idling past the handshake timeout is the behaviour under test
        peer.send(ListRequest(request_id=2), SendRequest(peer.client_id, "me", request_id=3))
        # Exactly the answers: an IDLE_TIMEOUT (or anything else) in their place fails here.
        listed = peer.expect(ListOk)
        assert listed.request_id == 2
        assert [c.client_id for c in listed.clients] == [peer.client_id]
        assert peer.expect(Message).text == "me"
        assert peer.expect(SendOk).request_id == 3
        assert not peer.eof


def test_tls_handshake_failures_leave_no_traceback(
    tls_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        with socket.create_connection((HOST, tls_server.port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                raw.recv(100)
    tls_server.wait_for(lambda s: len(s._connections) == 0)
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]


class SlowTlsNoWelcome:
    """A TLS listener that lets each handshake wait ``delay`` seconds, completes it, then
    never sends WELCOME: the client's connect timeout must cover both waits together."""

    def __init__(self, cert: TestCert, delay: float) -> None:
        import ssl
        import threading

        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert.cert, cert.key)
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.delay = delay
        self.done = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            raw, _ = self.listener.accept()
            self.conns.append(raw)
            if self.done.wait(self.delay):
                return
            tls = self.context.wrap_socket(raw, server_side=True)
            self.conns.append(tls)
            self.done.wait(30)

    def close(self) -> None:
        self.done.set()
        for conn in self.conns:
            conn.close()
        self.listener.close()


def test_the_connect_timeout_is_one_deadline_for_tls_and_welcome(cert: TestCert) -> None:
    # 1.5 s of handshake, then no WELCOME: with a 2.5 s connect timeout the client gives up
    # 2.5 s after it started (before, the WELCOME wait began afresh: 4 s).
    slow = SlowTlsNoWelcome(cert, delay=1.5)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionFailed, match=r"no WELCOME within 2\.5s"):
            Client(
                HOST,
                slow.port,
                connect_timeout=2.5,
                ssl_context=client_ssl_context(cafile=cert.cert),
            )
        elapsed = time.monotonic() - start
    finally:
        slow.close()
    assert 1.5 <= elapsed < 3.5, elapsed


async def test_the_async_connect_timeout_is_one_deadline_too(cert: TestCert) -> None:
    slow = SlowTlsNoWelcome(cert, delay=1.5)
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionFailed, match=r"no WELCOME within 2\.5s"):
            await AsyncClient.connect(
                HOST,
                slow.port,
                connect_timeout=2.5,
                ssl_context=client_ssl_context(cafile=cert.cert),
            )
        elapsed = time.monotonic() - start
    finally:
        slow.close()
    assert 1.5 <= elapsed < 3.5, elapsed
