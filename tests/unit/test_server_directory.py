"""The directory interface (server/directory.py): the handlers and the server's lifecycle
reach clients and rooms only through ``server.directory``, so that a second implementation
(one shared by several server processes) can take the local one's place unchanged.

The handlers run here against a directory that is not ``LocalDirectory``: a recording one
that forwards to it.  Every request type (the examples of test_server_dispatch) must still get
its answer, and what they needed of the state must have gone through the interface.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.dispatch import REQUESTS, TOKEN, Harness
from switchboard.protocol import (
    HelloOk,
    HelloRequest,
    JoinRequest,
    ListOk,
    ListRequest,
    SendRequest,
)
from switchboard.server import app, directory, handlers
from switchboard.server.directory import Directory, LocalDirectory


class RecordingDirectory:
    """A directory of another kind: it keeps nothing itself, records each call by name and
    passes it on to a LocalDirectory."""

    def __init__(self, inner: LocalDirectory) -> None:
        self.inner = inner
        self.client_by_id = inner.client_by_id
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return recorded


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Harness, RecordingDirectory]]:
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    h = Harness(token_file)
    local = h.server.directory
    assert isinstance(local, LocalDirectory)
    fake = RecordingDirectory(local)
    h.server.directory = fake  # type: ignore[assignment]  # duck-typed: a Directory
    try:
        yield h, fake
    finally:
        h.close()


def _interface_methods() -> set[str]:
    return {
        name
        for name, member in vars(Directory).items()
        if callable(member) and not name.startswith("_")
    }


def test_local_directory_implements_every_method_of_the_interface() -> None:
    # mypy checks the signatures (app.py assigns a LocalDirectory to a Directory); this
    # catches a method added to the interface and forgotten in the implementation.
    missing = {name for name in _interface_methods() if not hasattr(LocalDirectory, name)}
    assert not missing
    assert set(inspect.signature(Directory.deliver_room).parameters) == set(
        inspect.signature(LocalDirectory.deliver_room).parameters
    )


def test_every_request_is_answered_through_another_directory(
    recorded: tuple[Harness, RecordingDirectory],
) -> None:
    harness, fake = recorded
    amy, amy_transport, amy_decoder = harness.connect()
    bob, bob_transport, bob_decoder = harness.connect()
    hello = harness.ask(bob, bob_transport, bob_decoder, HelloRequest(nick="bob", token=TOKEN))
    assert [type(e) for e in hello] == [HelloOk], hello
    for req, answer in REQUESTS:
        if isinstance(req, SendRequest):
            req = SendRequest(bob.client_id, req.text, request_id=req.request_id)
        answers = harness.ask(amy, amy_transport, amy_decoder, req)
        assert answers and isinstance(answers[0], answer), (req, answers)
    texts = [getattr(e, "text", None) for e in harness.read(bob_transport, bob_decoder)]
    assert texts.count("hello bob") == 1 and texts.count("hi bob") == 1, texts
    # LIST of a room: its members, in id order, from the directory.
    harness.ask(bob, bob_transport, bob_decoder, JoinRequest("den", request_id=20))
    harness.ask(amy, amy_transport, amy_decoder, JoinRequest("den", request_id=21))
    listed = harness.ask(amy, amy_transport, amy_decoder, ListRequest("den", request_id=22))
    assert isinstance(listed[0], ListOk), listed
    assert [c.client_id for c in listed[0].clients] == [amy.client_id, bob.client_id]
    amy.abort("test over")
    amy.connection_lost(None)  # what a transport reports after its abort
    harness.settle()
    # Admission, authentication, nicknames, rooms, the rooms page, LIST, SEND_NICK's
    # delivery and the release all asked the directory.
    expected = {
        "register",
        "rename",
        "by_nick",
        "deliver",
        "listed",
        "update",
        "members",
        "join",
        "member_room",
        "deliver_room",
        "record",
        "leave",
        "rooms_page",
        "room_count",
        "release",
    }
    assert expected <= set(fake.calls), expected - set(fake.calls)
    assert set(fake.calls) <= _interface_methods()


@pytest.mark.parametrize("module", [handlers, app], ids=lambda m: m.__name__)
def test_handlers_and_app_know_no_registry_but_the_directory(module: Any) -> None:
    """Neither names the local tables: ClientRegistry and RoomRegistry are the local
    directory's business (server/directory.py)."""
    tree = ast.parse(inspect.getsource(module))
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert not {"ClientRegistry", "RoomRegistry"} & (named | imported)
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not {"client_registry", "room_registry", "by_name"} & attributes
    assert directory.__name__ == "switchboard.server.directory"
