"""C-STORE SCU: send DICOM files and folders to a peer over one association."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, _config
from pynetdicom.presentation import PresentationContext, build_context

from dicom_node.errors import NodeError

log = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: not an instance to store
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
_MAX_CONTEXTS = 128


class SendError(NodeError):
    """The association could not be set up (peer unreachable, rejected, no common context)."""


@dataclass(frozen=True)
class SendOutcome:
    path: Path
    status: int | None  # None: never sent (not DICOM, no accepted context, association lost)
    comment: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or 0xB000 <= self.status <= 0xBFFF)


@dataclass
class SendSummary:
    outcomes: list[SendOutcome] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def failed(self) -> list[SendOutcome]:
        return [o for o in self.outcomes if not o.ok]


@dataclass(frozen=True)
class _Candidate:
    path: Path
    sop_class_uid: str
    transfer_syntax: str


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every file under named folders (sorted, hidden files skipped)."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(folder) / name
        else:
            yield path


def _inspect(path: Path) -> _Candidate | SendOutcome:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        return SendOutcome(path, None, f"not a DICOM file: {exc}")
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    ts = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    if not sop_class:
        return SendOutcome(path, None, "no SOP Class UID")
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return SendOutcome(path, None, "DICOMDIR skipped")
    return _Candidate(path, sop_class, ts or _UNCOMPRESSED[1])


def _contexts_for(candidates: list[_Candidate]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax) so every file goes as it is stored; a class
    sent uncompressed also offers the other uncompressed syntax in case the peer refuses one."""
    pairs: dict[tuple[str, str], None] = {}
    for c in candidates:
        pairs[(c.sop_class_uid, c.transfer_syntax)] = None
        if c.transfer_syntax in _UNCOMPRESSED:
            for ts in _UNCOMPRESSED:
                pairs[(c.sop_class_uid, ts)] = None
    if len(pairs) > _MAX_CONTEXTS:
        raise SendError(f"these files need {len(pairs)} presentation contexts; one association allows 128")
    return [build_context(sop_class, ts) for sop_class, ts in pairs]


def send_files(host: str, port: int, paths: Iterable[Path], *, calling_ae: str = "RADDRAFT",
               called_ae: str = "ANY-SCP", progress: Callable[[SendOutcome], None] | None = None,
               timeout_s: float = 60.0) -> SendSummary:
    """Send every DICOM file under `paths` over one association; never stops at a failed instance."""
    summary = SendSummary()
    candidates: list[_Candidate] = []
    for path in iter_files(paths):
        inspected = _inspect(path)
        if isinstance(inspected, SendOutcome):
            summary.outcomes.append(inspected)
            if progress:
                progress(inspected)
        else:
            candidates.append(inspected)
    if not candidates:
        return summary
    assoc = _associate(host, port, calling_ae, called_ae, timeout_s, _contexts_for(candidates), "")
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for candidate in candidates:
            outcome = _send_one(assoc, candidate)
            summary.outcomes.append(outcome)
            if progress:
                progress(outcome)
    finally:
        if assoc.is_established:
            assoc.release()
    return summary


def echo(host: str, port: int, *, calling_ae: str = "RADDRAFT", called_ae: str = "ANY-SCP",
         timeout_s: float = 5.0) -> None:
    """C-ECHO the peer; SendError saying what failed (unreachable, rejected, or a failure status)."""
    assoc = _associate(host, port, calling_ae, called_ae, timeout_s,
                       [build_context("1.2.840.10008.1.1")], "C-ECHO: ")  # Verification
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if not status or status.Status != 0:
        raise SendError(f"C-ECHO to {called_ae}@{host}:{port} failed "
                        f"(status {'none' if not status else hex(status.Status)})")

def _associate(host: str, port: int, calling_ae: str, called_ae: str, timeout_s: float, contexts: list,
               what: str):
    """An established association, or SendError saying why there is none."""
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.requested_contexts = contexts
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        reason = ("was rejected by the peer (check the AE titles)" if assoc.is_rejected
                  else "could not be established (peer unreachable, or it aborted)")
        raise SendError(f"{what}association with {called_ae}@{host}:{port} {reason}")
    return assoc



def _send_one(assoc, candidate: _Candidate) -> SendOutcome:
    if not assoc.is_established:
        return SendOutcome(candidate.path, None, "association lost")
    try:
        status = assoc.send_c_store(candidate.path)
    except ValueError as exc:  # no accepted presentation context for this file
        return SendOutcome(candidate.path, None, str(exc).splitlines()[0])
    except (OSError, InvalidDicomError, AttributeError) as exc:
        return SendOutcome(candidate.path, None, f"cannot read: {exc}")
    if not status or "Status" not in status:
        return SendOutcome(candidate.path, None, "no response (timeout or association aborted)")
    return SendOutcome(candidate.path, int(status.Status), str(status.get("ErrorComment", "")))
