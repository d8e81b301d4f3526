"""``--trace`` on the server and the client commands: every frame, decoded, on stderr."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from support.servers import ServerProcess, run_cli
from switchboard.client import Client
from switchboard.protocol import HEADER, MAGIC, VERSION, MessageClass

#: Every trace line starts with the server log's timestamp (local time, ms, UTC offset).
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} "


def test_client_command_traces_every_frame_it_sends_and_receives(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory()
    with Client(sp.host, sp.port, nick="alice") as alice:
        result = run_cli("send", str(alice.client_id), "你好 👋", "--wait-receipt", "5",
                         "--trace", port=sp.port)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "delivered" in result.stdout
    lines = result.stderr.splitlines()
    aid = alice.client_id
    expected = [
        r"<<- INDICATION WELCOME +id=0 +len=\d+ +client_id=(\d+) server_name=\"test-server\"",
        rf"->> REQUEST +SEND +id=(\d+) +len=19 +target={aid} text=\"你好 👋\"$",
        rf"<<- RESPONSE +OK\(SEND\) +id=(\d+) +len=14 +message_id=(\d+) target={aid}$",
        r"<<- INDICATION RECEIPT +id=0 +len=13 +message_id=\d+ target=\d+ status=1\(DELIVERED\)$",
    ]
    expected = ["^" + TS + p for p in expected]
    found = [next((m for line in lines if (m := re.search(p, line))), None) for p in expected]
    assert all(found), result.stderr
    assert found[1] and found[2] and found[1].group(1) == found[2].group(1)  # request id echoed
    assert "Traceback" not in result.stderr


def test_trace_hex_dumps_each_frame_and_errors_show_their_code(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory()
    result = run_cli("send", "999", "hi", "--trace", "--trace-hex", port=sp.port)
    assert result.returncode == 1
    stderr = result.stderr
    sent = r"->> REQUEST +SEND +id=\d+ +len=10 +target=999 text=\"hi\"$"
    assert re.search("^" + TS + sent, stderr, re.M)
    # The SEND frame's bytes: magic, version 1, class 1, type 5, then target 999 (0x3e7).
    assert re.search(
        r"^    0000  53 42 01 01 00 05 00 00  00 \w\w 00 00 00 0a 00 00  SB", stderr, re.M
    )
    assert re.search(r"^    0010  03 e7 00 00 00 02 68 69 +\.\.\.\.\.\.hi$", stderr, re.M)
    assert re.search(
        "^" + TS + r"<<- RESPONSE +ERROR +id=\d+ +len=\d+ +code=6\(NO_SUCH_CLIENT\)", stderr, re.M
    )
    assert "switchboard: NO_SUCH_CLIENT" in stderr


def test_server_traces_frames_with_the_client_they_belong_to(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory("--trace")
    result = run_cli("time", "--count", "3", "--token", "not-needed", port=sp.port)
    assert result.returncode == 0, result.stderr
    welcome = sp.wait_for_log(r"->> #\d+ 127\.0\.0\.1:\d+ INDICATION WELCOME")
    assert re.match(TS + "->> ", welcome), welcome
    client = re.search(r"#(\d+) 127\.0\.0\.1:(\d+)", welcome)
    assert client is not None
    peer = re.escape(client.group(0))
    sp.wait_for_log(rf"<<- {peer} REQUEST +HELLO +id=\d+ +len=\d+ +version=2 nick=\"\" "
                    r"token=<10 bytes, not shown>")  # fmt: skip
    for n in (1, 2, 3):  # each of the three requests and its answer
        sp.wait_for_log(rf"<<- {peer} REQUEST +TIME ", count=n)
        sp.wait_for_log(rf"->> {peer} RESPONSE +OK\(TIME\) +id=\d+ +len=\d+ +epoch_ms=", count=n)
    assert not any("not-needed" in line for line in sp.log)


def test_server_hex_dumps_the_bytes_received_even_for_an_invalid_frame(
    server_process_factory: Callable[..., ServerProcess],
) -> None:
    sp = server_process_factory("--trace", "--trace-hex")
    unknown = HEADER.pack(MAGIC, VERSION, MessageClass.REQUEST, 0x99, 7, 2) + b"\xab\xcd"
    with socket.create_connection((sp.host, sp.port), timeout=5) as sock:
        sock.sendall(unknown)
        sp.wait_for_log(r"<<- #\d+ \S+ REQUEST +type=0x0099 +id=7 +INVALID UNKNOWN_TYPE")
        # The very bytes sent, as they arrived: header, then the two payload bytes.
        sp.wait_for_log(r"^    0000  53 42 01 01 00 99 00 00  00 07 00 00 00 02 ab cd  SB")
        sp.wait_for_log(r"->> #\d+ \S+ RESPONSE +ERROR +id=7 .*code=4\(UNKNOWN_TYPE\)")
