"""Orthanc as the PACS of an in-process RadDraft workstation: the set-up shared by the end-to-end tests that
route studies from Orthanc to RadDraft and send RadDraft's reports (or priors' queries) back to it.

Orthanc is Debian's /usr/sbin/Orthanc run by peers/orthanc.py on OS-assigned loopback ports; RadDraft runs
as the desktop app hosts it (raddraft/workstation.py: node, priors lookup, drafting queue, SR outbox).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peers.orthanc import Modality, Orthanc, running_orthanc
from raddraft.config import load_config
from raddraft.workstation import Workstation
from tests.conftest import require_orthanc, require_tool

PACS_AE, RADDRAFT_AE, ROUTE = "ORTHANC", "RADDRAFT", "raddraft"
STABLE_AFTER_S = 1.0


@contextmanager
def routing_orthanc(root: Path, never_route_from: Iterable[str] = ()) -> Iterator[Orthanc]:
    """Orthanc forwarding what it stores to RadDraft's route, except what these AE titles send it."""
    binary = require_orthanc()
    require_tool("storescu")
    # Never back to its sender: a rule forwarding everything sends RadDraft its own SR, which it then stores
    # as one more instance of the study.
    with running_orthanc(root, binary=binary, ae_title=PACS_AE, route_to=ROUTE,
                         never_route_from=[RADDRAFT_AE, *never_route_from]) as orthanc:
        yield orthanc


def start_workstation(tmp_path: Path, pacs_port: int, overrides: dict[str, Any]) -> Workstation:
    """RadDraft's workstation with Orthanc as its PACS (more settings in `overrides`), hosting a node and a queue."""
    config_file = tmp_path / "raddraft.toml"
    config_file.write_text("")  # never the user's own configuration
    values = {"store.root": str(tmp_path / "store"), "node.port": 0, "node.ae_title": RADDRAFT_AE,
              "node.stable_after_s": STABLE_AFTER_S, "pacs.ae_title": PACS_AE, "pacs.host": "127.0.0.1",
              "pacs.port": pacs_port, "pacs.calling_ae": RADDRAFT_AE, "reading.radiologist": "Reader^Test",
              **overrides}
    workstation = Workstation.start(load_config(config_file, values), config_path=config_file, overrides=values)
    try:
        assert workstation.problems == [] and workstation.node is not None and workstation.queue is not None
    except AssertionError:
        workstation.stop()
        raise
    return workstation


def route_to(orthanc: Orthanc, workstation: Workstation) -> None:
    """Register the workstation's node in Orthanc as the modality its routing rule sends to."""
    orthanc.add_modality(Modality(ROUTE, RADDRAFT_AE, "127.0.0.1", workstation.node.port))
