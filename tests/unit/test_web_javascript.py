"""The web page's JavaScript under Node's built-in test runner (``node --test``), so that
`make test` runs it: tests/js/protocol.test.mjs holds the JavaScript codec to the golden
vectors of docs/PROTOCOL.md as the Python codec decodes them (tests/support/golden.py writes
them to a JSON file) and to the Python message tables, byte for byte; tests/js/session.test.mjs
drives the page's session (answers, PONG and ACK, reconnecting) against a scripted socket.
Then hypothesis: random messages and streams encoded by Python are decoded and re-encoded by
the JavaScript codec (tests/js/roundtrip.mjs) byte for byte, and random bytes are decoded,
skipped or refused alike by both.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.golden import javascript_golden
from support.protocol_strategies import any_message, frame_streams, payload_fields
from switchboard.protocol import Frame, FrameDecoder, InvalidFrame, ProtocolError, encode, wire
from switchboard.protocol.messages import IdListKind, RecordListKind

JS_TESTS = Path(__file__).resolve().parents[1] / "js"
TEST_FILES = sorted(JS_TESTS.glob("*.test.mjs"))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_node_tests_pass(test_file: Path, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install the Debian package nodejs")
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(javascript_golden()), encoding="utf-8")
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(test_file)],
        env={"GOLDEN_JSON": str(golden), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", result.stdout, re.MULTILINE)
    assert passed is not None and failed is not None, report
    assert int(passed.group(1)) >= 10 and int(failed.group(1)) == 0, report


# --- round trips between the two codecs ----------------------------------------------------


class NodeCodec:
    """tests/js/roundtrip.mjs in a Node process: bytes in, what the JavaScript codec made of
    them out (one line each way)."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(JS_TESTS / "roundtrip.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )

    def decode(self, data: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(data.hex() + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"node exited ({self.proc.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def node_codec() -> Iterator[NodeCodec]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: install the Debian package nodejs")
    codec = NodeCodec(node)
    yield codec
    codec.close()


def assert_same_fields(python: Any, javascript: dict[str, Any], where: str) -> None:
    """The JavaScript codec's fields (64-bit integers as strings) equal the Python ones;
    addresses equal as addresses (only their bytes are specified: PROTOCOL.md, addr)."""
    for name, kind in payload_fields(type(python)):
        ours, theirs = getattr(python, name), javascript[name]
        at = f"{where}.{name}"
        if isinstance(kind, RecordListKind):
            assert len(ours) == len(theirs), at
            for i, (record, other) in enumerate(zip(ours, theirs, strict=True)):
                assert_same_fields(record, other, f"{at}[{i}]")
        elif kind is wire.ADDR:
            assert (ipaddress.ip_address(ours) if ours else "") == (
                ipaddress.ip_address(theirs) if theirs else ""
            ), at
        elif kind in (wire.U64, wire.I64):
            assert str(ours) == theirs, at
        elif isinstance(kind, IdListKind):  # ACKS, RECEIPTS: u64 ids, as strings
            assert [str(i) for i in ours] == theirs, at
        else:
            assert ours == theirs, at


def check_round_trip(node_codec: NodeCodec, messages: list[Frame]) -> None:
    stream = b"".join(encode(m) for m in messages)
    answer = node_codec.decode(stream)
    assert answer["error"] is None, answer["error"]
    assert answer["buffered"] == 0
    assert len(answer["frames"]) == len(messages)
    for msg, frame in zip(messages, answer["frames"], strict=True):
        assert "message" in frame, frame
        assert frame["message"]["kind"] == type(msg).__name__
        assert frame["message"]["request_id"] == msg.request_id
        assert_same_fields(msg, frame["message"], type(msg).__name__)
        assert bytes.fromhex(frame["hex"]) == encode(msg)  # re-encoded byte for byte


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=frame_streams(max_frames=12))
def test_streams_of_frames_decode_and_encode_alike_in_both_codecs(
    node_codec: NodeCodec, streams: tuple[list[Frame], bytes]
) -> None:
    messages, _ = streams
    check_round_trip(node_codec, messages)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=any_message())
def test_any_message_with_the_longest_fields_decodes_and_encodes_alike(
    node_codec: NodeCodec, msg: Frame
) -> None:
    check_round_trip(node_codec, [msg])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_any_bytes_give_both_codecs_the_same_frames_or_the_same_error(
    node_codec: NodeCodec, data: bytes
) -> None:
    """The fuzz invariant, across implementations: garbage is decoded, skipped or refused
    alike (the same frames, the same InvalidFrame codes, the same fatal code)."""
    decoder = FrameDecoder(max_frame=16 * 1024 * 1024)
    decoder.feed(data)
    events: list[Any] = []
    error: ProtocolError | None = None
    try:
        events.extend(decoder)
    except ProtocolError as exc:
        error = exc
    answer = node_codec.decode(data)
    assert (answer["error"] or {}).get("code") == (None if error is None else int(error.code))
    assert len(answer["frames"]) == len(events)
    for event, frame in zip(events, answer["frames"], strict=True):
        if isinstance(event, InvalidFrame):
            assert frame.get("code") == int(event.error.code), (event, frame)
        else:
            assert_same_fields(event, frame["message"], type(event).__name__)
