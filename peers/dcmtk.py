"""dcmtk's storescu as a modality uses it: send files over loopback, keeping their transfer syntax.

storescu proposes only uncompressed transfer syntaxes unless told otherwise and then converts each file,
which it cannot do for JPEG 2000 (shared/PEERS.md). `storescu_send` therefore groups the files by
transfer syntax and proposes each group's own, one association per group, in the order given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pydicom

# The storescu option that proposes a transfer syntax (uncompressed ones need none or -xi / -xd).
PROPOSE_OPTION = {
    "1.2.840.10008.1.2.1": (),
    "1.2.840.10008.1.2": ("-xi",),
    "1.2.840.10008.1.2.1.99": ("-xd",),
    "1.2.840.10008.1.2.4.50": ("-xy",),
    "1.2.840.10008.1.2.4.51": ("-xx",),
    "1.2.840.10008.1.2.4.57": ("-xs",),
    "1.2.840.10008.1.2.4.70": ("-xs",),
    "1.2.840.10008.1.2.4.80": ("-xt",),
    "1.2.840.10008.1.2.4.81": ("-xu",),
    "1.2.840.10008.1.2.4.90": ("-xv",),
    "1.2.840.10008.1.2.4.91": ("-xw",),
    "1.2.840.10008.1.2.5": ("-xr",),
}


class StorescuError(RuntimeError):
    """storescu is missing, or did not store every file; the message carries the end of its output."""


def dcmtk_env(nodelay: bool = True) -> dict[str, str]:
    """The environment for a dcmtk tool: without TCP_NODELAY=1 dcmtk crawls on loopback (Nagle against
    delayed ACKs); many PACS leave it unset, so benchmarks may want both."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def storescu_batches(paths: Iterable[Path]) -> list[tuple[tuple[str, ...], list[Path]]]:
    """(proposal options, files) per transfer syntax, in the order the syntaxes first appear."""
    batches: dict[tuple[str, ...], list[Path]] = {}
    for path in paths:
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if syntax not in PROPOSE_OPTION:
            raise StorescuError(f"{path}: no storescu option proposes transfer syntax {syntax}")
        batches.setdefault(PROPOSE_OPTION[syntax], []).append(Path(path))
    return list(batches.items())


def storescu_send(paths: Iterable[Path], port: int, called_ae: str, *, host: str = "127.0.0.1",
                  calling_ae: str = "STORESCU", nodelay: bool = True, timeout: float = 120) -> None:
    """Store every file with storescu (each in its own transfer syntax); StorescuError unless all succeed.
    When it returns, the receiver has acknowledged every instance."""
    binary = shutil.which("storescu")
    if binary is None:
        raise StorescuError("storescu is not installed (apt-get install dcmtk)")
    for options, files in storescu_batches(paths):
        result = subprocess.run([binary, *options, "-aet", calling_ae, "-aec", called_ae, host, str(port),
                                 *map(str, files)], check=False, capture_output=True, text=True,
                                timeout=timeout, env=dcmtk_env(nodelay))
        if result.returncode != 0:
            raise StorescuError(f"storescu to {called_ae}@{host}:{port} failed ({result.returncode}): "
                                f"{(result.stdout + result.stderr)[-1000:]}")
