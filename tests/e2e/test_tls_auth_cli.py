"""TLS, tokens and safe defaults from the command line: ``switchboard serve`` as a
subprocess, every one-shot client command as a subprocess."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.commands import Follower, assert_one_clear_error_line
from support.servers import ServerProcess, cli_env, run_cli, start_server_process
from support.tls_certs import TestCert, make_self_signed

TOKEN = "cli-token-Zq8vR2"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TestCert:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)  # as it should be: others may not read it (see the mode warning test)
    return str(path)


@pytest.fixture(scope="module")
def secure_server(cert: TestCert, token_file: str) -> Iterator[ServerProcess]:
    """One TLS + token server for the module (each CLI run is a process start anyway)."""
    sp = start_server_process(
        "--tls-cert", cert.cert, "--tls-key", cert.key, "--auth-token-file", token_file
    )
    yield sp
    sp.stop()


def tls_args(cert: TestCert, mode: str) -> list[str]:
    return ["--tls", "--cafile", cert.cert] if mode == "cafile" else ["--tls", "--insecure"]


@pytest.mark.parametrize("mode", ["cafile", "insecure"])
def test_every_one_shot_command_over_tls_with_a_token(
    secure_server: ServerProcess,
    cert: TestCert,
    mode: str,
    follow: Callable[..., Follower],
) -> None:
    base = [*tls_args(cert, mode), "--token", TOKEN]
    port = secure_server.port
    result = run_cli("time", "--count", "5", *base, port=port)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("5/5 responses")
    result = run_cli("name", *base, port=port)
    assert (result.returncode, result.stdout.strip()) == (0, "test-server"), result.stderr
    result = run_cli("list", "--json", *base, port=port)
    assert result.returncode == 0, result.stderr
    listener = follow("listen", "--json", *base, "--port", str(port))
    target = json.loads(listener.line())["id"]
    result = run_cli("send", str(target), "über TLS", "--wait-receipt", "5", *base, port=port)
    assert result.returncode == 0, result.stderr
    assert "delivered" in result.stdout
    assert json.loads(listener.line())["text"] == "über TLS"


def test_the_token_from_the_environment(secure_server: ServerProcess, cert: TestCert) -> None:
    env = cli_env(SWITCHBOARD_TOKEN=TOKEN)
    result = run_cli("name", *tls_args(cert, "cafile"), port=secure_server.port, env=env)
    assert (result.returncode, result.stdout.strip()) == (0, "test-server"), result.stderr


# Without a token the first request is refused, a wrong token the HELLO: either way the
# connection cannot be had, exit 2, as when the server cannot be reached.
@pytest.mark.parametrize("command", [["name"], ["send", "1", "hi"]])
@pytest.mark.parametrize(("token", "code"), [(None, "AUTH_REQUIRED"), ("wrong", "AUTH_FAILED")])
def test_a_missing_or_wrong_token_is_one_clear_line(
    secure_server: ServerProcess, cert: TestCert, command: list[str], token: str | None, code: str
) -> None:
    args = [*command, *tls_args(cert, "cafile")] + (["--token", token] if token else [])
    err = assert_one_clear_error_line(run_cli(*args, port=secure_server.port), 2)
    assert code in err, err
    # Says what to do: a user cannot send HELLO, but can pass a token.
    assert "--token" in err and "$SWITCHBOARD_TOKEN" in err, err
    assert "HELLO" not in err, err


def test_listen_without_a_token_is_refused_at_once(
    secure_server: ServerProcess, cert: TestCert
) -> None:
    # Before: "connected ..." and, at the server's handshake timeout, exit 3.
    result = run_cli("listen", *tls_args(cert, "cafile"), port=secure_server.port)
    err = assert_one_clear_error_line(result, 2)
    assert "AUTH_REQUIRED" in err and "--token" in err, err
    assert result.stdout == ""


def test_plain_cli_against_the_tls_server(secure_server: ServerProcess) -> None:
    # --timeout bounds the wait for a WELCOME that a TLS server never sends in clear text
    # (it waited a fixed 5 s before, whatever --timeout said).
    result = run_cli("name", "--token", TOKEN, "--timeout", "0.5", port=secure_server.port)
    err = assert_one_clear_error_line(result, 2)
    assert "--tls" in err and "within 0.5s" in err, err


def test_tls_cli_against_a_plain_server(server_process: ServerProcess) -> None:
    err = assert_one_clear_error_line(
        run_cli("time", "--tls", "--insecure", port=server_process.port), 2
    )
    assert "TLS handshake failed" in err, err
    assert run_cli("name", port=server_process.port).stdout.strip() == "test-server"
    assert "Traceback" not in "".join(server_process.log)


def test_the_wrong_ca_is_refused(secure_server: ServerProcess, tmp_path: Path) -> None:
    other = make_self_signed(tmp_path, "other-ca")
    err = assert_one_clear_error_line(
        run_cli("name", "--tls", "--cafile", other.cert, "--token", TOKEN, port=secure_server.port),
        2,
    )
    assert "certificate" in err, err


def test_the_server_log_never_shows_a_token(secure_server: ServerProcess, cert: TestCert) -> None:
    run_cli("name", *tls_args(cert, "insecure"), "--token", TOKEN, port=secure_server.port)
    run_cli("name", *tls_args(cert, "insecure"), "--token", "nope-" + TOKEN,
            port=secure_server.port)  # fmt: skip
    secure_server.wait_for_log(r"auth failed")
    secure_server.wait_for_log(r"disconnect .*AUTH_FAILED")
    assert not [line for line in secure_server.log if TOKEN in line], secure_server.log


# --- safe defaults ----------------------------------------------------------------------------


def test_binding_every_address_without_tls_or_tokens_warns(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory("--host", "0.0.0.0")
    no_tls = sp.wait_for_log(r"without TLS")
    no_auth = sp.wait_for_log(r"without --auth-token-file")
    assert "clear text" in no_tls and "anyone who can reach this port" in no_auth
    sp.stop()


def test_the_default_bind_is_loopback_without_warnings(server_process: ServerProcess) -> None:
    assert server_process.host == "127.0.0.1"
    # A SIGTERM straight after the listening line still gets the graceful shutdown.
    assert server_process.stop() == 0
    server_process.wait_for_log(r"shutting down: received SIGTERM")
    assert not [line for line in server_process.log if "without" in line], server_process.log


def test_a_secure_server_on_every_address_does_not_warn(
    server_process_factory: Callable[..., ServerProcess], cert: TestCert, token_file: str
) -> None:
    sp = server_process_factory(
        "--host", "0.0.0.0", "--tls-cert", cert.cert, "--tls-key", cert.key,
        "--auth-token-file", token_file,
    )  # fmt: skip
    # The exposure warnings are logged before the listening line, which the fixture awaited.
    assert not [line for line in sp.log if "without" in line], sp.log


def test_buffer_limits_are_options(server_process_factory: Callable[..., ServerProcess]) -> None:
    bad = run_cli("serve", "--port", "0", "--http", "off", "--write-high-water", "65536",
                  "--write-hard-limit", "1024", timeout=20)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "write_high_water must be positive and below write_hard_limit" in bad.stderr
    sp = server_process_factory("--write-high-water", "65536", "--write-hard-limit", "131072")
    assert run_cli("name", port=sp.port).stdout.strip() == "test-server"


# --- what the server log says about TLS and tokens ---------------------------------------------

_TLS_COUNT = re.compile(r"(\d+) more 'tls failed' line")


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o600])
def test_a_token_file_others_can_read_is_warned_about_at_start(
    server_process_factory: Callable[..., ServerProcess], tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(mode)
    sp = server_process_factory("--auth-token-file", str(path))
    # Logged before the listening line, which the fixture awaited.
    warnings = [line for line in sp.log if "token file" in line]
    if mode & 0o077:
        assert len(warnings) == 1, sp.log
        assert f"mode {mode:04o}" in warnings[0] and "chmod 600" in warnings[0]
        assert "WARN" in warnings[0]
    else:
        assert warnings == [], sp.log


def test_the_listening_line_says_whether_tls_and_tokens_are_on(
    secure_server: ServerProcess, server_process: ServerProcess
) -> None:
    assert "TLS on, auth 1 token(s)" in secure_server.wait_for_log(r"listening on")
    assert "TLS off, auth off" in server_process.wait_for_log(r"listening on")


def test_failed_tls_handshakes_are_logged_and_summarised(
    server_process_factory: Callable[..., ServerProcess], cert: TestCert, tmp_path: Path
) -> None:
    sp = server_process_factory("--tls-cert", cert.cert, "--tls-key", cert.key)
    # A client that does not trust the certificate, then a plain client: one line each ...
    other = make_self_signed(tmp_path, "other-ca")
    run_cli("name", "--tls", "--cafile", other.cert, "--timeout", "3", port=sp.port)
    line = sp.wait_for_log(r"TLS handshake failed from 127\.0\.0\.1:\d+")
    assert "WARN" in line and "Traceback" not in "".join(sp.log)
    run_cli("name", "--timeout", "3", port=sp.port)
    sp.wait_for_log(r"TLS handshake failed from", count=2)
    # ... and a flood of them: a few lines, then a count (the heartbeat tick logs it).
    flood = 30
    for _ in range(flood):
        with socket.create_connection(("127.0.0.1", sp.port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with contextlib.suppress(OSError):
                raw.recv(100)
    # Every failure is either a line or in a count, soon (the heartbeat tick logs counts).
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(queue.Empty):
            sp.log.append(sp.lines.get(timeout=0.1))  # what wait_for_log would collect
        log = list(sp.log)
        shown = [line for line in log if "TLS handshake failed" in line]
        counted = [int(m.group(1)) for line in log if (m := _TLS_COUNT.search(line))]
        if len(shown) + sum(counted) == flood + 2 or time.monotonic() > deadline:
            break
    assert len(shown) + sum(counted) == flood + 2, log
    assert counted and len(shown) < flood / 2
    assert run_cli("name", "--tls", "--insecure", port=sp.port).stdout.strip() == "test-server"
