"""Synthetic phantom chest radiograph studies with known findings and reference reports.

`generate_dataset(out_dir, studies, seed)` writes, under `out_dir`:

- `studies/NNNNNN/1_PA.dcm` (and `2_LL.dcm` when the study has a lateral): DX or CR DICOM files;
- `manifest.jsonl`: one study per line with `study_uid`, `images` (paths relative to `out_dir`), `views`,
  `labels` (every key of `training.vocabulary.LABEL_KEYS`: "present" or "absent"), `findings`
  (structured ground truth), `report` (`findings`, `impression`), `split` ("train", "validation",
  "test"), `patient_id`, `index`, `seed` and per-image encoding details;
- `dataset.json`: the options and the counts.

With `priors` (`raddraft synth --priors`) each study may have a prior study of the same patient (see
`training.data.longitudinal`): its DICOM files under `studies/NNNNNN/prior/`, and per study the manifest
gains `prior_study_uid`, `prior_date` (YYYY-MM-DD), `prior_images` (relative to `out_dir`), `prior_views`,
`prior_image_info`, `prior_report` (`findings`, `impression`), `prior_findings`, `prior_labels`, `change`
({finding key: new | increased | decreased | unchanged | resolved}) and `device_change` ({device: moved |
removed | new | unchanged}); all null for a study without a prior. `report_without_prior` is the report of the
same images by a reader who has not seen any prior (no comparison, no "no prior available"). The current study's images are the same as without
priors; its report compares with the prior (or says there is none). Without `priors` the output is the
same, byte for byte, as it always was.

Study i of seed s is the same whatever the number of studies asked for (its random streams derive from
(s, i) only), including its split. Generation runs in worker processes; the output is byte-identical for
any number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from training.data.comparison_reports import ComparisonReportWriter
from training.data.dicom_writer import (
    ImageEncoding,
    ImageIdentity,
    StudyIdentity,
    build_dataset,
    deterministic_uid,
    write_dicom,
)
from training.data.findings import Finding, FindingSampling, labels_from_findings, sample_findings
from training.data.longitudinal import PriorSampling, PriorSpec, plan_prior, prior_streams, render_prior
from training.data.render import FIELD_OF_VIEW_MM, Anatomy, render_frontal, render_lateral, sample_anatomy
from training.data.reports import ReportWriter

MANIFEST_NAME = "manifest.jsonl"
SPLITS = ("train", "validation", "test")
GIVEN_NAMES = ("ALEX", "BLAIR", "CASEY", "DANA", "EMERY", "FINLEY", "GRAY", "HARPER", "INDIGO", "JULES",
               "KAI", "LOGAN", "MORGAN", "NOOR", "OAKLEY", "PARKER", "QUINN", "REESE", "SAGE", "TATUM")


class PhantomError(ValueError):
    """Bad options for the phantom generator, or an output folder it must not write into."""


@dataclass(frozen=True)
class PhantomConfig:
    """Options of the phantom generator.

    image_size: pixels per side (square images); the anatomy scales with it. 256 leaves headroom above
        the 96-224 px the embedded model uses and keeps 1,000 studies well under a minute.
    lateral_fraction: share of studies with a lateral view besides the frontal one.
    ap_fraction: share of frontal views taken AP (bedside; devices are likelier) instead of PA.
    dx_fraction: share of studies stored as DX (the rest CR).
    monochrome1_fraction: share of images stored MONOCHROME1.
    transfer_syntax_weights: relative frequency of "explicit" (uncompressed), "jpeg2000" and "rle"
        (both lossless).
    split_fractions: train / validation / test shares.
    sampling: how findings are drawn (see `FindingSampling`).
    workers: processes to use; 0 means one per CPU.
    """

    image_size: int = 256
    lateral_fraction: float = 0.35
    ap_fraction: float = 0.3
    dx_fraction: float = 0.5
    monochrome1_fraction: float = 0.3
    transfer_syntax_weights: dict[str, float] = field(
        default_factory=lambda: {"explicit": 0.5, "jpeg2000": 0.25, "rle": 0.25})
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    sampling: FindingSampling = field(default_factory=FindingSampling)
    workers: int = 0

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 2048:
            raise PhantomError(f"image_size must lie in 32..2048, got {self.image_size}")
        for name in ("lateral_fraction", "ap_fraction", "dx_fraction", "monochrome1_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PhantomError(f"{name} must lie in 0..1, got {getattr(self, name)}")
        weights = self.transfer_syntax_weights
        if set(weights) - {"explicit", "jpeg2000", "rle"} or sum(weights.values()) <= 0 \
                or any(w < 0 for w in weights.values()):
            raise PhantomError("transfer_syntax_weights: keys explicit/jpeg2000/rle, non-negative, positive sum")
        if len(self.split_fractions) != 3 or any(f < 0 for f in self.split_fractions) \
                or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise PhantomError(f"split_fractions must be three non-negative shares summing to 1, "
                               f"got {self.split_fractions}")
        if self.workers < 0:
            raise PhantomError(f"workers must be >= 0, got {self.workers}")

    @property
    def pixel_spacing_mm(self) -> float:
        return round(FIELD_OF_VIEW_MM / self.image_size, 4)


@dataclass(frozen=True)
class StudySpec:
    """Everything that decides one study; rendering and writing are pure functions of it."""

    seed: int
    index: int
    findings: tuple[Finding, ...]
    frontal_view: str               # "PA" or "AP"
    lateral: bool
    encodings: tuple[ImageEncoding, ...]  # one per image: frontal first
    split: str
    identity: StudyIdentity


@dataclass(frozen=True)
class DatasetSummary:
    out_dir: Path
    manifest: Path
    studies: int
    images: int
    splits: dict[str, int]
    prior_studies: int = 0  # with priors: the studies that have one, and its images
    prior_images: int = 0


def study_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent random streams of one study, derived from (seed, index) only."""
    names = ("plan", "anatomy", "frontal", "lateral", "report")
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def plan_study(seed: int, index: int, config: PhantomConfig,
               findings: Iterable[Finding] | None = None) -> StudySpec:
    """Draw the views, encodings, identity, split and (unless given) the findings of study `index`."""
    rng = study_streams(seed, index)["plan"]
    frontal = "AP" if rng.random() < config.ap_fraction else "PA"
    lateral = bool(rng.random() < config.lateral_fraction) and frontal == "PA"
    drawn = sample_findings(rng, config.sampling, ap_view=frontal == "AP")
    chosen = tuple(findings) if findings is not None else drawn
    modality = "DX" if rng.random() < config.dx_fraction else "CR"
    syntaxes = list(config.transfer_syntax_weights)
    weights = np.array([config.transfer_syntax_weights[s] for s in syntaxes], dtype=float)
    encodings = tuple(
        ImageEncoding(modality=modality,
                      photometric="MONOCHROME1" if rng.random() < config.monochrome1_fraction else "MONOCHROME2",
                      bits_stored=int(rng.choice([12, 12, 14, 15, 16])),
                      transfer_syntax=syntaxes[int(rng.choice(len(syntaxes), p=weights / weights.sum()))])
        for _ in range(2 if lateral else 1)
    )
    u = rng.random()
    train, validation, _ = config.split_fractions
    split = "train" if u < train else ("validation" if u < train + validation else "test")
    return StudySpec(seed=seed, index=index, findings=chosen, frontal_view=frontal, lateral=lateral,
                     encodings=encodings, split=split, identity=_identity(rng, seed, index, frontal, lateral))


def _identity(rng: np.random.Generator, seed: int, index: int, frontal: str, lateral: bool) -> StudyIdentity:
    birth = date(1935, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 70)))
    study_day = date(2023, 1, 1) + timedelta(days=int(rng.integers(0, 730)))
    seconds = int(rng.integers(7 * 3600, 22 * 3600))
    given = GIVEN_NAMES[int(rng.integers(len(GIVEN_NAMES)))]
    views = f"{frontal} AND LATERAL" if lateral else frontal
    return StudyIdentity(
        patient_name=f"PHANTOM^{given}^{index:06d}",
        patient_id=f"PH{seed % 10000:04d}{index:06d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=str(rng.choice(["F", "M"])),
        study_uid=deterministic_uid("raddraft-phantom-study", seed, index),
        study_date=study_day.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"A{seed % 1000:03d}{index:07d}",
        study_id=str(index + 1),
        description=f"XR CHEST {views}",
    )


def render_study(spec: StudySpec, config: PhantomConfig,
                 anatomy: Anatomy | None = None) -> list[tuple[str, np.ndarray]]:
    """The (view, 0..1 image) pairs of a study, frontal first."""
    streams = study_streams(spec.seed, spec.index)
    anatomy = anatomy or sample_anatomy(streams["anatomy"])
    views = [(spec.frontal_view, render_frontal(anatomy, spec.findings, config.image_size, streams["frontal"]))]
    if spec.lateral:
        views.append(("LL", render_lateral(anatomy, spec.findings, config.image_size, streams["lateral"])))
    return views


def write_study(spec: StudySpec, out_dir: Path, config: PhantomConfig) -> dict[str, object]:
    """Render, write the DICOM files and return the study's manifest record."""
    images, image_info = [], []
    for number, ((view, image), encoding) in enumerate(zip(render_study(spec, config), spec.encodings), 1):
        relative = f"studies/{spec.index:06d}/{number}_{view}.dcm"
        ident = ImageIdentity(
            series_uid=deterministic_uid("raddraft-phantom-series", spec.seed, spec.index, number),
            series_number=number,
            sop_instance_uid=deterministic_uid("raddraft-phantom-image", spec.seed, spec.index, number),
            view=view,
        )
        ds = build_dataset(image, spec.identity, ident, encoding, config.pixel_spacing_mm)
        write_dicom(out_dir / relative, ds, encoding)
        images.append(relative)
        image_info.append({"path": relative, "view": view, "sop_instance_uid": ident.sop_instance_uid,
                           **dataclasses.asdict(encoding)})
    report = ReportWriter(study_streams(spec.seed, spec.index)["report"]).write(spec.findings)
    return {
        "study_uid": spec.identity.study_uid,
        "index": spec.index,
        "seed": spec.seed,
        "patient_id": spec.identity.patient_id,
        "split": spec.split,
        "images": images,
        "views": [info["view"] for info in image_info],
        "image_info": image_info,
        "labels": labels_from_findings(spec.findings),
        "findings": [f.to_dict() for f in spec.findings],
        "report": report,
    }


PRIOR_FIELDS = ("prior_study_uid", "prior_date", "prior_images", "prior_views", "prior_image_info", "prior_report",
                "prior_findings", "prior_labels", "change", "device_change")


def write_study_with_prior(spec: StudySpec, out_dir: Path, config: PhantomConfig,
                           sampling: PriorSampling) -> dict[str, object]:
    """`write_study`, plus the prior study (if the study has one) and a report that compares with it."""
    record = write_study(spec, out_dir, config)
    prior = plan_prior(spec.seed, spec.index, spec.findings, spec.identity, spec.encodings[0].modality,
                       config.sampling, sampling, config.lateral_fraction, config.monochrome1_fraction)
    writer = ComparisonReportWriter(study_streams(spec.seed, spec.index)["report"], sampling.wording)
    record.update(dict.fromkeys(PRIOR_FIELDS))
    # what a reader who has not seen the prior writes of these images: the target of a findings prompt
    # that takes no prior (a bundle whose impression, drafted from the findings, makes the comparison)
    record["report_without_prior"] = record["report"]
    if prior is None:
        record["report"] = writer.write_without_prior(spec.findings)
        return record
    record["report"] = writer.write_with_prior(spec.findings, prior)
    record.update(_write_prior(spec, prior, out_dir, config))
    return record


def _write_prior(spec: StudySpec, prior: PriorSpec, out_dir: Path, config: PhantomConfig) -> dict[str, object]:
    anatomy = sample_anatomy(study_streams(spec.seed, spec.index)["anatomy"])  # the patient's own
    images, image_info = [], []
    views = render_prior(prior, spec.seed, spec.index, anatomy, config.image_size)
    for number, ((view, image), encoding) in enumerate(zip(views, prior.encodings), 1):
        relative = f"studies/{spec.index:06d}/prior/{number}_{view}.dcm"
        ident = ImageIdentity(
            series_uid=deterministic_uid("raddraft-phantom-prior-series", spec.seed, spec.index, number),
            series_number=number,
            sop_instance_uid=deterministic_uid("raddraft-phantom-prior-image", spec.seed, spec.index, number),
            view=view,
        )
        write_dicom(out_dir / relative, build_dataset(image, prior.identity, ident, encoding, config.pixel_spacing_mm),
                    encoding)
        images.append(relative)
        image_info.append({"path": relative, "view": view, "sop_instance_uid": ident.sop_instance_uid,
                           **dataclasses.asdict(encoding)})
    report = ReportWriter(prior_streams(spec.seed, spec.index)["report"]).write(prior.findings)
    return {
        "prior_study_uid": prior.identity.study_uid,
        "prior_date": prior.date_text,
        "prior_images": images,
        "prior_views": [info["view"] for info in image_info],
        "prior_image_info": image_info,
        "prior_report": report,
        "prior_findings": [f.to_dict() for f in prior.findings],
        "prior_labels": labels_from_findings(prior.findings),
        "change": dict(prior.change),
        "device_change": dict(prior.device_change),
    }


def _write_one(job: tuple[int, int, Path, PhantomConfig, PriorSampling | None]) -> dict[str, object]:
    seed, index, out_dir, config, priors = job
    spec = plan_study(seed, index, config)
    if priors is None:
        return write_study(spec, out_dir, config)
    return write_study_with_prior(spec, out_dir, config, priors)


def generate_dataset(out_dir: Path | str, studies: int, seed: int, image_size: int | None = None,
                     config: PhantomConfig | None = None,
                     progress: Callable[[int], None] | None = None,
                     priors: bool | PriorSampling = False) -> DatasetSummary:
    """Write `studies` phantom studies and their manifest under `out_dir` (see the module docstring).

    `image_size` overrides `config.image_size`. `progress(n)` is called as studies complete. An existing
    phantom data set in `out_dir` is replaced; a non-empty folder that is not one is refused. `priors`
    (True, or a `PriorSampling`) adds prior studies and comparison reports.
    """
    prior_sampling = PriorSampling() if priors is True else (priors or None)
    config = config or PhantomConfig()
    if image_size is not None:
        config = dataclasses.replace(config, image_size=image_size)
    if studies < 1:
        raise PhantomError(f"studies must be >= 1, got {studies}")
    if seed < 0:
        raise PhantomError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    _prepare_output(out)
    jobs = [(seed, i, out, config, prior_sampling) for i in range(studies)]
    workers = min(config.workers or os.cpu_count() or 1, max(1, studies // 8))
    records = []
    if workers == 1:
        for job in jobs:
            records.append(_write_one(job))
            if progress:
                progress(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(_write_one, jobs, chunksize=max(1, min(32, studies // (workers * 8)))):
                records.append(record)
                if progress:
                    progress(1)
    manifest = out / MANIFEST_NAME
    tmp = manifest.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(manifest)
    splits = {s: sum(1 for r in records if r["split"] == s) for s in SPLITS}
    summary = DatasetSummary(out, manifest, len(records), sum(len(r["images"]) for r in records), splits,
                             prior_studies=sum(1 for r in records if r.get("prior_study_uid")),
                             prior_images=sum(len(r.get("prior_images") or ()) for r in records))
    _write_description(out, seed, config, summary, prior_sampling)
    return summary


def _prepare_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PhantomError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).exists():
            raise PhantomError(f"{out} is not empty and holds no phantom data set ({MANIFEST_NAME}); "
                               "choose an empty or new folder")
        shutil.rmtree(out / "studies", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_description(out: Path, seed: int, config: PhantomConfig, summary: DatasetSummary,
                       priors: PriorSampling | None) -> None:
    options = dataclasses.asdict(config)
    description = {"generator": "raddraft phantoms", "seed": seed, "options": options,
                   "studies": summary.studies, "images": summary.images, "splits": summary.splits}
    if priors is not None:
        options = dataclasses.asdict(priors)
        if options["wording"] == "varied":  # a set in the varied wording is described as it was before the option
            del options["wording"]
        description["priors"] = {"options": options, "with_prior": summary.prior_studies,
                                 "prior_images": summary.prior_images}
    (out / "dataset.json").write_text(json.dumps(description, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(path: Path | str) -> list[dict[str, object]]:
    """The records of a manifest (or of any JSONL file), in order."""
    records = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise PhantomError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return records
