"""`raddraft dataset --from-store STORE --out DIR`: the de-identified training dataset of a site's signed
reports (DICOM PS3.15 Basic Profile), split by patient.

Exit status: 0 done; 1 nothing to export (no signed report after the filters, or all excluded) or the
build failed; 2 bad arguments, store not found, or an output folder that must not be written.
With `--progress json`, stdout carries only JSON lines (the app's Models page reads them):
{"event": "progress", ...} while it runs, then {"event": "result", ...} or {"event": "error", ...}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

HELP = ("build a de-identified training dataset (images + signed reports, DICOM PS3.15 Basic Profile) "
        "from the store, split by patient")


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a share lies in [0, 1), got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-store", dest="from_store", type=Path, required=True, metavar="STORE",
                        help="the store folder (its signed reports and images)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                        help="only reports signed on or after this day (local time)")
    parser.add_argument("--modality", dest="modalities", action="extend", nargs="+", default=[], metavar="MOD",
                        help="only studies with a series of this modality (repeatable, e.g. --modality DX CR)")
    parser.add_argument("--dates", choices=["shift", "remove"], default="shift",
                        help="shift dates by a per-patient offset (default; keeps intervals) or remove them")
    parser.add_argument("--allow-burned-in", action="store_true",
                        help="keep studies flagged Burned In Annotation = YES and those of modalities that usually "
                             "carry burned-in text (US, XA, RF, ES, secondary capture) without Burned In "
                             "Annotation = NO (burned-in text is NOT removed)")
    parser.add_argument("--link-by-name-and-birth-date", action="store_true",
                        help="treat studies with the same patient name and birth date as one patient (besides "
                             "Other Patient IDs): one pseudonym, one split")
    parser.add_argument("--validation-share", type=_share, default=0.1, metavar="SHARE",
                        help="share of patients in the validation split (default 0.1)")
    parser.add_argument("--test-share", type=_share, default=0.1, metavar="SHARE",
                        help="share of patients in the test split (default 0.1; from 3 patients on there is one)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    parser.add_argument("--progress", choices=["bar", "json", "none"], default="bar",
                        help="bar: a progress bar on stderr; json: JSON lines on stdout; none")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"store.root": str(args.from_store)}


def run(args: argparse.Namespace, config) -> int:
    import logging

    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # it logs every decoded tile at INFO
    from training.site.dataset import (
        DatasetError,
        DatasetOptions,
        NothingToExportError,
        OutputError,
        StoreNotFoundError,
        build_site_dataset,
    )
    from training.site.split import SplitError, SplitShares

    reporter = _Reporter(args.progress)
    try:
        options = DatasetOptions(since=args.since, modalities=tuple(args.modalities), dates=args.dates,
                                 allow_burned_in=args.allow_burned_in, overwrite=args.overwrite,
                                 link_by_name_and_birth_date=args.link_by_name_and_birth_date,
                                 shares=SplitShares(validation=args.validation_share, test=args.test_share))
        result = build_site_dataset(config.store, args.out, options, progress=reporter.progress)
    except (SplitError, StoreNotFoundError, OutputError) as exc:
        return reporter.fail(str(exc), 2)
    except (NothingToExportError, DatasetError) as exc:
        return reporter.fail(str(exc), 1)
    except OSError as exc:
        return reporter.fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    finally:
        reporter.close()
    reporter.result(result)
    return 0


class _Reporter:
    """Progress and the outcome: a tqdm bar and a line, or JSON lines on stdout."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bar = None

    def progress(self, done: int, total: int) -> None:
        if self.mode == "json":
            _emit({"event": "progress", "task": "dataset", "done": done, "total": total})
        elif self.mode == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="dataset", unit="study", file=sys.stderr, disable=None)
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def fail(self, message: str, status: int) -> int:
        print(f"raddraft dataset: {message}", file=sys.stderr)
        if self.mode == "json":
            _emit({"event": "error", "message": message, "exit": status})
        return status

    def result(self, result) -> None:
        if self.mode == "json":
            _emit({"event": "result", "out": str(result.out), "studies": result.studies,
                   "excluded": result.excluded, "patients": result.patients, "images": result.images})
        else:
            print(result.line())


def _emit(event: dict[str, object]) -> None:
    print(json.dumps(event), flush=True)
