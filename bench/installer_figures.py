"""Installer figures: the frozen bundle's unpacked size, and start-up times frozen vs from source.

    python bench/installer_figures.py [--bundle build/installer/cpu/dist/raddraft] [--runs 5]

Build the bundle first (`make installer`). Times are medians of `--runs` runs after one discarded warm-up
run (which fills the page cache, as any second start on a workstation would find it):

- window ready: `raddraft app --exit-when-ready` offscreen, on an empty store of its own; "launch" is
  measured here from process creation to the ready line, "in-app" is what the app prints (from the CLI's
  start, so without the interpreter's or the bootloader's own start-up);
- self-test: `raddraft self-test` to its exit (the whole chain: node, C-STORE, drafting, label check).

Targets (issue 8): under 500 MB unpacked; window ready in under 3 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "build" / "installer" / "cpu" / "dist" / "raddraft"
SOURCE_COMMAND = [str(Path(sys.executable).with_name("raddraft"))]
READY = re.compile(r"RadDraft window ready in (\d+\.\d+) s")
SIZE_TARGET_MB, READY_TARGET_S = 500, 3.0


def folder_size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def biggest_parts(bundle: Path, count: int) -> list[tuple[str, int]]:
    """The largest entries of the bundle, one level into `_internal/` (Qt, onnxruntime, resources...)."""
    parts = [(p.relative_to(bundle).as_posix(), folder_size(p)) for p in (bundle / "_internal").iterdir()]
    parts += [(p.name, folder_size(p)) for p in bundle.iterdir() if p.name != "_internal"]
    return sorted(parts, key=lambda item: item[1], reverse=True)[:count]


def isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "RADDRAFT_"))}
    return {**env, "HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}


def time_ready(command: list[str], work: Path) -> tuple[float, float]:
    """(seconds from launch to the ready line, seconds the app reports) of one start on a fresh store."""
    store = Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    process = subprocess.Popen([*command, "app", "--store", str(store), "--port", "0", "--exit-when-ready",
                                "--log-level", "WARNING"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=isolated_env(work), cwd=work)
    for line in process.stdout:
        match = READY.search(line)
        if match:
            launch = time.perf_counter() - started
            process.wait(timeout=60)
            return launch, float(match.group(1))
    process.wait(timeout=60)
    raise RuntimeError(f"{command[0]} app exited ({process.returncode}) without a ready line")


def time_self_test(command: list[str], work: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([*command, "self-test"], check=False, capture_output=True, text=True, env=isolated_env(work),
                            cwd=work, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} self-test failed: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - started


def medians(command: list[str], runs: int, work: Path) -> dict[str, float]:
    time_ready(command, work)  # warm-up, discarded
    time_self_test(command, work)
    ready = [time_ready(command, work) for _ in range(runs)]
    tests = [time_self_test(command, work) for _ in range(runs)]
    return {"launch": statistics.median(r[0] for r in ready), "in_app": statistics.median(r[1] for r in ready),
            "self_test": statistics.median(tests)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="the one-folder bundle to measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parts", type=int, default=10, help="how many of the biggest parts to list")
    args = parser.parse_args()
    executable = args.bundle / "raddraft"
    if not executable.is_file():
        print(f"installer_figures: no bundle at {args.bundle}; build it with `make installer`", file=sys.stderr)
        return 1

    total = folder_size(args.bundle)
    print(f"Bundle {args.bundle}: {total / 1e6:.0f} MB unpacked (target < {SIZE_TARGET_MB} MB: "
          f"{'met' if total / 1e6 < SIZE_TARGET_MB else 'MISSED'})")
    for archive in sorted(args.bundle.parent.parent.glob("raddraft-*.tar.gz")):
        print(f"Archive {archive.name}: {archive.stat().st_size / 1e6:.0f} MB")
    print("\n| biggest parts | MB | share |\n|---|---:|---:|")
    for name, size in biggest_parts(args.bundle, args.parts):
        print(f"| {name} | {size / 1e6:.1f} | {size / total:.0%} |")

    with tempfile.TemporaryDirectory(prefix="raddraft-bench-") as work:
        frozen = medians([str(executable)], args.runs, Path(work))
        source = medians(SOURCE_COMMAND, args.runs, Path(work))
    print(f"\nStart-up, medians of {args.runs} runs after a warm-up (offscreen, 2-core machine):\n")
    print("| measure | frozen | from source | target |\n|---|---:|---:|---:|")
    print(f"| launch to ready window (s) | {frozen['launch']:.2f} | {source['launch']:.2f} | < {READY_TARGET_S:g} |")
    print(f"| ready window, as the app reports (s) | {frozen['in_app']:.2f} | {source['in_app']:.2f} | |")
    print(f"| launch to finished self-test (s) | {frozen['self_test']:.2f} | {source['self_test']:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
