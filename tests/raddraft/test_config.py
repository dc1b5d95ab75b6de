"""The one configuration: TOML + flags, validated with messages that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raddraft.config import ConfigError, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "raddraft.toml"
    path.write_text(text)
    return path


def test_file_values_and_flag_overrides(tmp_path):
    path = _write(tmp_path, '[node]\nae_title = "READING1"\nport = 4242\nallowed_calling_aes = ["PACS"]\n'
                            f'[store]\nroot = "{tmp_path / "s"}"\n')
    config = load_config(path, {"node.port": 5000, "node.host": None})
    assert config.node.ae_title == "READING1"
    assert config.node.port == 5000  # the flag wins
    assert config.node.host == "127.0.0.1"  # None means "flag not given"
    assert config.node.allowed_calling_aes == ("PACS",)
    assert config.store.root == tmp_path / "s"


@pytest.mark.parametrize(("text", "message"), [
    ("[node]\nprot = 1\n", "unknown key 'node.prot'"),
    ("[nodes]\nport = 1\n", "unknown section [nodes]"),
    ("[node]\nport = 'eleven'\n", "node.port: expected an integer"),
    ("[node]\nport = 70000\n", "node.port: must be between 0 and 65535"),
    ("[node]\nae_title = 'A_TITLE_MUCH_TOO_LONG'\n", "node.ae_title: an AE title has at most 16 characters"),
    ("[node]\nallowed_calling_aes = 'PACS'\n", "node.allowed_calling_aes: expected a list"),
    ("[node.tls]\nenabled = true\n", "node.tls.cert_file: is required when TLS is enabled"),
    ("[logging]\nlevel = 'LOUD'\n", "logging.level: must be one of"),
    ("[node\nport = 1\n", "not valid TOML"),
])
def test_bad_configuration_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as excinfo:
        load_config(_write(tmp_path, text))
    assert message in str(excinfo.value)


def test_explicit_config_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_cli_reports_configuration_errors_without_traceback(tmp_path):
    path = _write(tmp_path, "[node]\nport = -1\n")
    result = subprocess.run([sys.executable, "-m", "raddraft", "--config", str(path), "service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "node.port: must be between 0 and 65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "raddraft", "service", "--store", str(tmp_path / "s"),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
