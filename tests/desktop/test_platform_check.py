"""A desktop without Qt's platform libraries is told, in one line, which packages to install, before the
node starts (instead of Qt aborting the process with exit 134)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from desktop.platform_check import debian_package, not_found_in_ldd, platform_problem
from raddraft.commands.app import qt_platform


@pytest.mark.parametrize("soname,package", [
    ("libxcb-cursor.so.0", "libxcb-cursor0"), ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libEGL.so.1", "libegl1"), ("libdbus-1.so.3", "libdbus-1-3"), ("libxcb-render-util.so.0", "libxcb-render-util0")])
def test_debian_package_names(soname, package):
    assert debian_package(soname) == package


def test_ldd_output_gives_the_missing_libraries():
    output = ("\tlinux-vdso.so.1 (0x00007ffd)\n\tlibxcb-cursor.so.0 => not found\n"
              "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\tlibxcb-cursor.so.0 => not found\n")
    assert not_found_in_ldd(output) == ["libxcb-cursor.so.0"]


def test_the_platform_qt_picks():
    assert qt_platform({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert qt_platform({"QT_QPA_PLATFORM": "wayland;xcb"}) == "wayland"
    assert qt_platform({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) == "wayland"
    assert qt_platform({}) == "xcb"
    assert platform_problem("offscreen") is None  # what the tests run on has all it needs


def test_raddraft_app_names_the_packages_and_starts_nothing(tmp_path):
    problem = platform_problem("xcb")
    if problem is None:
        pytest.skip("this machine has every library Qt's xcb platform needs")
    (tmp_path / "raddraft.toml").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "raddraft", "app", "--config", str(tmp_path / "raddraft.toml"), "--store",
         str(tmp_path / "store"), "--port", "0", "--no-draft"],
        env={**os.environ, "QT_QPA_PLATFORM": "xcb"}, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"raddraft: {problem}"]
    assert "sudo apt-get install lib" in result.stderr
    assert not (tmp_path / "store" / "host.lock").exists()  # the node never started
