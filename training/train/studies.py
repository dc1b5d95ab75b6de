"""Studies for training: manifests (generated phantom sets or given ones) and their decoded pixels.

Pixels come from `engine.preprocess` (the engine's own DICOM-to-tensor path), so training sees exactly
what the engine sees at run time. Decoding every epoch would be slow, so each data set's pixels are
decoded once into a cache file keyed by the manifest's content, the chosen studies and the preprocessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicom_node.durable import write_atomically, write_text_atomically
from engine.bundle import Preprocessing
from engine.prompts import PriorInput
from training.train.config import DataSource, PhantomSet, TestSet
from training.vocabulary import LABEL_KEYS

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the view kinds each study's images fill
REQUEST_NAME = "phantom-request.json"
Progress = Callable[[int], None]


class StudyDataError(ValueError):
    """A manifest or its images cannot be used for training (missing fields, unreadable images)."""


@dataclass(frozen=True)
class Study:
    """One study of a manifest: where its images are, its reference report and its ground truth."""

    uid: str
    source: str
    manifest: Path
    images: tuple[str, ...]
    split: str
    findings_text: str
    impression_text: str
    labels: Mapping[str, str]
    findings: tuple[Mapping, ...]
    indication: str | None = None  # the reason for the exam, when the manifest records one
    # the patient's previous study (manifest `prior_*`: date, report, images relative to the manifest's
    # folder) and the per-finding change against it (`change`); None / {} without a prior
    prior: PriorInput | None = None
    change: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # what happened to each device (manifest `device_change`: moved, removed, new, unchanged); a study whose
    # device only moved has no `support_device` change, and the comparison metric leaves devices out of it
    device_change: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # the findings as a reader who has not seen the prior writes them (manifest `report_without_prior`;
    # None: the manifest has no such text, and `findings_text` stands for it)
    findings_without_prior: str | None = None

    @property
    def root(self) -> Path:
        """Image paths are relative to the manifest's folder."""
        return self.manifest.parent

    @property
    def paths(self) -> list[Path]:
        return [self.root / image for image in self.images]

    def reference(self) -> dict[str, object]:
        """The study as `training.evaluation.metrics.evaluate` expects a reference."""
        reference: dict[str, object] = {"study_uid": self.uid, "report": {"findings": self.findings_text,
                                                                          "impression": self.impression_text},
                                        "labels": dict(self.labels)}
        if self.prior is not None:
            reference.update(prior_study_uid=self.prior.study_uid, prior_date=self.prior.date, change=dict(self.change),
                             device_change=dict(self.device_change))
        return reference


def study_from_record(record: Mapping, source: str, manifest: Path, where: str) -> Study:
    try:
        report = record["report"]
        return Study(uid=str(record["study_uid"]), source=source, manifest=manifest,
                     images=tuple(str(p) for p in record["images"]), split=str(record.get("split", "train")),
                     findings_text=str(report["findings"]), impression_text=str(report["impression"]),
                     labels=dict(record.get("labels") or {}), findings=tuple(record.get("findings") or ()),
                     indication=" ".join(str(record.get("indication") or "").split()) or None,
                     prior=prior_from_record(record, manifest.parent), change=dict(record.get("change") or {}),
                     device_change=dict(record.get("device_change") or {}),
                     findings_without_prior=_findings_without_prior(record))
    except (KeyError, TypeError) as exc:
        raise StudyDataError(f"{where}: a study lacks {exc} (needs study_uid, images, report.findings, "
                             f"report.impression)") from None


def _findings_without_prior(record: Mapping) -> str | None:
    report = record.get("report_without_prior")
    if not isinstance(report, Mapping) or not str(report.get("findings") or "").strip():
        return None
    return str(report["findings"])


def prior_from_record(record: Mapping, root: Path) -> PriorInput | None:
    """The manifest's prior of a study (`prior_study_uid`, `prior_date`, `prior_images`, `prior_report`)."""
    if not record.get("prior_study_uid"):
        return None
    report = record.get("prior_report") or {}
    return PriorInput(date=str(record.get("prior_date") or ""), findings=str(report.get("findings") or ""),
                      impression=str(report.get("impression") or ""),
                      image_paths=tuple(root / str(p) for p in record.get("prior_images") or ()),
                      study_uid=str(record["prior_study_uid"]))


def read_studies(manifest: Path, source: str) -> list[Study]:
    """All studies of a manifest; image paths are relative to the manifest's folder."""
    from training.data.phantoms import PhantomError, read_manifest

    try:
        records = read_manifest(manifest)
    except (OSError, PhantomError) as exc:
        raise StudyDataError(f"cannot read manifest {manifest}: {exc}") from None
    studies = [study_from_record(r, source, manifest, f"{manifest}:{i + 1}") for i, r in enumerate(records)]
    if not studies:
        raise StudyDataError(f"manifest {manifest} holds no studies")
    return studies


def has_ground_truth(study: Study) -> bool:
    return all(study.labels.get(key) for key in LABEL_KEYS)


# ------------------------------------------------------------------------------------------ phantoms
def ensure_phantoms(spec: PhantomSet, out_dir: Path, progress: Progress | None = None) -> Path:
    """The manifest of the phantom set `spec` in `out_dir`, generated unless the same request is there."""
    from training.data.findings import FindingSampling
    from training.data.longitudinal import PriorSampling
    from training.data.phantoms import MANIFEST_NAME, PhantomConfig, generate_dataset

    asked = dataclasses.asdict(spec)
    if not spec.priors:  # the request of a set without priors reads as it did before the option existed
        del asked["priors"]
    if spec.wording == "varied":  # and so does one in the varied wording
        del asked["wording"]
    request = json.dumps(asked, sort_keys=True)
    manifest, request_file = out_dir / MANIFEST_NAME, out_dir / REQUEST_NAME
    if manifest.is_file() and request_file.is_file() and request_file.read_text(encoding="utf-8") == request:
        return manifest
    config = PhantomConfig(image_size=spec.image_size, lateral_fraction=spec.lateral_fraction,
                           sampling=FindingSampling(normal_fraction=spec.normal_fraction), workers=spec.workers)
    log.info("generating %d phantom studies (seed %d) in %s", spec.studies, spec.seed, out_dir)
    request_file.unlink(missing_ok=True)
    priors = PriorSampling(wording=spec.wording) if spec.priors else False
    generate_dataset(out_dir, spec.studies, spec.seed, config=config, progress=progress, priors=priors)
    write_text_atomically(request_file, request)
    return manifest


def source_manifest(source: DataSource | TestSet, data_dir: Path, progress: Progress | None = None) -> Path:
    if source.manifest is not None:
        if not source.manifest.is_file():
            raise StudyDataError(f"data source {source.name}: manifest {source.manifest} not found")
        return source.manifest
    if source.phantoms is None:
        raise StudyDataError(f"data source {source.name}: no manifest and no phantoms")
    return ensure_phantoms(source.phantoms, data_dir / source.name, progress)


# ------------------------------------------------------------------------------------------- pixels
@dataclass
class PixelStore:
    """Preprocessed images of a list of studies: study i owns images[offsets[i]:offsets[i + 1]].

    Grey images are kept with one channel (the three normalised channels are equal) and expanded on use.
    views: the view kinds each study's images fill, as the engine selects them (the prompt variant follows
    them; a stitched study has one image but may fill two views).
    """

    images: np.ndarray   # float32 [total_images, 1 or 3, S, S]
    offsets: np.ndarray  # int64 [studies + 1]
    views: tuple[tuple[str, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def num_images(self, study: int) -> int:
        return int(self.offsets[study + 1] - self.offsets[study])

    def study_views(self, study: int, default: tuple[str, ...]) -> tuple[str, ...]:
        """The views study `study` fills (`default[:num_images]` for a store without view records)."""
        if self.views:
            return self.views[study]
        return tuple(default[:self.num_images(study)])

    def pixels(self, study: int) -> np.ndarray:
        block = self.images[self.offsets[study]:self.offsets[study + 1]]
        return np.repeat(block, 3, axis=1) if block.shape[1] == 1 else block

    def subset(self, studies: Sequence[int]) -> PixelStore:
        blocks = [self.images[self.offsets[i]:self.offsets[i + 1]] for i in studies]
        sizes = np.concatenate([[0], [len(b) for b in blocks]])
        images = np.concatenate(blocks) if blocks else self.images[:0]
        views = tuple(self.views[i] for i in studies) if self.views else ()
        return PixelStore(images, np.cumsum(sizes).astype(np.int64), views)

    @staticmethod
    def concat(stores: Sequence[PixelStore]) -> PixelStore:
        channels = max(s.images.shape[1] for s in stores)
        images = np.concatenate([np.repeat(s.images, channels, axis=1) if s.images.shape[1] != channels
                                 else s.images for s in stores])
        sizes = np.concatenate([[0]] + [np.diff(s.offsets) for s in stores])
        views = tuple(v for s in stores for v in s.views) if all(s.views for s in stores) else ()
        return PixelStore(images, np.cumsum(sizes).astype(np.int64), views)


def study_pixels(study: Study, prep: Preprocessing) -> np.ndarray:
    """The study's model input [n, 3, S, S] through the engine's preprocessing."""
    return study_input(study, prep)[0]


def study_input(study: Study, prep: Preprocessing) -> tuple[np.ndarray, tuple[str, ...]]:
    """The study's model input [n, 3, S, S] and the views its images fill, as the engine prepares them."""
    from engine import preprocess

    try:
        datasets = preprocess.load_study(study.paths)
        prepared = preprocess.prepare_study(datasets, prep)
        return np.asarray(prepared.pixel_values, dtype=np.float32), tuple(prepared.views)
    except Exception as exc:
        raise StudyDataError(f"study {study.uid} ({study.root}): cannot preprocess its images: {exc}") from exc


def _squeeze_channels(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[1] == 3 and np.array_equal(pixels[:, 0], pixels[:, 1]) and np.array_equal(pixels[:, 0],
                                                                                               pixels[:, 2]):
        return pixels[:, :1]
    return pixels


def cache_key(studies: Sequence[Study], prep: Preprocessing) -> str:
    """Changes with the manifests' content, the studies chosen (and their order) and the preprocessing."""
    digest = hashlib.sha256()
    digest.update(f"format {CACHE_FORMAT}\n".encode())
    for manifest in sorted({s.manifest for s in studies}):
        digest.update(hashlib.sha256(manifest.read_bytes()).digest())
    digest.update(json.dumps([[str(s.manifest), s.uid, list(s.images)] for s in studies]).encode())
    digest.update(json.dumps(dataclasses.asdict(prep), sort_keys=True).encode())
    return digest.hexdigest()[:20]


def decode_studies(studies: Sequence[Study], prep: Preprocessing, progress: Progress | None = None) -> PixelStore:
    blocks, sizes, views = [], [0], []
    for study in studies:
        pixels, filled = study_input(study, prep)
        pixels = _squeeze_channels(pixels)
        blocks.append(pixels)
        sizes.append(len(pixels))
        views.append(filled)
        if progress:
            progress(1)
    channels = max(b.shape[1] for b in blocks)
    images = np.concatenate([np.repeat(b, channels, axis=1) if b.shape[1] != channels else b for b in blocks])
    return PixelStore(np.ascontiguousarray(images), np.cumsum(sizes).astype(np.int64), tuple(views))


def _save_store(store: PixelStore, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, images=store.images, offsets=store.offsets, views=np.array(json.dumps(store.views)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, [buffer.getbuffer()])


def _load_store(path: Path) -> PixelStore:
    with np.load(path) as data:
        views = tuple(tuple(v) for v in json.loads(str(data["views"]))) if "views" in data else ()
        return PixelStore(data["images"], data["offsets"], views)


def decode_priors(studies: Sequence[Study], prep: Preprocessing, progress: Progress | None = None) -> PixelStore:
    """The prior frontal image of each study (none for a study without a prior), as the engine takes it."""
    from engine import preprocess

    size = prep.image_size
    blocks, sizes = [np.zeros((0, 1, size, size), dtype=np.float32)], [0]
    for study in studies:
        count = 0
        if study.prior is not None and study.prior.image_paths:
            try:
                datasets = preprocess.load_study(list(study.prior.image_paths))
                pixels = np.asarray(preprocess.prepare_prior_frontal(datasets, prep).pixel_values[:1], np.float32)
            except Exception as exc:
                raise StudyDataError(f"study {study.uid}: cannot preprocess its prior's images: {exc}") from exc
            blocks.append(_squeeze_channels(pixels))
            count = 1
        sizes.append(count)
        if progress:
            progress(1)
    channels = max(b.shape[1] for b in blocks)
    images = np.concatenate([np.repeat(b, channels, axis=1) if b.shape[1] != channels else b for b in blocks])
    return PixelStore(np.ascontiguousarray(images), np.cumsum(sizes).astype(np.int64))


def cached_prior_pixels(name: str, studies: Sequence[Study], prep: Preprocessing, cache_dir: Path,
                        progress: Progress | None = None) -> PixelStore | None:
    """The prior frontal images of `studies` (None when none has a prior), decoded once and cached."""
    with_prior = [s for s in studies if s.prior is not None]
    if not with_prior:
        return None
    digest = hashlib.sha256(cache_key(studies, prep).encode())
    digest.update(json.dumps([[str(p) for p in s.prior.image_paths] if s.prior else [] for s in studies]).encode())
    path = cache_dir / f"{name}-priors-{digest.hexdigest()[:20]}.npz"
    return _cached_store(path, len(studies), lambda: decode_priors(studies, prep, progress), "prior pixel cache")


def cached_pixels(name: str, studies: Sequence[Study], prep: Preprocessing, cache_dir: Path,
                  progress: Progress | None = None) -> PixelStore:
    """The pixels of `studies`, decoded once and cached under `cache_dir`."""
    path = cache_dir / f"{name}-{cache_key(studies, prep)}.npz"
    return _cached_store(path, len(studies), lambda: decode_studies(studies, prep, progress), "pixel cache")


def _cached_store(path: Path, count: int, decode: Callable[[], PixelStore], what: str) -> PixelStore:
    """The store cached at `path` when it is readable and holds `count` studies; else decoded and cached."""
    if path.is_file():
        try:
            store = _load_store(path)
            if len(store) == count:
                return store
        except (OSError, ValueError, KeyError):
            log.warning("%s %s is unreadable; decoding again", what, path)
    store = decode()
    _save_store(store, path)
    return store


# -------------------------------------------------------------------------------------------- pools
@dataclass
class Pool:
    """Studies with their pixels (study i's images are `pixels.pixels(i)`) and per-study mix weights."""

    studies: list[Study]
    pixels: PixelStore
    weights: list[float]
    prior_pixels: PixelStore | None = None  # study i's prior frontal image (none without a prior)

    def __len__(self) -> int:
        return len(self.studies)

    def subset(self, indices: Sequence[int]) -> Pool:
        priors = self.prior_pixels.subset(indices) if self.prior_pixels is not None else None
        return Pool([self.studies[i] for i in indices], self.pixels.subset(indices),
                    [self.weights[i] for i in indices], priors)

    @staticmethod
    def concat(pools: Sequence[Pool]) -> Pool:
        priors = None
        if any(p.prior_pixels is not None for p in pools):
            priors = PixelStore.concat([p.prior_pixels if p.prior_pixels is not None else _no_priors(p)
                                        for p in pools])
        return Pool([s for p in pools for s in p.studies], PixelStore.concat([p.pixels for p in pools]),
                    [w for p in pools for w in p.weights], priors)


def _no_priors(pool: Pool) -> PixelStore:
    size = pool.pixels.images.shape[-1]
    return PixelStore(np.zeros((0, 1, size, size), dtype=np.float32), np.zeros(len(pool) + 1, dtype=np.int64))


def source_pool(source: DataSource | TestSet, prep: Preprocessing, data_dir: Path, cache_dir: Path,
                progress: Progress | None = None) -> Pool:
    """Every study of a data source with its pixels (decoded once, then cached)."""
    manifest = source_manifest(source, data_dir)
    studies = read_studies(manifest, source.name)
    pixels = cached_pixels(source.name, studies, prep, cache_dir, progress)
    priors = cached_prior_pixels(source.name, studies, prep, cache_dir)
    weight = getattr(source, "weight", 1.0)
    return Pool(studies, pixels, [weight] * len(studies), priors)


def split_pool(pool: Pool, split: str, limit: int = 0) -> Pool:
    indices = [i for i, s in enumerate(pool.studies) if split == "all" or s.split == split]
    return pool.subset(indices[:limit] if limit else indices)


def training_pools(sources: Sequence[DataSource], prep: Preprocessing, data_dir: Path, cache_dir: Path,
                   validation_limit: int = 0, progress: Progress | None = None) -> tuple[Pool, Pool]:
    """(train, validation): the `train` and `validation` splits of every source."""
    pools = [source_pool(source, prep, data_dir, cache_dir, progress) for source in sources]
    train = Pool.concat([split_pool(p, "train") for p in pools])
    validation = Pool.concat([split_pool(p, "validation") for p in pools])
    if not train.studies:
        raise StudyDataError("the data sources hold no study of the train split")
    if validation_limit:
        validation = validation.subset(range(min(validation_limit, len(validation))))
    return train, validation
