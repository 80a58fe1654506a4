"""The one settings layer (clip_grpc.settings) as both services use it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from clip_grpc.config import ServerConfig, parse_args
from clip_grpc.settings import SettingError, flag_name
from rest_bridge.config import BridgeConfig, parse_config
from tests.model_factory import REPO

SERVICES = [
    pytest.param(ServerConfig, parse_args, "CLIP_GRPC_", id="server"),
    pytest.param(BridgeConfig, parse_config, "REST_BRIDGE_", id="bridge"),
]


@pytest.mark.parametrize(("config_class", "parse", "prefix"), SERVICES)
def test_flag_beats_env_beats_default(config_class, parse, prefix):
    env = {prefix + "PORT": "7001", prefix + "LOG_LEVEL": "debug"}
    assert parse([], {}) == config_class()
    from_env = parse([], env)
    assert (from_env.port, from_env.log_level) == (7001, "DEBUG")
    assert parse(["--port", "7002"], env).port == 7002


@pytest.mark.parametrize(("config_class", "parse", "prefix"), SERVICES)
@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--port", "http"], {}, "--port=http: invalid int value: 'http'"),
    ([], {"PORT": "http"}, "PORT=http: invalid int value: 'http'"),
    (["--port", "70000"], {}, "--port=70000: port must be in 0..65535, got 70000"),
    ([], {"PORT": "-1"}, "PORT=-1: port must be in 0..65535, got -1"),
    (["--log-format", "xml"], {}, "log_format must be one of json, text, got 'xml'"),
])
def test_both_services_refuse_a_bad_value_with_the_same_words(
    config_class, parse, prefix, argv, env, message, capsys
):
    with pytest.raises(SystemExit) as caught:
        parse(argv, {prefix + k: v for k, v in env.items()})
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_building_the_dataclass_checks_the_same_bounds():
    with pytest.raises(SettingError, match="max_batch_size must be at least 0, got -1"):
        ServerConfig(max_batch_size=-1)
    with pytest.raises(SettingError, match="dtype must be one of"):
        ServerConfig(dtype="fp64")
    with pytest.raises(SettingError, match="port must be in 0..65535"):
        BridgeConfig(port=65536)
    assert ServerConfig(port=0, max_batch_size=4).max_batch_size == 4


def test_booleans_and_optional_values_parse_from_text():
    assert parse_config(["--grpc-tls"], {}).grpc_tls is True
    assert parse_config([], {"REST_BRIDGE_GRPC_TLS": "off"}).grpc_tls is False
    assert parse_config([], {"REST_BRIDGE_GRPC_ROOT_CERT": ""}).grpc_root_cert is None


@pytest.mark.parametrize(("module", "prefix", "config_class"), [
    ("clip_grpc", "CLIP_GRPC_", ServerConfig), ("rest_bridge", "REST_BRIDGE_", BridgeConfig)])
def test_help_shows_each_flags_env_name_and_default(module, prefix, config_class):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, timeout=120, check=True)
    text = re.sub(r"\s+", " ", done.stdout)
    for field in dataclasses.fields(config_class):
        default = "none" if field.default is None else repr(field.default)
        assert flag_name(field.name) in text
        assert f"env {prefix}{field.name.upper()}, default {default}]" in text


def _readme_section(title: str) -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"\n## {title}")
    end = readme.find("\n## ", start + 1)
    return readme[start:end]


@pytest.mark.parametrize(("title", "config_class"), [
    ("The server", ServerConfig), ("The REST bridge", BridgeConfig)])
def test_the_readme_lists_every_flag(title, config_class):
    section = _readme_section(title)
    missing = [flag_name(f.name) for f in dataclasses.fields(config_class)
               if f"`{flag_name(f.name)}`" not in section]
    assert not missing, f"README section '{title}' has no table row for {missing}"


def test_max_wait_is_described_as_the_batcher_applies_it():
    """The batcher waits only while items are being prepared (Batcher.coming), not whenever the
    model is idle: --help and the README row must say so."""
    help_text = next(f.metadata["help"] for f in dataclasses.fields(ServerConfig)
                     if f.name == "max_wait_ms")
    row = next(line for line in _readme_section("The server").splitlines()
               if line.startswith("| `--max-wait-ms`"))
    for text in (help_text, row):
        assert "idle" not in text and "being prepared" in text and "at once" in text
