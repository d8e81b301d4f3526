"""``switchboard lab burst``, ``byteorder`` and ``capture`` run as the real CLI, their
observations checked against what the kernel and the wire must show, and nothing left behind
(no socket on their ports in /proc/net/tcp, no server or dumpcap process).

The captures need tshark and dumpcap (``make test`` as root installs them); without them the
capture-dependent checks are skipped with the reason, and the missing tool is tested with a
PATH that has none.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.commands import assert_one_clear_error_line
from support.lab import Ends, left_on, tcp_table
from support.servers import cli_env, run_cli, switchboard_command
from support.waiting import wait_until
from switchboard.lab.byteorder import swap16

CAPTURE_TOOLS = shutil.which("tshark") is not None and shutil.which("dumpcap") is not None
needs_capture = pytest.mark.skipif(
    not CAPTURE_TOOLS, reason="tshark/dumpcap not installed (Debian: tshark; make test installs it)"
)
LITTLE = sys.byteorder == "little"


def lab_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("lab", *args, "--json", timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["experiment"] == args[0]
    assert "•" in result.stderr  # the steps, on stderr with --json
    return doc["observations"]


def lab_json_leaving(*args: str) -> tuple[dict[str, Any], Ends]:
    """``lab_json(ARGS)``, and the TCP table from before it ran (for ``assert_nothing_left``)."""
    before = tcp_table()
    return lab_json(*args), before


def assert_nothing_left(server: dict[str, int], *ports: int, before: Ends) -> None:
    """No socket of the run on the experiment's ports (what was there ``before`` aside: other
    programs' old TIME_WAITs may carry the same numbers), its server gone, no dumpcap."""
    left = left_on([server["port"], *ports], before)
    assert left == [], left
    assert not Path(f"/proc/{server['pid']}").exists() or _is_not_a_server(server["pid"])
    assert not dumpcap_on(server["port"])


def _is_not_a_server(pid: int) -> bool:
    try:  # the pid was reused by something else since
        return b"serve" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


# --- burst -------------------------------------------------------------------------------------


@needs_capture
def test_burst_counts_segments_reads_and_answers() -> None:
    seen, before = lab_json_leaving("burst")
    assert seen["requests"] == 100
    assert seen["send_calls"] == {"nagle_on": 100, "nagle_off": 100, "one_buffer": 1}
    # Every run gets all 100 answers, each matched to its request by id.
    assert seen["answers"] == {"nagle_on": 100, "nagle_off": 100, "one_buffer": 100}
    assert all(seen["answers_matched"].values())
    segments = seen["segments"]
    # One buffer of 1,400 bytes is fewer segments than requests (on loopback: exactly one).
    assert 1 <= segments["one_buffer"] < 100
    assert all(1 <= n <= 100 for n in segments.values())
    # The server reads at least once per run, and at most once per segment that arrived
    # (plus one: a read() the event loop may make on a wake-up that finds nothing).
    for mode, reads in seen["server_reads"].items():
        assert 1 <= reads <= segments[mode] + 1, (mode, reads, segments)
    # The capture, decoded with the dissector, agrees with the kernel's count, and shows
    # the one buffer as one segment holding all 100 frames.
    assert seen["captured_segments"] == segments
    assert seen["max_frames_per_segment"]["one_buffer"] == 100
    assert seen["max_frames_per_segment"]["nagle_on"] > 1  # several frames in one segment
    # ... as Wireshark's packet list shows it (the column may be cut at 2,048 characters).
    info = seen["fullest_segment_info"].split(" | ")
    assert len(info) > 1 and all(part.startswith("Request TIME id=") for part in info[:-1])
    assert_nothing_left(seen["server"], before=before)


def test_burst_without_tshark_counts_from_the_kernel_alone(tmp_path: Path) -> None:
    env = cli_env(PATH=str(tmp_path))  # no dumpcap, no tshark on this PATH
    before = tcp_table()
    result = run_cli("lab", "burst", "--json", "--requests", "20", timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)["observations"]
    assert "no packet capture" in result.stderr and "Debian package tshark" in result.stderr
    assert "captured_segments" not in seen
    assert seen["answers"] == {"nagle_on": 20, "nagle_off": 20, "one_buffer": 20}
    assert seen["segments"]["one_buffer"] < 20
    assert_nothing_left(seen["server"], before=before)


def test_burst_with_pcap_but_no_tshark_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = cli_env(PATH=str(tmp_path))
    result = run_cli("lab", "burst", "--pcap", str(tmp_path / "x.pcapng"), env=env)
    line = assert_one_clear_error_line(result, 2)
    assert "dumpcap" in line and "tshark" in line


def test_burst_refuses_a_request_count_out_of_range() -> None:
    assert_one_clear_error_line(run_cli("lab", "burst", "--requests", "0"), 2)


# --- byteorder ---------------------------------------------------------------------------------


def free_swapped_pair() -> int:
    """A free port whose byte-swapped twin is free too (both above 1023)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            twin = swap16(port)
            if twin < 1024 or twin == port:
                continue
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", twin))
                except OSError:
                    continue
        return port
    pytest.skip("no free port pair found")


def test_swap16_is_what_a_little_endian_u16_reads_as_on_the_wire() -> None:
    assert swap16(7000) == 22555
    assert swap16(22555) == 7000
    assert swap16(0x0102) == 0x0201


def test_byteorder_a_port_without_htons_connects_to_its_swapped_twin() -> None:
    port = free_swapped_pair()
    seen, before = lab_json_leaving("byteorder", "--port", str(port))
    twin = swap16(port)
    assert seen["byteorder"] == sys.byteorder
    assert (seen["port_meant"], seen["port_swapped"]) == (port, twin)
    right, wrong = seen["connect"]["htons"], seen["connect"]["forgot_htons"]
    assert right["port_bytes"] == f"{port >> 8:02x} {port & 0xFF:02x}"
    assert right["connected_to"] == right["accepted_by"] == port
    expected = twin if LITTLE else port  # htons changes nothing on a big-endian CPU
    assert wrong["connected_to"] == wrong["accepted_by"] == expected
    # The protocol field: request id 1 written in host order is read as 1 << 24.
    field = seen["request_id_field"]
    assert field["answered_id"] == (1 << 24 if LITTLE else 1)
    whole = seen["whole_header"]
    if LITTLE:
        assert whole["magic_bytes"] == "42 53"  # "BS"
        assert whole["error"] == "BAD_FRAME" and whole["closed"] is True
    if CAPTURE_TOOLS:  # the SYNs on the wire went to the meant port, then to its twin
        assert seen["syn_destination_ports"] == [port, expected]
    assert_nothing_left(seen["server"], port, twin, before=before)


def test_byteorder_refuses_a_port_in_use() -> None:
    port = free_swapped_pair()  # one the experiment would take, were it free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        line = assert_one_clear_error_line(run_cli("lab", "byteorder", "--port", str(port)), 2)
    assert str(port) in line and "in use" in line


# --- capture -----------------------------------------------------------------------------------


def frames_of(operation: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(f["from"], f["to"], f["message"], f["request_id"]) for f in operation["frames"]]


@needs_capture
def test_capture_decodes_the_seven_operations(tmp_path: Path) -> None:
    pcap = tmp_path / "menu.pcapng"
    seen, before = lab_json_leaving("capture", "--pcap", str(pcap))
    operations = seen["operations"]
    names = [op["operation"] for op in operations]
    assert names == ["connect", "time", "name", "list", "send", "receive", "disconnect"]
    ops = dict(zip(names, operations, strict=True))
    connect = ops["connect"]
    assert connect["flags"][:3] == ["SYN", "SYN, ACK", "ACK"]
    welcomes = [f for f in frames_of(connect) if f[2] == "Indication WELCOME"]
    assert [w[1] for w in welcomes] == ["client A", "client B"]
    for name, answer in (("time", "TIME"), ("name", "NAME"), ("list", "LIST")):
        frames = frames_of(ops[name])
        assert len(frames) == 2, frames
        (src, dst, request, rid), (rsrc, rdst, response, rrid) = frames
        assert (src, dst, request) == ("client A", "server", f"Request {answer}")
        assert (rsrc, rdst, response) == ("server", "client A", f"Response OK ({answer})")
        assert rid == rrid and rid > 0  # the answer carries the request's id
    listing = ops["list"]["frames"][1]["fields"]
    assert "Client count: 2" in listing
    send = [(f, t, m) for f, t, m, _ in frames_of(ops["send"])]
    assert send == [
        ("client A", "server", "Request SEND"),
        ("server", "client A", "Response OK (SEND)"),
        ("server", "client B", "Indication MESSAGE"),
        ("client B", "server", "Indication ACKS"),  # the library: protocol version 2
        ("server", "client A", "Indication RECEIPT"),
    ]
    message = ops["send"]["frames"][2]["fields"]
    assert "Text: hello" in message
    received = [(f, t, m) for f, t, m, _ in frames_of(ops["receive"])]
    assert ("server", "client A", "Indication MESSAGE") in received
    assert "Text: olleh" in next(
        f["fields"] for f in ops["receive"]["frames"] if f["to"] == "client A"
    )
    assert ops["disconnect"]["frames"] == []
    assert ops["disconnect"]["flags"].count("FIN, ACK") == 2
    # The file is kept, and Wireshark's own reading of it has the same frames.
    from switchboard.lab.capture import read_segments

    decoded = [f.title for s in read_segments(pcap) for f in s.frames]
    assert decoded.count("Indication WELCOME") == 2 and "Indication RECEIPT" in decoded
    assert_nothing_left(seen["server"], before=before)


def test_capture_without_dumpcap_is_one_line_naming_the_package(tmp_path: Path) -> None:
    env = cli_env(PATH=str(tmp_path))
    line = assert_one_clear_error_line(run_cli("lab", "capture", env=env), 2)
    assert "dumpcap" in line and "Debian package tshark" in line


# --- Ctrl-C --------------------------------------------------------------------------------------


def dumpcap_on(port: int) -> bool:
    """Whether a dumpcap process is capturing ``port``."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # not a process, or it ended meanwhile
        if "dumpcap" in cmdline and f"tcp port {port}" in cmdline:
            return True
    return False


@needs_capture
def test_ctrl_c_while_the_capture_starts_leaves_no_dumpcap_and_no_server() -> None:
    before = tcp_table()
    proc = subprocess.Popen(
        switchboard_command("lab", "burst", "--json"),  # --json: the steps on stderr
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stderr is not None
        step = proc.stderr.readline()
        assert "started switchboard serve" in step, step
        port = int(step.split(":")[1].split()[0])
        pid = int(step.split("(pid ")[1].split(")")[0])
        # dumpcap is up and the experiment waits for its probe: Ctrl-C lands there (if the
        # wait is over first, it lands in the runs, which must clean up just the same).
        assert wait_until(lambda: dumpcap_on(port), 10)
        proc.send_signal(signal.SIGINT)  # to the experiment alone, as kill -INT does
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert_nothing_left({"port": port, "pid": pid}, before=before)


@needs_capture
def test_a_killed_experiment_takes_its_server_and_dumpcap_with_it() -> None:
    before = tcp_table()
    proc = subprocess.Popen(
        switchboard_command("lab", "burst", "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert proc.stderr is not None
        step = proc.stderr.readline()
        port = int(step.split(":")[1].split()[0])
        pid = int(step.split("(pid ")[1].split(")")[0])
        assert wait_until(lambda: dumpcap_on(port), 10)
    finally:
        proc.kill()  # SIGKILL: none of the experiment's own cleanup runs
        proc.wait(5)
    # The children were told when their parent died (PR_SET_PDEATHSIG).
    assert wait_until(lambda: not dumpcap_on(port) and _is_not_a_server(pid), 10)
    assert wait_until(lambda: not left_on([port], before), 10), left_on([port], before)
