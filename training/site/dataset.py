"""The site's training dataset, built from the store: each study's latest signed report with its images,
de-identified (`deidentify.py`, `scrub.py`) and split by patient (`split.py`).

Output folder (what `training.train.studies.read_studies` and `raddraft finetune` read):

- `manifest.jsonl`: one study per line: `study_uid` (the new one), `patient_id` (a keyed pseudonym),
  `images` (paths relative to the folder), `views`, `modality`, `split`, `report` {findings, impression},
  `labels` (empty: site data has no ground truth);
- `studies/<hash of the new study UID>/<n>.dcm`: the de-identified images;
- `dataset.json`: counts per split, patients, what was excluded or filtered out, the options, when, the
  key's fingerprint (never a path: a store's path may name the site or a user);
- `deid-log.json`: what was removed or replaced, per attribute and action, the excluded studies (by their
  new UID) and why, and the report scrubbing counts. No original identifying value is written anywhere.

Patients under several IDs are one patient (`linking.py`); each report is scrubbed of the identity of its
study, of the patient's other studies in the store and of their other IDs. Images at risk of burned-in text
are kept out (`risk.py`); warnings raised while reading are counted, never printed (`quiet.py`).

The folder is built beside its destination under a temporary name and renamed into place when complete,
so a crash or an error leaves no half-written dataset behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dicom_node.durable import fsync_dir, replace_folder, write_atomically, write_text_atomically
from dicom_node.index import StudyRow, StudyState
from dicom_node.reports import SignedReport, latest_report
from dicom_node.settings import StoreSettings
from dicom_node.store import DATA_DIR, INDEX_FILE, QUARANTINE_DIR, Store
from engine.preprocess import DEFER_SIZE
from training.site.deidentify import (
    PROFILE_NAME,
    DeidentificationError,
    Deidentifier,
    Patient,
    key_id,
    load_or_create_key,
)
from training.site.linking import PatientRecord, link_patients, record_of
from training.site.pixels import PixelCleaningError
from training.site.quiet import values_withheld
from training.site.risk import BURNED_IN, BURNED_IN_RISK, burned_in_reason
from training.site.scrub import ReportScrubber, identity_of
from training.site.split import SPLITS, SplitShares, assign_splits

MANIFEST_NAME = "manifest.jsonl"  # the name `training.data.phantoms` and the trainer use
SUMMARY_NAME = "dataset.json"
LOG_NAME = "deid-log.json"
FORMAT = 1
SIGNED_STATES = frozenset({StudyState.SIGNED, StudyState.SENT})
NO_IMAGES, UNREADABLE, PIXELS_NOT_CLEANABLE = "no_images", "unreadable", "pixel_data_not_cleanable"
EXCLUSION_REASONS = (BURNED_IN, BURNED_IN_RISK, NO_IMAGES, UNREADABLE, PIXELS_NOT_CLEANABLE)
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
Progress = Callable[[int, int], None]


class DatasetError(Exception):
    """The dataset cannot be built; the message says why in one line."""


class StoreNotFoundError(DatasetError):
    """The store folder does not exist or is not a RadDraft store."""


class OutputError(DatasetError):
    """The output folder cannot be used (not empty without --overwrite, not a folder, the store's own)."""


class NothingToExportError(DatasetError):
    """No signed report is left after the filters, or every study was excluded."""


@dataclass(frozen=True)
class DatasetOptions:
    """since: only reports signed on or after this day (local time). modalities: only studies with a
    series of one of these modalities (empty: all). dates: "shift" or "remove". allow_burned_in: keep
    studies flagged Burned In Annotation = YES and those of high-risk modalities and classes (`risk.py`;
    their burned-in text is not removed). link_by_name_and_birth_date: patients with the same name and
    birth date are one patient (besides Other Patient IDs)."""

    since: dt.date | None = None
    modalities: tuple[str, ...] = ()
    dates: str = "shift"
    allow_burned_in: bool = False
    shares: SplitShares = field(default_factory=SplitShares)
    overwrite: bool = False
    link_by_name_and_birth_date: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"since": self.since.isoformat() if self.since else None, "modalities": list(self.modalities),
                "dates": self.dates, "allow_burned_in": self.allow_burned_in,
                "link_by_name_and_birth_date": self.link_by_name_and_birth_date,
                "validation_share": self.shares.validation, "test_share": self.shares.test}


@dataclass(frozen=True)
class DatasetResult:
    out: Path
    studies: dict[str, int]  # per split
    patients: int
    images: int
    excluded: dict[str, int]
    filtered: dict[str, int]

    def line(self) -> str:
        splits = ", ".join(f"{name} {self.studies[name]}" for name in SPLITS)
        excluded = sum(self.excluded.values())
        return (f"{sum(self.studies.values())} studies of {self.patients} patients, {self.images} images "
                f"({splits}); {excluded} excluded -> {self.out}")


@dataclass
class _Entry:
    """One study on its way to the manifest."""

    record: dict[str, object]
    patient: str
    draw: float


@dataclass
class _Run:
    deid: Deidentifier
    options: DatasetOptions
    folder: Path
    excluded: Counter = field(default_factory=Counter)
    excluded_studies: list[dict[str, str]] = field(default_factory=list)
    burned_in_kept: int = 0
    scrubbed: Counter = field(default_factory=Counter)
    objects_without_pixels: int = 0
    warnings: Counter = field(default_factory=Counter)
    patients: _Patients = field(default_factory=lambda: _Patients({}, {}))

    def exclude(self, study_uid: str, reason: str) -> None:
        self.excluded[reason] += 1
        self.excluded_studies.append({"study_uid": self.deid.uid(study_uid), "reason": reason})


def build_site_dataset(store: StoreSettings, out: Path, options: DatasetOptions,
                       progress: Progress | None = None) -> DatasetResult:
    """Build the dataset of `store` in `out` (see the module docstring). Raises `DatasetError`s."""
    root = _check_store(Path(store.root))
    out = Path(out).expanduser().absolute()
    _check_output(out, root, options.overwrite)
    opened = Store(store)
    try:
        studies, filtered = _signed_studies(opened, options)
        if not studies:
            raise NothingToExportError(_nothing_signed(root, filtered))
        try:
            deid = Deidentifier(load_or_create_key(root), options.dates)
        except DeidentificationError as exc:
            raise DatasetError(str(exc)) from None
        temp = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
        out.parent.mkdir(parents=True, exist_ok=True)
        temp.mkdir()
        try:
            run = _Run(deid, options, temp)
            with values_withheld(run.warnings):
                run.patients = _link(opened, studies, options)
                entries = _export_studies(opened, studies, run, progress)
            result = _finish(run, entries, root, out, filtered)
            _publish(temp, out, root, options.overwrite)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    finally:
        opened.close()
    return result


# -- checks --------------------------------------------------------------------------------------------
def _check_store(root: Path) -> Path:
    root = root.expanduser().absolute()
    if not root.is_dir():
        raise StoreNotFoundError(f"store folder not found: {root}")
    if not (root / INDEX_FILE).is_file():
        raise StoreNotFoundError(f"{root} is not a RadDraft store (it has no {INDEX_FILE})")
    return root.resolve()


def _check_output(out: Path, store_root: Path, overwrite: bool) -> None:
    """A folder beside the store's own (`<store>/training/...`, where the app works) is fine; the store
    itself, a folder holding it, and its data and quarantine folders are not (the store would index the
    files there, or --overwrite would delete it)."""
    resolved = out.resolve()
    if resolved == store_root or resolved in store_root.parents:
        raise OutputError(f"the output folder {out} must not be the store {store_root} or hold it")
    for kept in (store_root / DATA_DIR, store_root / QUARANTINE_DIR):
        if resolved == kept or kept in resolved.parents:
            raise OutputError(f"the output folder {out} must not lie in the store's {kept.name} folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} is not empty; choose a new folder or pass --overwrite to replace it")


# -- choosing studies ------------------------------------------------------------------------------------
def _signed_studies(store: Store, options: DatasetOptions) -> tuple[list[tuple[StudyRow, SignedReport]],
                                                                     dict[str, int]]:
    """Studies with a signed report that pass the filters, and how many each filter left out."""
    since = time.mktime(options.since.timetuple()) if options.since else None
    wanted = {m.upper() for m in options.modalities}
    chosen, filtered = [], Counter()
    for study in store.index.studies(SIGNED_STATES):
        report = latest_report(store.index, study.study_uid)
        if report is None:
            continue
        if since is not None and report.signed_at < since:
            filtered["signed_before_since"] += 1
        elif wanted and not wanted & {m.strip().upper() for m in study.modalities.split(",")}:
            filtered["other_modality"] += 1
        else:
            chosen.append((study, report))
    return chosen, dict(filtered)


def _nothing_signed(root: Path, filtered: dict[str, int]) -> str:
    if not filtered:
        return f"no signed reports in the store {root}"
    why = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(filtered.items()))
    return f"no signed reports left after the filters in the store {root} ({why})"


# -- patients ------------------------------------------------------------------------------------------
@dataclass
class _Patients:
    """The patient key of each study, and per key the first header of each of the patient's studies (their
    accessions, dates and IDs are scrubbed from every report of the patient)."""

    key_of: dict[str, str]
    headers: dict[str, list[Dataset]]


def _link(store: Store, studies: list[tuple[StudyRow, SignedReport]], options: DatasetOptions) -> _Patients:
    all_studies = list(store.index.studies())
    records = [_first_record(store, study) for study in all_studies]
    key_of = link_patients((r for r, _ in records), options.link_by_name_and_birth_date)
    wanted = {key_of[study.study_uid] for study, _ in studies}
    headers: dict[str, list[Dataset]] = {}
    for record, header in records:
        if header is not None and key_of[record.study_uid] in wanted:
            headers.setdefault(key_of[record.study_uid], []).append(header)
    return _Patients(key_of, headers)


def _first_record(store: Store, study: StudyRow) -> tuple[PatientRecord, Dataset | None]:
    headers = (_header(store.path_of(row)) for row in store.index.instances_of(study.study_uid))
    header = next((h for h in headers if h is not None), None)
    return record_of(study.study_uid, study.patient_id, [header] if header is not None else []), header


def _header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - unreadable files are excluded later, with their study
        return None


# -- exporting -------------------------------------------------------------------------------------------
def _export_studies(store: Store, studies: list[tuple[StudyRow, SignedReport]], run: _Run,
                    progress: Progress | None) -> list[_Entry]:
    entries = []
    if progress:
        progress(0, len(studies))
    for done, (study, report) in enumerate(studies, 1):
        entry = _export_study(store, study, report, run)
        if entry is not None:
            entries.append(entry)
        if progress:
            progress(done, len(studies))
    return entries


def _export_study(store: Store, study: StudyRow, report: SignedReport, run: _Run) -> _Entry | None:
    images = _read_headers(store, study, run)
    if images is None:
        return None
    if not images:
        run.exclude(study.study_uid, NO_IMAGES)
        return None
    headers = [ds for _, ds in images]
    reasons = {burned_in_reason(ds) for ds in headers} - {None}
    if reasons:
        if not run.options.allow_burned_in:
            run.exclude(study.study_uid, BURNED_IN if BURNED_IN in reasons else BURNED_IN_RISK)
            return None
        run.burned_in_kept += 1
    key = run.patients.key_of.get(study.study_uid) or study.patient_id.strip() or f"no patient id: {study.study_uid}"
    patient = run.deid.patient(key)
    new_study_uid = run.deid.uid(study.study_uid)
    folder = f"studies/{hashlib.sha256(new_study_uid.encode('ascii')).hexdigest()[:16]}"
    written = _write_images(run, folder, [path for path, _ in images], patient, bool(reasons))
    if isinstance(written, str):
        run.exclude(study.study_uid, written)
        return None
    identity = identity_of(headers + run.patients.headers.get(key, []), [report.signed_by])
    scrubber = ReportScrubber(identity, patient.date_offset_days if run.options.dates == "shift" else None)
    findings, found_in_findings = scrubber.scrub(report.findings)
    impression, found_in_impression = scrubber.scrub(report.impression)
    run.scrubbed.update(found_in_findings + found_in_impression)
    run.scrubbed["reports_changed"] += bool(found_in_findings or found_in_impression)
    record = {
        "study_uid": new_study_uid, "patient_id": patient.pseudonym, "images": written,
        "views": [str(ds.get("ViewPosition", "") or "") for ds in headers],
        "modality": ",".join(sorted({str(ds.get("Modality", "") or "") for ds in headers} - {""})),
        "report": {"findings": findings, "impression": impression}, "labels": {}, "source": "site",
    }
    return _Entry(record, patient.pseudonym, patient.split_draw)


def _read_headers(store: Store, study: StudyRow, run: _Run) -> list[tuple[Path, Dataset]] | None:
    """The study's images (objects with pixel data) with their attributes, pixel data left in the files;
    None (and the study excluded) when a file cannot be read: the report would meet part of its study."""
    images = []
    for row in store.index.instances_of(study.study_uid):
        path = store.path_of(row)
        try:
            ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
        except Exception:  # noqa: BLE001 - a missing or corrupt file: pydicom raises many kinds
            run.exclude(study.study_uid, UNREADABLE)
            return None
        if any(keyword in ds for keyword in PIXEL_KEYWORDS):
            images.append((path, ds))
        else:
            run.objects_without_pixels += 1
    return images


def _write_images(run: _Run, folder: str, paths: list[Path], patient: Patient,
                  burned_in_kept: bool) -> list[str] | str:
    """De-identify and write the images one at a time (one image in memory); the reason of the exclusion
    when one cannot be read whole or cleaned (nothing of the study is left then)."""
    (run.folder / folder).mkdir(parents=True)
    written = []
    for number, path in enumerate(paths, 1):
        try:
            ds = pydicom.dcmread(path)
            encoded = run.deid.instance(ds, patient, burned_in_kept=burned_in_kept)
        except PixelCleaningError:
            shutil.rmtree(run.folder / folder)
            return PIXELS_NOT_CLEANABLE
        except Exception:  # noqa: BLE001 - truncated pixel data shows only now
            shutil.rmtree(run.folder / folder)
            return UNREADABLE
        relative = f"{folder}/{number}.dcm"
        write_atomically(run.folder / relative, [encoded])
        written.append(relative)
    fsync_dir(run.folder / folder)
    return written


# -- finishing -------------------------------------------------------------------------------------------
def _finish(run: _Run, entries: list[_Entry], root: Path, out: Path, filtered: dict[str, int]) -> DatasetResult:
    if not entries:
        why = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(run.excluded.items()))
        raise NothingToExportError(f"every study with a signed report was excluded ({why}); nothing to write"
                                   + ("" if run.options.allow_burned_in
                                      or not (run.excluded[BURNED_IN] or run.excluded[BURNED_IN_RISK])
                                      else " (--allow-burned-in keeps studies with burned-in annotation)"))
    splits = assign_splits({e.patient: e.draw for e in entries}, run.options.shares)
    for entry in entries:
        entry.record["split"] = splits[entry.patient]
    records = sorted((e.record for e in entries), key=lambda r: str(r["study_uid"]))
    studies = {name: sum(1 for r in records if r["split"] == name) for name in SPLITS}
    patients = {name: len({p for p, s in splits.items() if s == name}) for name in SPLITS}
    images = sum(len(r["images"]) for r in records)  # type: ignore[arg-type]
    excluded = {reason: run.excluded[reason] for reason in EXCLUSION_REASONS}
    write_text_atomically(run.folder / MANIFEST_NAME, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    summary = {
        "format": FORMAT, "kind": "raddraft site dataset",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "studies": studies, "total_studies": len(records), "images": images,
        "patients": {**patients, "total": len(splits)}, "excluded": excluded,
        "burned_in_kept": run.burned_in_kept, "filtered": filtered, "options": run.options.as_dict(),
        "deidentification": {"profile": PROFILE_NAME, "dates": run.options.dates, "key_id": key_id(run.deid.key),
                             "log": LOG_NAME},
    }
    write_text_atomically(run.folder / SUMMARY_NAME, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log = {
        "profile": PROFILE_NAME, "dates": run.options.dates, **run.deid.log.as_dict(),
        "objects_without_pixel_data_skipped": run.objects_without_pixels,
        "warnings_withheld": dict(sorted(run.warnings.items())),
        "excluded_studies": sorted(run.excluded_studies, key=lambda e: (e["reason"], e["study_uid"])),
        "report_scrubbing": {"reports": len(records), **dict(sorted(run.scrubbed.items()))},
    }
    write_text_atomically(run.folder / LOG_NAME, json.dumps(log, indent=2, sort_keys=True) + "\n")
    fsync_dir(run.folder)
    return DatasetResult(out, studies, len(splits), images, excluded, filtered)


def _publish(temp: Path, out: Path, store_root: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; an existing one (empty, or any with `overwrite`) is replaced."""
    _check_output(out, store_root, overwrite)  # again: time has passed since the first check
    replace_folder(temp, out)

