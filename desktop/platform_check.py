"""Before Qt starts: the system libraries its platform plugin needs. Without them Qt aborts the process
(exit 134) with a message few can act on; here the missing ones are named, with the Debian/Ubuntu package
that brings each. No Qt is imported: this runs before anything of the app has started.

The plugin's own dependencies are read with `ldd` (it lists the whole tree, "=> not found" for the missing),
so the answer follows the Qt that is installed, not a list written for one Qt version.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path


def plugin_path(platform: str) -> Path | None:
    """The Qt platform plugin (`libqxcb.so` for "xcb") inside the installed PySide6, if there is one."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "Qt" / "plugins" / "platforms" / f"libq{platform}.so"
        if candidate.is_file():
            return candidate
    return None


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships `soname` by the naming policy: libxcb-cursor.so.0 ->
    libxcb-cursor0, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0, libEGL.so.1 -> libegl1."""
    base, _, version = soname.partition(".so")
    major = version.lstrip(".").split(".")[0]
    return (base + ("-" if base[-1:].isdigit() and major else "") + major).lower()


def not_found_in_ldd(output: str) -> list[str]:
    missing = []
    for line in output.splitlines():
        name, arrow, where = line.strip().partition("=>")
        if arrow and where.strip().startswith("not found") and name.strip() not in missing:
            missing.append(name.strip())
    return missing


def missing_libraries(platform: str) -> list[str]:
    """Sonames the platform plugin needs that the system lacks (empty: all there, or nothing to check:
    not Linux, no ldd, or the plugin is not part of this PySide6)."""
    if not sys.platform.startswith("linux") or not platform:
        return []
    plugin, ldd = plugin_path(platform), shutil.which("ldd")
    if plugin is None or ldd is None:
        return []
    result = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=30, check=False)
    return not_found_in_ldd(result.stdout + result.stderr)


def platform_problem(platform: str) -> str | None:
    """One line naming what to install, or None when the platform plugin can load."""
    missing = missing_libraries(platform)
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(debian_package(name) for name in missing))
    return (f"the desktop cannot start: Qt's {platform!r} platform needs {', '.join(missing)}; install them "
            f"with: sudo apt-get install {packages}")
