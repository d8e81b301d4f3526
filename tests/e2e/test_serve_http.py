"""``switchboard serve --http``: the address printed at start, the page and /ws served from
it, and a bad or taken --http address refused in one line."""

from __future__ import annotations

import re
import socket
import urllib.request

from support.network import free_port
from support.servers import run_cli, start_server_process

HOST = "127.0.0.1"


def test_serve_prints_the_page_url_and_serves_it() -> None:
    sp = start_server_process("--http", f"{HOST}:0")
    try:
        line = sp.wait_for_log(r"web page on http://")
        match = re.search(
            r"web page on (http://127\.0\.0\.1:(\d+)/) \(WebSocket (ws://\S+/ws)", line
        )
        assert match is not None, line
        url = match.group(1)
        assert match.group(3) == f"ws://{HOST}:{match.group(2)}/ws"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert "<html" in response.read().decode("utf-8").lower()
        with urllib.request.urlopen(url + "healthz", timeout=10) as response:
            assert response.read() == b"ok\n"
    finally:
        assert sp.stop() == 0
    assert not [line for line in sp.log if "Traceback" in line], sp.log


def test_http_off_listens_on_no_web_port() -> None:
    sp = start_server_process("--http", "off")
    try:
        sp.wait_for_log("listening on")
        assert not [line for line in sp.log if "web page on" in line]
    finally:
        sp.stop()


def test_a_bad_http_address_is_one_line_and_exit_2() -> None:
    done = run_cli("serve", "--port", "0", "--http", "localhost", timeout=20)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "switchboard serve: http must be HOST:PORT ([::1]:8080 for IPv6) or 'off', not 'localhost'"
    ]


def test_a_taken_http_port_is_named_and_exit_1() -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind((HOST, port))
        taken.listen()
        done = run_cli("serve", "--port", "0", "--http", f"{HOST}:{port}", timeout=20)
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert err[-1].startswith(f"switchboard serve: cannot listen on {HOST}:{port} (--http)"), err


def test_a_web_listener_on_every_address_without_tls_warns_and_loopback_does_not() -> None:
    exposed = start_server_process("--http", "0.0.0.0:0")
    try:
        line = exposed.wait_for_log(r"web page and /ws on '0.0.0.0' without TLS")
        assert "clear text" in line and "--tls-cert" in line
    finally:
        exposed.stop()
    local = start_server_process("--http", f"{HOST}:0")
    try:
        local.wait_for_log("web page on")
        assert local.stop() == 0
        assert not [line for line in local.log if "without" in line], local.log
    finally:
        local.stop()
