"""Every request type through a ClientConnection driven by a fake transport: no sockets.

The connection only moves bytes; whatever answers a request (the split loop's inline
branches or a handler) must answer it the same whichever transport carries the bytes.  Each
request type is checked in both states of a token server's connection: before HELLO (every
request but HELLO is refused with AUTH_REQUIRED, and the connection closes) and after it
(each gets its own OK).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.dispatch import REQUESTS, TOKEN, Harness
from switchboard.protocol import (
    ALL_MESSAGES,
    ErrorCode,
    ErrorResponse,
    Frame,
    HelloOk,
    HelloRequest,
    MessageClass,
    SendRequest,
    TimeOk,
    TimeRequest,
    encode,
)
from switchboard.protocol.fastpath import header_word
from switchboard.server.handlers import auth_required, tables
from switchboard.server.states import TRANSITIONS, ConnectionState


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    h = Harness(token_file)
    try:
        yield h
    finally:
        h.close()


def test_the_examples_cover_every_request_type() -> None:
    requests = {cls for cls in ALL_MESSAGES if cls.MESSAGE_CLASS == MessageClass.REQUEST}
    assert {type(req) for req, _ in REQUESTS} == requests


@pytest.mark.parametrize(
    "req", [req for req, _ in REQUESTS[1:]], ids=lambda req: type(req).__name__
)
def test_before_hello_every_request_but_hello_is_refused(harness: Harness, req: Frame) -> None:
    conn, transport, decoder = harness.connect()
    answers = harness.ask(conn, transport, decoder, req)
    assert len(answers) == 1, answers
    error = answers[0]
    assert isinstance(error, ErrorResponse), error
    assert (error.code, error.request_id) == (ErrorCode.AUTH_REQUIRED, req.request_id)
    assert transport.closed, "AUTH_REQUIRED closes the connection"
    # Nothing after the refusal is answered: the rest of a batch is not read.
    conn.data_received(encode(TimeRequest(request_id=99)))
    harness.settle()
    assert harness.read(transport, decoder) == []


def test_after_hello_every_request_gets_its_answer(harness: Harness) -> None:
    amy, amy_transport, amy_decoder = harness.connect()
    bob, bob_transport, bob_decoder = harness.connect()
    hello = harness.ask(bob, bob_transport, bob_decoder, HelloRequest(nick="bob", token=TOKEN))
    assert [type(e) for e in hello] == [HelloOk], hello
    for req, answer in REQUESTS:
        if isinstance(req, SendRequest):
            req = SendRequest(bob.client_id, req.text, request_id=req.request_id)
        answers = harness.ask(amy, amy_transport, amy_decoder, req)
        assert answers, f"{type(req).__name__} was not answered"
        first = answers[0]
        assert isinstance(first, answer), (req, answers)
        assert first.request_id == req.request_id
    assert not amy_transport.closed
    # The two direct messages reached bob (SEND by id, SEND_NICK by nickname).
    texts = [getattr(e, "text", None) for e in harness.read(bob_transport, bob_decoder)]
    assert texts.count("hello bob") == 1 and texts.count("hi bob") == 1, texts


def test_a_wrong_token_is_refused_and_closes(harness: Harness) -> None:
    conn, transport, decoder = harness.connect()
    answers = harness.ask(conn, transport, decoder, HelloRequest(token="wrong", request_id=5))
    assert len(answers) == 1 and isinstance(answers[0], ErrorResponse), answers
    assert (answers[0].code, answers[0].request_id) == (ErrorCode.AUTH_FAILED, 5)
    assert transport.closed


# --- the connection's states (server/states.py) ----------------------------------------------


def test_the_state_table_in_protocol_md_is_the_servers() -> None:
    text = (Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    section = text.split("### States\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    documented = {}
    for row in rows[1:]:  # the header row first
        state, _, moves = (cell.strip() for cell in row.strip("|").split(" | "))
        documented[state] = moves
    expected = {
        state.name: "; ".join(f"{to.name} ({on})" for to, on in TRANSITIONS[state].items()) or "-"
        for state in ConnectionState
    }
    assert documented == expected


def test_a_connection_moves_through_its_states_by_the_table(harness: Harness) -> None:
    conn, transport, decoder = harness.connect()
    assert conn.state is ConnectionState.HANDSHAKE
    conn.hold()  # as a held HELLO does: nothing more is read
    assert conn.state is ConnectionState.HELD and not transport.reading
    conn.data_received(encode(TimeRequest(request_id=1)))
    assert harness.read(transport, decoder) == []
    assert conn.end_hold() and conn.state is ConnectionState.HANDSHAKE
    conn.authenticate()
    assert conn.state is ConnectionState.READY and conn.authenticated
    conn.close("test")
    assert conn.state is ConnectionState.CLOSING and transport.closed
    conn.connection_lost(None)
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(RuntimeError, match="no transition from CLOSED to READY"):
        conn.authenticate()


def test_a_held_connection_that_closed_meanwhile_is_not_answered(harness: Harness) -> None:
    conn, transport, decoder = harness.connect()
    conn.hold()
    conn.fail(ErrorCode.IDLE_TIMEOUT, "no HELLO in time")  # closes a held connection too
    assert conn.state is ConnectionState.CLOSING
    assert not conn.end_hold(), "the hold's end finds it closed: nothing more to answer"
    answers = harness.read(transport, decoder)
    assert [type(e).__name__ for e in answers] == ["ErrorResponse"], answers


# --- the handler tables (handlers.tables) -----------------------------------------------------


def _word(request_class: type[Frame]) -> int:
    return header_word((MessageClass.REQUEST << 16) | request_class.MESSAGE_TYPE)


def test_each_state_has_one_table_holding_every_request_type() -> None:
    by_state = tables()
    requests = [cls for cls in ALL_MESSAGES if cls.MESSAGE_CLASS == MessageClass.REQUEST]
    ready, handshake = by_state[ConnectionState.READY], by_state[ConnectionState.HANDSHAKE]
    for cls in requests:
        assert _word(cls) in ready, cls.__name__
        assert ready[_word(cls)] is not auth_required, cls.__name__
        expected = ready[_word(cls)] if cls is HelloRequest else auth_required
        assert handshake[_word(cls)] is expected, cls.__name__


def test_an_unknown_request_type_before_hello_is_auth_required(harness: Harness) -> None:
    conn, transport, decoder = harness.connect()
    conn.data_received(struct.pack("!HBBHII", 0x5342, 1, MessageClass.REQUEST, 0x3F, 7, 0))
    harness.settle()
    answers = harness.read(transport, decoder)
    assert len(answers) == 1 and isinstance(answers[0], ErrorResponse), answers
    assert (answers[0].code, answers[0].request_id) == (ErrorCode.AUTH_REQUIRED, 7)
    assert transport.closed


def test_the_table_swaps_when_hello_makes_the_connection_ready(harness: Harness) -> None:
    conn, transport, decoder = harness.connect()
    assert conn.table is harness.server.tables[ConnectionState.HANDSHAKE]
    # HELLO and a TIME in one batch: the TIME is read with the READY table, after the swap.
    hello, time_ = HelloRequest(token=TOKEN, request_id=1), TimeRequest(request_id=2)
    conn.data_received(encode(hello) + encode(time_))
    harness.settle()
    answers = harness.read(transport, decoder)
    assert [type(e) for e in answers] == [HelloOk, TimeOk], answers
    assert conn.table is harness.server.tables[ConnectionState.READY]
