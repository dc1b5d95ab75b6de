"""The site's systemd units: valid for systemd, and their command lines accepted by `raddraft`'s own parser."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from raddraft.cli import build_parser

UNITS = Path(__file__).resolve().parents[2] / "installer" / "systemd"
WORKER_ENV = {"${RADDRAFT_SERVER}": "https://raddraft.example.org:8443"}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def exec_argv(name: str) -> list[str]:
    line = unit(name)["Service"]["ExecStart"]
    for variable, value in WORKER_ENV.items():
        line = line.replace(variable, value)
    return shlex.split(line)


@pytest.mark.parametrize("name, command", [("raddraft-server.service", "server"),
                                           ("raddraft-worker.service", "worker")])
def test_unit_runs_a_raddraft_subcommand_its_parser_accepts(name: str, command: str) -> None:
    argv = exec_argv(name)
    assert argv[0] == "/opt/raddraft/raddraft"
    parser, modules = build_parser()
    if command not in modules:
        pytest.skip(f"`raddraft {command}` is not in this tree yet")
    args = parser.parse_args(argv[1:])
    assert args.command == command
    assert str(args.config) == f"/etc/raddraft/{command}.toml"
    service = unit(name)["Service"]
    assert service["User"] == "raddraft" and service["KillSignal"] == "SIGTERM"
    assert service["Restart"] in ("on-failure", "always")


def test_the_worker_token_is_read_from_a_file_never_put_on_the_command_line() -> None:
    argv = exec_argv("raddraft-worker.service")
    assert "--token" not in argv
    assert argv[argv.index("--token-file") + 1] == "/etc/raddraft/worker.token"
    assert unit("raddraft-worker.service")["Service"]["EnvironmentFile"] == "/etc/raddraft/worker.env"


def test_systemd_accepts_the_units() -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    result = subprocess.run([analyze, "verify", "--man=no", *sorted(map(str, UNITS.glob("*.service")))],
                            check=False, capture_output=True, text=True, timeout=60)
    # The one complaint allowed here: the installed executable is not on this machine.
    problems = [line for line in result.stderr.splitlines()
                if line.strip() and "/opt/raddraft/raddraft is not executable" not in line]
    assert problems == [], result.stderr
