"""The durable study store: DICOM Part 10 files under a root folder plus the index (SQLite in the store's
folder, or the PostgreSQL database the settings name).

Write path of one instance (see DESIGN.md, "The store"): temp file in the target folder -> fsync ->
rename -> fsync folder -> one index transaction -> only then is the instance reported stored. If the
index transaction fails the new file is removed again, so a failure leaves no trace. File names are
hashes of UIDs, never raw tag values.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pydicom

from dicom_node.db import DatabaseError
from dicom_node.durable import TEMP_SUFFIX, commit_temp, fsync_dir, make_dirs_durable, write_synced_temp
from dicom_node.errors import InvalidInstanceError, StoreIndexError, StoreWriteError
from dicom_node.header import InstanceHeader, header_from_dataset, read_header_from_dataset
from dicom_node.index import Index, InstanceRow
from dicom_node.settings import StoreSettings

log = logging.getLogger(__name__)

DATA_DIR = "data"
QUARANTINE_DIR = "quarantine"
INCOMING_DIR = "incoming"  # datasets being received (temp files only; swept at start)
INDEX_FILE = "index.sqlite3"
_LOCK_STRIPES = 64
_DIGEST_CHUNK = 1 << 20


class PutOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: kept once
    REPLACED = "replaced"  # same SOP Instance UID, different bytes: the newer one is kept


@dataclass(frozen=True)
class PutResult:
    outcome: PutOutcome
    header: InstanceHeader
    path: Path


@dataclass(frozen=True)
class ReconcileReport:
    temp_files_removed: int = 0
    rows_without_file: int = 0
    files_indexed: int = 0
    files_quarantined: int = 0
    seconds: float = 0.0


def _uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode("ascii")).hexdigest()[:40]


def relative_path_for(study_uid: str, sop_instance_uid: str) -> str:
    study = _uid_hash(study_uid)
    return f"{DATA_DIR}/{study[:2]}/{study}/{_uid_hash(sop_instance_uid)}.dcm"


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance as it arrived: the encoded dataset, untouched, and the Part 10 prefix we add."""

    prefix: bytes
    dataset: bytes | bytearray | memoryview
    transfer_syntax: str
    header: InstanceHeader
    calling_ae: str = ""

    @property
    def size(self) -> int:
        return len(self.prefix) + len(self.dataset)

    def chunks(self) -> tuple[bytes | bytearray | memoryview, ...]:
        return (self.prefix, self.dataset)

    @classmethod
    def from_part10(cls, part10: bytes, calling_ae: str = "") -> ReceivedInstance:
        """Split a Part 10 byte string into its prefix (preamble + meta) and dataset."""
        offset = dataset_offset(part10)
        meta = pydicom.dcmread(io.BytesIO(part10[:offset]), stop_before_pixels=True).file_meta
        transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
        dataset = part10[offset:]
        return cls(part10[:offset], dataset, transfer_syntax,
                   read_header_from_dataset(dataset, transfer_syntax), calling_ae)


def dataset_offset(part10: bytes | memoryview) -> int:
    """Where the dataset starts in a Part 10 file written with a group length (as ours are)."""
    if len(part10) < 144 or part10[128:132] != b"DICM" or part10[132:136] != b"\x02\x00\x00\x00":
        raise InvalidInstanceError("not a DICOM Part 10 file with a File Meta group length", undecodable=True)
    (group_length,) = struct.unpack_from("<I", part10, 140)
    return 144 + group_length


def dataset_digest(dataset: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(dataset).digest()


def stored_dataset_digest(path: Path) -> bytes | None:
    """SHA-256 of the dataset of a stored Part 10 file, read in bounded chunks; None if unreadable."""
    try:
        with path.open("rb") as f:
            start = f.read(144)
            f.seek(dataset_offset(start))
            digest = hashlib.sha256()
            while chunk := f.read(_DIGEST_CHUNK):
                digest.update(chunk)
            return digest.digest()
    except (OSError, InvalidInstanceError):
        return None


@dataclass(frozen=True)
class StreamedInstance:
    """An instance already written, as it arrived, to a synced temp file in the store's incoming folder."""

    temp_path: Path
    digest: bytes  # SHA-256 of the dataset (after the Part 10 prefix)
    size: int
    transfer_syntax: str
    header: InstanceHeader
    calling_ae: str = ""


class Store:
    """Files + index. Thread-safe: associations store concurrently."""

    def __init__(self, settings: StoreSettings) -> None:
        self.root = Path(settings.root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / DATA_DIR).mkdir(exist_ok=True)
            self.incoming_folder.mkdir(exist_ok=True)
            self.index = Index(settings.database or self.root / INDEX_FILE)
        except (OSError, DatabaseError) as exc:
            raise StoreWriteError(f"cannot open the store at {self.root}: {exc}") from exc
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def close(self) -> None:
        self.index.close()

    @property
    def incoming_folder(self) -> Path:
        """Where datasets stream while they arrive: same file system as the store, so a rename commits."""
        return self.root / INCOMING_DIR

    def path_of(self, row: InstanceRow) -> Path:
        return self.root / row.path

    # -- writing ---------------------------------------------------------------------------------
    def put(self, instance: ReceivedInstance) -> PutResult:
        """Store one instance durably and index it; return what happened.

        Raises StoreWriteError (StoreIndexError for the index) for any failure of the disk or the
        index; nothing partial is left in either case.
        """
        return self._put(instance.header, instance.transfer_syntax, instance.calling_ae, instance.size,
                         dataset_digest(instance.dataset), lambda final: write_synced_temp(final, instance.chunks()))

    def put_streamed(self, instance: StreamedInstance) -> PutResult:
        """As `put`, for an instance streamed to a temp file while it arrived; the temp file is consumed
        (renamed into place, or removed for a duplicate or a failure)."""
        try:
            return self._put(instance.header, instance.transfer_syntax, instance.calling_ae, instance.size,
                             instance.digest, lambda final: instance.temp_path)
        finally:
            instance.temp_path.unlink(missing_ok=True)

    def _put(self, header: InstanceHeader, transfer_syntax: str, calling_ae: str, size: int, digest: bytes,
             make_temp: Callable[[Path], Path]) -> PutResult:
        rel = relative_path_for(header.study_uid, header.sop_instance_uid)
        final = self.root / rel
        lock = self._locks[hash(header.sop_instance_uid) % _LOCK_STRIPES]
        with lock:
            existing = self.index.instance_seen_by_writer(header.sop_instance_uid)
            row = InstanceRow(
                sop_instance_uid=header.sop_instance_uid, sop_class_uid=header.sop_class_uid,
                series_uid=header.series_uid, study_uid=header.study_uid,
                instance_number=header.instance_number, view_position=header.view_position,
                transfer_syntax=transfer_syntax, path=rel, size=size, received_at=time.time(),
                calling_ae=calling_ae,
            )
            if existing is not None and existing.path == rel:
                if stored_dataset_digest(final) == digest:
                    return PutResult(PutOutcome.DUPLICATE, header, final)
                self._replace_same_path(final, header, make_temp, existing, row)
                return PutResult(PutOutcome.REPLACED, header, final)
            self._write_new(final, header, make_temp, row, existing)
            return PutResult(PutOutcome.REPLACED if existing else PutOutcome.STORED, header, final)

    def _write_new(self, final: Path, header: InstanceHeader, make_temp: Callable[[Path], Path], row: InstanceRow,
                   previous: InstanceRow | None) -> None:
        try:
            make_dirs_durable(final.parent, self.root)
            commit_temp(make_temp(final), final)
        except OSError as exc:
            raise StoreWriteError(_describe_os_error("write", exc)) from exc
        try:
            with self.index.transaction() as conn:
                if previous is not None:
                    self.index.remove_instance(conn, previous)
                    self.index.record_store_event(
                        conn, "replaced", row.sop_instance_uid,
                        f"moved from {previous.path} ({previous.size} bytes) to {row.path} ({row.size} bytes)",
                        row.received_at,
                    )
                self.index.add_instance(conn, header, row, row.received_at)
        except self.index.errors as exc:
            self._unlink_quietly(final)
            raise StoreIndexError(f"index insert failed, instance not kept: {exc}") from exc
        if previous is not None:
            self._unlink_quietly(self.root / previous.path)

    def _replace_same_path(self, final: Path, header: InstanceHeader, make_temp: Callable[[Path], Path],
                           previous: InstanceRow, row: InstanceRow) -> None:
        # The new content waits in a synced temp file until the index has committed, so a failure
        # of either step leaves the previous, complete instance in place.
        try:
            make_dirs_durable(final.parent, self.root)
            temp = make_temp(final)
        except OSError as exc:
            raise StoreWriteError(_describe_os_error("write", exc)) from exc
        try:
            with self.index.transaction() as conn:
                self.index.replace_instance(conn, row, row.received_at)
                self.index.record_store_event(
                    conn, "replaced", row.sop_instance_uid,
                    f"different bytes for the same instance ({previous.size} -> {row.size} bytes); newer kept",
                    row.received_at,
                )
        except self.index.errors as exc:
            self._unlink_quietly(temp)
            raise StoreIndexError(f"replacing instance failed, previous version kept: {exc}") from exc
        try:
            commit_temp(temp, final)
        except OSError as exc:
            raise StoreWriteError(_describe_os_error("rename", exc)) from exc

    def _unlink_quietly(self, path: Path) -> None:
        try:
            path.unlink()
            fsync_dir(path.parent)
        except FileNotFoundError:
            pass
        except OSError:
            log.exception("could not remove %s", path)

    # -- recovery --------------------------------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        """Bring files and index into agreement after a crash.

        Removes temp files, drops index rows whose file is gone, and indexes complete files the
        index lacks (a crash between rename and commit, or index commits lost to a power cut).
        """
        started = time.monotonic()
        temps = indexed = quarantined = 0
        for stray in self.incoming_folder.iterdir() if self.incoming_folder.is_dir() else ():
            stray.unlink(missing_ok=True)  # a dataset that was still arriving when the process ended
            temps += 1
        rows = self.index.all_instance_paths()
        on_disk: set[str] = set()
        data = self.root / DATA_DIR
        for folder, _dirs, files in os.walk(data):
            for name in files:
                path = Path(folder) / name
                if name.endswith(TEMP_SUFFIX):
                    path.unlink(missing_ok=True)
                    temps += 1
                    continue
                on_disk.add(path.relative_to(self.root).as_posix())
        for rel in sorted(on_disk - rows.keys()):
            if self._index_orphan(self.root / rel):
                indexed += 1
            else:
                quarantined += 1
        missing = [row for rel, row in rows.items() if rel not in on_disk]
        if missing:
            with self.index.transaction() as conn:
                for row in missing:
                    self.index.remove_instance(conn, row)
                    self.index.record_store_event(conn, "file_missing", row.sop_instance_uid, row.path, time.time())
        report = ReconcileReport(temps, len(missing), indexed, quarantined, time.monotonic() - started)
        if temps or missing or indexed or quarantined:
            log.warning("store reconciled: %s", report)
        return report

    def _index_orphan(self, path: Path) -> bool:
        try:
            transfer_syntax, header = _read_stored_header(path)
            rel = relative_path_for(header.study_uid, header.sop_instance_uid)
            if (self.root / rel) != path:
                raise InvalidInstanceError(f"file name does not match its UIDs (expected {rel})")
            row = InstanceRow(
                sop_instance_uid=header.sop_instance_uid, sop_class_uid=header.sop_class_uid,
                series_uid=header.series_uid, study_uid=header.study_uid,
                instance_number=header.instance_number, view_position=header.view_position,
                transfer_syntax=transfer_syntax, path=rel, size=path.stat().st_size,
                received_at=path.stat().st_mtime, calling_ae="",
            )
            with self.index.transaction() as conn:
                previous = self.index.existing_instance(conn, header.sop_instance_uid)
                if previous is not None:
                    self.index.remove_instance(conn, previous)
                self.index.add_instance(conn, header, row, row.received_at)
                self.index.record_store_event(conn, "reindexed", header.sop_instance_uid, rel, time.time())
            return True
        except (InvalidInstanceError, OSError, *self.index.errors) as exc:
            target = self.root / QUARANTINE_DIR / path.name
            target.parent.mkdir(exist_ok=True)
            shutil.move(path, target)
            log.error("unindexable file %s moved to %s: %s", path, target, exc)
            return False


def _read_stored_header(path: Path) -> tuple[str, InstanceHeader]:
    """Transfer syntax and header of a stored file, reading only small values (an orphan may be huge)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096)
        transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        return transfer_syntax, header_from_dataset(ds)
    except InvalidInstanceError:
        raise
    except Exception as exc:  # pydicom raises a wide range of errors on damaged files
        raise InvalidInstanceError(f"unreadable file: {type(exc).__name__}: {exc}", undecodable=True) from exc


def _describe_os_error(action: str, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full during {action}: {exc}"
    return f"{action} failed: {exc}"
