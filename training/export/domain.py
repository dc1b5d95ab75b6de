"""The bundle's domain signature (engine.domain), computed from its training data after the graphs are written.

The features are the bundle's own ONNX vision graph on the images as the engine prepares them at run time
(not torch's, not the training cache's), so the check scores exactly what a draft would see. The
distribution comes from training images (fp32 graph); each variant's threshold from held-out validation
images through that variant's vision graph. `raddraft export --domain-data`, `raddraft train` and
`raddraft finetune` call `add_domain_signature`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dicom_node.durable import write_atomically, write_text_atomically
from engine import preprocess
from engine.bundle import MANIFEST_NAME, BundleManifest, read_manifest
from engine.domain import (
    DEFAULT_COMPONENTS,
    DEFAULT_PERCENTILE,
    METHOD,
    SIGNATURE_FILE,
    fit_signature,
    validation_threshold,
)
from engine.errors import EngineError
from training.export.errors import ExportError

log = logging.getLogger(__name__)

MAX_TRAIN_STUDIES = 2000
MAX_VALIDATION_STUDIES = 600
MIN_VALIDATION_STUDIES = 600  # a 99th percentile then stands on 6 studies above it
# progress(done, total)
Progress = Callable[[int, int], None]
StudyPaths = Sequence[Path]


def studies_of_manifest(manifest: Path) -> tuple[list[list[Path]], list[list[Path]]]:
    """(train, validation) image paths of a data manifest (`raddraft synth` or `raddraft dataset`)."""
    from training.train.studies import StudyDataError, read_studies

    try:
        studies = read_studies(Path(manifest), "domain")
    except StudyDataError as error:
        raise ExportError(str(error)) from None
    train = [study.paths for study in studies if study.split == "train"]
    validation = [study.paths for study in studies if study.split == "validation"]
    return train, validation


def add_domain_signature(bundle_dir: Path, train: Sequence[StudyPaths], validation: Sequence[StudyPaths], *,
                         source: str, percentile: float = DEFAULT_PERCENTILE,
                         components: int = DEFAULT_COMPONENTS, progress: Progress | None = None) -> dict:
    """Fit the signature on `train`, set thresholds on `validation` (a tenth of `train` held out when there is
    none; a short one topped up from `train`, `_held_out`) and write `domain.npz` and model.json's `domain`
    into the bundle. Returns the `domain` entry."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    train, validation = _held_out(list(train), list(validation))
    train, validation = _spread(train, MAX_TRAIN_STUDIES), _spread(validation, MAX_VALIDATION_STUDIES)
    total = len(train) + len(validation) * len(_vision_files(manifest))
    counter = _Counter(progress, total)
    fp32_vision = manifest.variants[manifest.default_variant].vision
    try:
        train_features = _features(bundle_dir / fp32_vision, manifest, train, counter)
        signature = fit_signature(train_features, components)
        thresholds = {}
        for vision_file, variants in _vision_files(manifest).items():
            held_out = _features(bundle_dir / vision_file, manifest, validation, counter)
            threshold = validation_threshold(signature, held_out, percentile)
            thresholds.update({variant: round(threshold, 4) for variant in variants})
    except EngineError as error:
        raise ExportError(f"domain signature of {bundle_dir}: {error}") from None
    signature = signature.with_thresholds(thresholds)
    write_atomically(bundle_dir / SIGNATURE_FILE, [signature.to_bytes()])
    entry = {"signature": SIGNATURE_FILE, "method": METHOD, "grid": signature.grid,
             "components": int(signature.components.shape[0]), "percentile": percentile,
             "thresholds": thresholds, "source": source,
             "studies": {"train": len(train), "validation": len(validation)}}
    _write_domain_entry(bundle_dir, entry)
    log.info("domain signature of %s: %d training, %d validation studies, thresholds %s", manifest.model_id,
             len(train), len(validation), thresholds)
    return entry


def _write_domain_entry(bundle_dir: Path, entry: dict) -> None:
    """Only the `domain` key of model.json changes (a version 1 manifest stays as it was written), checked
    by reading it back."""
    path = bundle_dir / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    version = data.pop("format_version", None)
    data["domain"] = entry
    if version is not None:
        data["format_version"] = version  # kept last, where the export writes it
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")
    read_manifest(bundle_dir)


def _held_out(train: list, validation: list) -> tuple[list, list]:
    """(fit, threshold) studies. A 99th percentile of a few dozen studies is little more than their maximum,
    so a short validation set is topped up to MIN_VALIDATION_STUDIES with training studies left out of the
    fit (at most a fifth of them)."""
    if not validation:
        if len(train) < 20:
            raise ExportError(f"a domain signature needs 20+ training studies, got {len(train)}")
        cut = len(train) - max(len(train) // 10, 2)
        return train[:cut], train[cut:]
    moved = min(max(MIN_VALIDATION_STUDIES - len(validation), 0), len(train) // 5)
    return train[:len(train) - moved], validation + train[len(train) - moved:]


def _spread(items: list, limit: int) -> list:
    """At most `limit` items, evenly spread over the list (a manifest is often ordered by something)."""
    if len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit)]


def _vision_files(manifest: BundleManifest) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for variant, graphs in manifest.variants.items():
        files.setdefault(graphs.vision, []).append(variant)
    return files


def _features(graph: Path, manifest: BundleManifest, studies: Sequence[StudyPaths], counter: _Counter) -> np.ndarray:
    """The image features [images, tokens, hidden] of every image the engine takes from each study."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])
    name, kind = session.get_inputs()[0].name, session.get_inputs()[0].type
    dtype = np.float16 if "float16" in kind else np.float32
    features = []
    for paths in studies:
        prepared = preprocess.prepare_study(preprocess.load_study(list(paths)), manifest.preprocessing)
        out = session.run(None, {name: prepared.pixel_values.astype(dtype)})[0]
        features.append(np.asarray(out, dtype=np.float32))
        counter.step()
    if not features:
        raise ExportError("no study to compute the domain signature from")
    return np.concatenate(features)


class _Counter:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self._progress, self._total, self._done = progress, total, 0

    def step(self) -> None:
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, self._total)
