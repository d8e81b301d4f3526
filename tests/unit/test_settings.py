"""Each server setting is declared once (``ServerConfig``'s fields, server/config.py); the
``switchboard serve`` options, the TOML keys and the checks are built from that declaration,
so every setting can be given each way and is checked the same way."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any

import pytest

from switchboard.cli.main import build_parser, main
from switchboard.cli.serve import given_settings
from switchboard.server.config import SETTINGS, ConfigError, ServerConfig, Setting


def other_value(setting: Setting) -> Any:
    """A valid value that is not the default."""
    if setting.kind is bool:
        return not setting.default
    if setting.choices:
        return next(c for c in setting.choices if c != setting.default)
    if setting.kind is str:
        return {
            "host": "::1",
            "http": "[::1]:8081",
            "http_allow_origin": "https://chat.example.org",
            "http_trusted_proxy": "10.0.0.0/8",
            "cluster": "redis://127.0.0.1:6379/1",
        }.get(setting.name, f"{setting.name}.value")
    if setting.default is None:
        return 3
    value = setting.default * 2 if setting.default else 1
    if setting.maximum is not None and value > setting.maximum:  # --cluster-lease: 10 of 15
        value = setting.maximum
    return setting.kind(value)


def command_line(values: dict[str, Any]) -> list[str]:
    argv = ["serve"]
    for setting in SETTINGS:
        value = values[setting.name]
        if setting.kind is bool:
            argv += [setting.flags[-1]] if value else []
        else:
            argv += [setting.flags[-1], str(value)]
    return argv


@pytest.fixture(autouse=True)
def no_endpoint_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_HOST", raising=False)
    monkeypatch.delenv("SWITCHBOARD_PORT", raising=False)
    monkeypatch.delenv("SWITCHBOARD_CLUSTER", raising=False)


def test_every_setting_is_an_option_of_serve() -> None:
    values = {s.name: other_value(s) for s in SETTINGS}
    args = build_parser().parse_args(command_line(values))
    config = ServerConfig.load(None, **given_settings(args))
    for setting in SETTINGS:
        assert getattr(config, setting.name) == values[setting.name], setting.flags


def test_short_options() -> None:
    args = build_parser().parse_args(["serve", "-H", "::1", "-p", "0"])
    assert (args.host, args.port) == ("::1", 0)


@pytest.mark.parametrize("style", ["max-clients", "max_clients"])
def test_every_setting_is_a_toml_key(tmp_path: Path, style: str) -> None:
    values = {s.name: other_value(s) for s in SETTINGS}
    lines = ["[server]"]
    for setting in SETTINGS:
        key = setting.key if style == "max-clients" else setting.name
        value = values[setting.name]
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{key} = {shown.replace(chr(39), chr(34))}")
    path = tmp_path / "server.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = ServerConfig.load(path)
    for setting in SETTINGS:
        assert getattr(config, setting.name) == values[setting.name], setting.key


def test_serve_help_lists_every_setting_with_its_default() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    for setting in SETTINGS:
        assert ", ".join(setting.flags) in text or setting.flags[-1] in text, setting.name
        assert " ".join(setting.help_text().split()) in text, setting.name
    assert "(default 1024)" in text and "(0.1-86400, default 10)" in text
    assert "(default $SWITCHBOARD_PORT or 7000)" not in text  # the range comes first
    assert "(0-65535, default $SWITCHBOARD_PORT or 7000)" in text


def test_the_dataclass_fields_are_the_settings() -> None:
    assert [s.name for s in SETTINGS] == list(ServerConfig.__dataclass_fields__)
    assert len({s.key for s in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"port": 70000}, "port must be 0-65535, not 70000"),
        ({"max_clients": 0}, "max_clients must be at least 1, not 0"),
        ({"history": -1}, "history must be 0 or more, not -1"),
        ({"heartbeat": 0.01}, "heartbeat must be 0.1-86400 seconds, not 0.01"),
        ({"heartbeat": math.nan}, "heartbeat must be 0.1-86400 seconds, not nan"),
        ({"max_frame": 10}, "max_frame must be 78-4294967295 bytes, not 10"),
        ({"rate": -1.0}, "rate must be 0 (off) or more, not -1"),
        ({"frame_timeout": 0.0}, "frame_timeout must be positive, not 0"),
        # Before: accepted, and a shutdown that waited no time, or a timer that overflows.
        ({"shutdown_grace": -1.0}, "shutdown_grace must be 0-3600 seconds, not -1"),
        (
            {"handshake_timeout": math.inf},
            "handshake_timeout must be a finite number of seconds, not inf",
        ),
        ({"name": ""}, "name must be 1-255 bytes of UTF-8, not 0"),
        ({"name": "é" * 128}, "name must be 1-255 bytes of UTF-8, not 256"),
        ({"log_format": "xml"}, "log_format must be 'text' or 'json', not 'xml'"),
        (
            {"log_level": "loud"},
            "log_level must be 'debug', 'info', 'warning', 'error' or 'critical', not 'loud'",
        ),
        ({"log_repeat_burst": 0}, "log_repeat_burst must be 1-1000000, not 0"),
        (
            {"write_high_water": 2048, "write_hard_limit": 1024},
            "write_high_water must be positive and below write_hard_limit",
        ),
        ({"tls_cert": "a.pem"}, "tls_cert and tls_key go together"),
    ],
)
def test_a_bad_value_is_one_message_naming_the_setting(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServerConfig(**bad)
    assert str(caught.value) == message


def test_choices_are_read_without_case() -> None:
    config = ServerConfig(log_level="WARNING", log_format="JSON")
    assert (config.log_level, config.log_format) == ("warning", "json")
    args = build_parser().parse_args(["serve", "--log-level", "DEBUG"])
    assert ServerConfig.load(None, **given_settings(args)).log_level == "debug"


def test_the_environment_sits_between_the_command_line_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "server.toml"
    path.write_text('host = "10.0.0.1"\nport = 1\nname = "file"\n', encoding="utf-8")
    monkeypatch.setenv("SWITCHBOARD_HOST", "::1")
    monkeypatch.setenv("SWITCHBOARD_PORT", "2")
    parse = build_parser().parse_args
    config = ServerConfig.load(path, **given_settings(parse(["serve"])))
    assert (config.host, config.port, config.name) == ("::1", 2, "file")
    config = ServerConfig.load(path, **given_settings(parse(["serve", "-p", "3", "-H", "::"])))
    assert (config.host, config.port) == ("::", 3)
