"""Builds the installed app: the PyInstaller one-folder bundle, its content check, and the Linux archive.

    python installer/build.py [--out build/installer] [--no-archive]

Run it with the Python of the environment to freeze (`make installer` uses .venv; `make installer GPU=1`
a separate venv with onnxruntime-gpu): the variant ("cpu" or "gpu") follows the onnxruntime installed
there. Output, under OUT/VARIANT/: `dist/raddraft/` (the bundle) and `raddraft-VERSION-linux-ARCH[-gpu].tar.gz`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import platform
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from installer.bundle_contents import forbidden_contents

SPEC = REPO / "installer" / "raddraft.spec"
LINUX_FILES = ("raddraft.desktop", "raddraft.service", "install.sh", "README.md")


class BuildError(Exception):
    """The bundle could not be built, or it contains what it must not."""


def package_version() -> str:
    """raddraft.__version__, read without importing the package into the build process."""
    text = (REPO / "raddraft" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise BuildError("raddraft/__init__.py has no __version__ line")
    return match.group(1)


def onnxruntime_variant() -> str:
    """ "gpu" when this environment has onnxruntime-gpu, "cpu" for plain onnxruntime."""
    for distribution, variant in (("onnxruntime-gpu", "gpu"), ("onnxruntime", "cpu")):
        try:
            importlib.metadata.version(distribution)
            return variant
        except importlib.metadata.PackageNotFoundError:
            continue
    raise BuildError("no onnxruntime in this environment: install the 'cpu' or the 'gpu' extra")


def build_bundle(out: Path, log=print) -> Path:
    """Run PyInstaller on the spec into `out`/dist and `out`/work; return the bundle folder."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
               "--distpath", str(out / "dist"), "--workpath", str(out / "work"), str(SPEC)]
    log(f"freezing with PyInstaller into {out / 'dist'} ...")
    started = time.monotonic()
    result = subprocess.run(command, check=False, cwd=REPO)
    if result.returncode != 0:
        raise BuildError(f"PyInstaller failed (exit {result.returncode}); its log is above")
    bundle = out / "dist" / "raddraft"
    log(f"froze {bundle} in {time.monotonic() - started:.0f} s")
    return bundle


def check_bundle(bundle: Path) -> None:
    problems = forbidden_contents(bundle)
    if problems:
        raise BuildError(f"the bundle carries the training stack: {', '.join(problems[:10])}")


def archive_name(version: str, variant: str) -> str:
    suffix = "-gpu" if variant == "gpu" else ""
    return f"raddraft-{version}-linux-{platform.machine().lower()}{suffix}"


def gpu_requirements() -> str:
    """What a workstation must provide for the GPU build, from the metadata of the onnxruntime-gpu frozen
    into it (its `cuda` and `cudnn` extras name the NVIDIA libraries it was built against)."""
    metadata = importlib.metadata.metadata("onnxruntime-gpu")
    needs = sorted({requirement.split(";")[0].strip() for requirement in metadata.get_all("Requires-Dist") or ()
                    if 'extra == "cuda"' in requirement or 'extra == "cudnn"' in requirement})
    lines = [f"This RadDraft build runs ONNX Runtime {metadata['Version']} (onnxruntime-gpu). To draft on an NVIDIA",
             "GPU the workstation must provide the NVIDIA driver and these libraries, of these major versions",
             "(the Python wheels of the same names, or NVIDIA's CUDA toolkit and cuDNN packages, on the library path):",
             *(f"  {need}" for need in needs),
             "and cuBLAS/cuBLASLt of the same CUDA major version. TensorRT (libnvinfer) is optional.",
             "Without them the app runs on the CPU and says why (`raddraft self-test` shows the provider used).",
             "See installer/README.md, 'GPU variant'."]
    return "\n".join(lines) + "\n"


def make_archive(bundle: Path, out: Path, version: str, variant: str) -> Path:
    """The distributable tar.gz: the one-folder app under raddraft/, plus the desktop entry, the systemd
    unit, the install script and its README at the top (and GPU.txt for the GPU build)."""
    name = archive_name(version, variant)
    target = out / f"{name}.tar.gz"
    partial = target.with_suffix(".gz.part")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=f"{name}/raddraft")
        for file in LINUX_FILES:
            tar.add(REPO / "installer" / "linux" / file, arcname=f"{name}/{file}")
        if variant == "gpu":
            _add_text(tar, f"{name}/GPU.txt", gpu_requirements())
    partial.replace(target)
    return target


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the RadDraft installer bundle and archive.")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "installer",
                        help="output root; the variant's folder goes under it (default build/installer)")
    parser.add_argument("--no-archive", action="store_true", help="stop after the checked bundle")
    args = parser.parse_args(argv)
    try:
        version, variant = package_version(), onnxruntime_variant()
        out = args.out.resolve() / variant
        print(f"RadDraft {version}, {variant} variant (onnxruntime from {sys.executable})")
        bundle = build_bundle(out)
        check_bundle(bundle)
        print("bundle checked: no training stack inside")
        if not args.no_archive:
            print("writing the archive ...")
            print(f"wrote {make_archive(bundle, out, version, variant)}")
    except BuildError as error:
        print(f"installer: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
