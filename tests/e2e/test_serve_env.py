"""``switchboard serve`` reads $SWITCHBOARD_HOST/$SWITCHBOARD_PORT as the clients do:
command line > environment > --config file > built-in default."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.network import free_port
from support.servers import ServerProcess, cli_env, run_cli, spawn_logged, switchboard_command


@pytest.fixture
def serve() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for sp in started:
        sp.stop()


def test_serve_and_clients_meet_on_the_environment_port(serve: list[ServerProcess]) -> None:
    port = free_port()
    env = cli_env(SWITCHBOARD_HOST="127.0.0.1", SWITCHBOARD_PORT=str(port))
    sp = spawn_logged(
        switchboard_command("serve", "--name", "env-server", "--http", "off"), env=env
    )
    serve.append(sp)
    assert sp.port == port
    # The same shell's client finds it with no flag at all.
    done = run_cli("name", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "env-server"


def test_command_line_beats_environment_beats_config(
    serve: list[ServerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'port = {free_port()}\nname = "from-file"\n', encoding="utf-8")
    env_port = free_port()
    env = cli_env(SWITCHBOARD_PORT=str(env_port))
    # The environment wins over the file...
    sp = spawn_logged(
        switchboard_command("serve", "--config", str(config), "--http", "off"), env=env
    )
    serve.append(sp)
    assert sp.port == env_port
    sp.wait_for_log("as 'from-file'")  # ...which still gives everything else
    assert sp.stop(signal.SIGTERM) == 0
    # ...and the command line wins over both.
    sp = spawn_logged(
        switchboard_command("serve", "--config", str(config), "--port", "0", "--http", "off"),
        env=env,
    )
    serve.append(sp)
    assert sp.port not in (0, env_port)


@pytest.mark.parametrize("value", ["seven", "70000", "-1"])
def test_a_bad_environment_port_is_one_line_and_exit_2(value: str) -> None:
    done = run_cli("serve", "--http", "off", env=cli_env(SWITCHBOARD_PORT=value), timeout=10)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"switchboard serve: SWITCHBOARD_PORT={value!r} is not a port number"
        + ("" if value == "seven" else " (0-65535)")
    ]


def test_the_example_config_file_starts_a_server(serve: list[ServerProcess]) -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "switchboard.example.toml"
    # Its port is the standard one: the command line moves it to a free one.
    sp = spawn_logged(
        switchboard_command("serve", "--config", str(example), "--port", "0", "--http", "off"),
        env=cli_env(),
    )
    serve.append(sp)
    line = sp.wait_for_log("listening on")
    assert "127.0.0.1" in line and "1024 clients" in line and "heartbeat 10s" in line
    done = run_cli("time", port=sp.port)
    assert done.returncode == 0, done.stderr
    assert sp.stop(signal.SIGTERM) == 0
