"""The installed app as IT gets it: the PyInstaller bundle, built once per test session, checked for what it
must not carry, its `raddraft self-test` run frozen, and the Linux archive installed with install.sh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from raddraft.config import load_config
from raddraft.self_test import STEPS
from tests.conftest import REQUIRE_PEERS
from tests.embedded_model import EMBEDDED_NAME, EMBEDDED_VERSION

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def require_pyinstaller() -> None:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        message = "PyInstaller is not installed (make installer-deps)"
        if REQUIRE_PEERS:
            pytest.fail(f"required build tool missing: {message}")
        pytest.skip(message)


@pytest.fixture(scope="session")
def frozen_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_pyinstaller()
    from installer.build import build_bundle

    return build_bundle(tmp_path_factory.mktemp("installer"), log=lambda line: None)


def isolated_env(home: Path) -> dict[str, str]:
    """The frozen app as a fresh user runs it: no settings, no registry of the developer's."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "RADDRAFT_"))}
    return {**env, "HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}


def run_frozen(executable: Path, *args: str, home: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(executable), *args], check=False, capture_output=True, text=True, timeout=timeout,
                          env=isolated_env(home), cwd=home)


def test_bundle_carries_the_runtime_and_no_training_stack(frozen_bundle: Path) -> None:
    from installer.bundle_contents import forbidden_contents, frozen_module_names

    modules = set(frozen_module_names(frozen_bundle))
    assert forbidden_contents(frozen_bundle, modules) == []
    assert not {"torch", "transformers", "peft", "optimum", "training.train"} & modules
    assert {"raddraft.self_test", "raddraft.commands.self_test", "engine.runtime", "dicom_node.server",
            "desktop.main_window", "engine.findings.labeler", "medspacy.context", "spacy.lang.en"} <= modules
    assert not {m for m in modules if m == "training" or m.startswith("training.")}
    source = REPO / "resources" / "models" / "raddraft-phantom-cxr"
    bundled = frozen_bundle / "_internal" / "resources" / "models" / "raddraft-phantom-cxr"
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(bundled)) for p in bundled.rglob("*") if p.is_file())


def test_frozen_self_test_passes(frozen_bundle: Path, tmp_path: Path) -> None:
    executable = frozen_bundle / "raddraft"
    result = run_frozen(executable, "self-test", home=tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("RadDraft self-test: PASSED")
    assert f"{EMBEDDED_NAME} {EMBEDDED_VERSION} (variant int8)" in result.stdout
    assert "provider    cpu (CPUExecutionProvider)" in result.stdout
    for name in STEPS:
        assert f"  {name} " in result.stdout
    as_json = run_frozen(executable, "self-test", "--json", home=tmp_path / "home")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] and report["draft_labels"]["pleural_effusion"] == "present"
    assert report["bundle"].startswith(str(frozen_bundle / "_internal" / "resources"))


def test_frozen_self_test_failure_is_one_line(frozen_bundle: Path, tmp_path: Path) -> None:
    result = run_frozen(frozen_bundle / "raddraft", "self-test", "--model", str(tmp_path / "nothing"),
                        home=tmp_path / "home")
    assert result.returncode == 1
    failures = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failures) == 1 and failures[0].startswith("raddraft self-test: FAILED at step 'load model': ")


def test_frozen_desktop_app_opens_its_window_offscreen(frozen_bundle: Path, tmp_path: Path) -> None:
    result = run_frozen(frozen_bundle / "raddraft", "app", "--store", str(tmp_path / "store"), "--port", "0",
                        "--exit-when-ready", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^RadDraft window ready in \d+\.\d+ s$", result.stdout, re.MULTILINE), result.stdout


def test_frozen_app_refuses_training_commands_in_one_line(frozen_bundle: Path, tmp_path: Path) -> None:
    result = run_frozen(frozen_bundle / "raddraft", "train", "--config", str(tmp_path / "x.toml"),
                        home=tmp_path / "home")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "needs the training tools" in result.stderr.strip().splitlines()[-1]


def test_archive_installs_with_install_sh_and_passes_its_self_test(frozen_bundle: Path, tmp_path: Path) -> None:
    from installer.build import make_archive, package_version

    archive = make_archive(frozen_bundle, tmp_path, package_version(), "cpu")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="tar")
    (top,) = (tmp_path / "unpacked").iterdir()
    assert {p.name for p in top.iterdir()} == {"raddraft", "install.sh", "raddraft.desktop", "raddraft.service",
                                               "README.md"}
    root = tmp_path / "root"
    install = subprocess.run(["sh", str(top / "install.sh"), "--root", str(root)], check=False,
                             capture_output=True, text=True, timeout=300, env=isolated_env(tmp_path / "home"))
    assert install.returncode == 0, install.stdout + install.stderr
    assert "RadDraft self-test: PASSED" in install.stdout  # install.sh ran the installed app's self-test
    app = root / "opt" / "raddraft"
    assert (app / "raddraft").is_file() and os.access(app / "raddraft", os.X_OK)
    assert os.readlink(root / "usr" / "local" / "bin" / "raddraft") == "/opt/raddraft/raddraft"
    assert "Exec=/opt/raddraft/raddraft app" in (root / "usr/share/applications/raddraft.desktop").read_text()
    unit = (root / "etc/systemd/system/raddraft.service").read_text()
    assert "ExecStart=/opt/raddraft/raddraft service --config /etc/raddraft/raddraft.toml" in unit
    config = load_config(root / "etc/raddraft/raddraft.toml")  # the settings it wrote are valid
    assert (config.node.host, config.node.port) == ("0.0.0.0", 11112)
    assert str(config.store.root) == "/var/lib/raddraft/store"

    removed = subprocess.run(["sh", str(top / "install.sh"), "--root", str(root), "--uninstall"],
                             check=False, capture_output=True, text=True, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert not app.exists() and not (root / "etc/systemd/system/raddraft.service").exists()
    assert (root / "etc/raddraft/raddraft.toml").exists()  # settings survive an uninstall
