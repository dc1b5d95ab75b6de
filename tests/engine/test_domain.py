"""The out-of-domain check: the signature's maths, its file, bundles without one, and the embedded model's
signature on phantoms it never saw, corrupted phantoms and real images nobody here made."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from engine.domain import (
    SIGNATURE_FILE,
    UNKNOWN,
    fit_signature,
    pool_features,
    read_signature,
    state_from_dict,
    validation_threshold,
)
from engine.errors import BundleError
from engine.runtime import load_model
from engine.settings import EngineSettings
from raddraft.resources import embedded_model_dir
from tests.embedded_model import EMBEDDED_ID

CPU = EngineSettings(providers=("cpu",), variant="fp32")


def _features(rng: np.random.Generator, count: int, shift: float = 0.0) -> np.ndarray:
    """[count, 16 tokens, 8 hidden]: a fixed 'anatomy' per token position plus noise."""
    layout = np.linspace(-1, 1, 16 * 8).reshape(16, 8)
    return layout + shift + 0.1 * rng.standard_normal((count, 16, 8))


def test_grid_pooling_keeps_where_features_are() -> None:
    features = np.zeros((1, 16, 2))
    features[0, 0] = 1.0  # top-left token only
    pooled = pool_features(features, 2)
    assert pooled.shape == (1, 8)
    assert pooled[0, :2].tolist() == [0.25, 0.25] and not pooled[0, 2:].any()
    assert pool_features(features, 1).tolist() == [[1 / 16, 1 / 16]]


def test_threshold_is_the_validation_percentile_and_shifted_features_score_higher() -> None:
    rng = np.random.default_rng(0)
    signature = fit_signature(_features(rng, 400), components=16)
    validation = _features(rng, 200)
    threshold = validation_threshold(signature, validation, 99.0)
    distances = signature.distances(validation)
    assert np.mean(distances <= threshold) == pytest.approx(0.99, abs=0.006)
    signature = signature.with_thresholds({"fp32": threshold})
    unseen = signature.distances(_features(rng, 200))
    shifted = signature.distances(_features(rng, 50, shift=0.3))
    flipped = signature.distances(-_features(rng, 50))
    assert np.mean(unseen <= threshold) >= 0.97
    assert shifted.min() > threshold and flipped.min() > threshold
    state = signature.state(_features(rng, 1, shift=0.3), "fp32")
    assert state.in_domain is False and state.score > state.threshold


def test_signature_file_round_trips_and_a_broken_one_is_a_bundle_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    signature = fit_signature(_features(rng, 100), components=8).with_thresholds({"fp32": 5.0, "int8": 6.0})
    (tmp_path / SIGNATURE_FILE).write_bytes(signature.to_bytes())
    again = read_signature(tmp_path, SIGNATURE_FILE)
    sample = _features(rng, 3)
    assert np.allclose(again.distances(sample), signature.distances(sample), rtol=1e-5)
    assert again.threshold("int8") == 6.0 and again.threshold("fp16") == 5.0  # unknown variant: fp32's
    assert read_signature(tmp_path, None) is None
    (tmp_path / SIGNATURE_FILE).write_bytes(b"not a signature")
    with pytest.raises(BundleError, match="not a domain signature"):
        read_signature(tmp_path, SIGNATURE_FILE)
    with pytest.raises(BundleError, match="missing"):
        read_signature(tmp_path, "../elsewhere.npz")


def test_a_stored_state_reads_back_and_anything_else_is_unknown() -> None:
    assert state_from_dict({"in_domain": False, "score": 3, "threshold": 2.5}).in_domain is False
    assert state_from_dict(None) == UNKNOWN and state_from_dict({"in_domain": "yes"}) == UNKNOWN
    assert UNKNOWN.to_dict() == {"in_domain": None, "score": None, "threshold": None}


# -- the embedded model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded():
    model = load_model(embedded_model_dir(), CPU)
    if model.domain_signature is None:
        pytest.fail("the embedded bundle has no domain signature (resources/models/*/domain.npz)")
    return model


@pytest.fixture(scope="module")
def unseen_phantoms(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """120 phantom studies of a seed no training or test set used, drawn as the training data was."""
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("unseen-phantoms")
    generate_dataset(out, 120, seed=424242, config=PhantomConfig(image_size=128, lateral_fraction=0.0, workers=1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return [[out / image for image in record["images"]] for record in records]


def _real_images() -> list[pydicom.Dataset]:
    """Every image among pydicom's and pynetdicom's own test files (CT, MR, US, NM, OT, secondary captures)."""
    import pynetdicom
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = get_testdata_files("*") + sorted(str(p) for p in (Path(pynetdicom.__file__).parent / "tests" /
                                                                 "dicom_files").glob("*"))
        images = []
        for name in files:
            try:
                ds = pydicom.dcmread(name, force=True)
                if "PixelData" in ds:
                    ds.pixel_array  # noqa: B018 - only images the engine can decode
                    images.append(ds)
            except Exception:  # broken samples, compressed ones without a decoder: not images here
                continue
    return images


@pytest.mark.slow
def test_embedded_model_calls_unseen_phantoms_in_domain(embedded, unseen_phantoms) -> None:
    states = [embedded.domain_state(embedded.image_features(embedded.prepare(paths))) for paths in unseen_phantoms]
    share = np.mean([state.in_domain for state in states])
    assert share >= 0.97, f"only {share:.1%} of unseen phantoms in domain"


@pytest.mark.slow
def test_embedded_model_flags_corrupted_phantoms(embedded, unseen_phantoms) -> None:
    rng = np.random.default_rng(5)
    flagged = {"noise": [], "inverted": [], "corner": []}
    for paths in unseen_phantoms[:40]:
        pixels = embedded.prepare(paths).pixel_values[:1]
        unit = pixels * 0.5 + 0.5  # the embedded model's mean / std are 0.5
        size = pixels.shape[-1]
        corner = np.kron(unit[..., : size // 4, : size // 4], np.ones((1, 1, 4, 4)))
        variants = {"noise": np.clip(unit + rng.normal(0, 0.5, unit.shape), 0, 1), "inverted": 1 - unit,
                    "corner": corner}
        for name, image in variants.items():
            features = embedded.graphs.image_features(((image - 0.5) / 0.5).astype(np.float32))
            flagged[name].append(embedded.domain_state(features).in_domain is False)
    for name, values in flagged.items():
        assert np.mean(values) >= 0.95, f"{name}: only {np.mean(values):.0%} flagged"


@pytest.mark.slow
def test_embedded_model_flags_real_images_nobody_here_made(embedded) -> None:
    images = _real_images()
    assert len(images) >= 20
    states = []
    for ds in images:
        try:
            study = embedded.prepare([ds])
        except Exception:  # the engine refuses it outright: not drafted at all
            continue
        states.append(embedded.domain_state(embedded.image_features(study)).in_domain)
    assert len(states) >= 20
    assert np.mean([state is False for state in states]) >= 0.95


def test_a_bundle_without_a_signature_drafts_with_in_domain_null(tmp_path: Path, phantom_studies) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(embedded_model_dir(), bundle, ignore=shutil.ignore_patterns("checkpoint", "*.int8.onnx"))
    manifest = json.loads((bundle / "model.json").read_text())
    manifest.pop("domain", None)
    manifest["variants"] = {"fp32": manifest["variants"]["fp32"]}
    (bundle / "model.json").write_text(json.dumps(manifest))
    (bundle / SIGNATURE_FILE).unlink(missing_ok=True)
    model = load_model(bundle, CPU)
    draft = model.draft(phantom_studies[0]["paths"], options=model.default_options(max_new_tokens=24))
    assert draft.domain == {"in_domain": None, "score": None, "threshold": None}


@pytest.mark.slow
def test_the_queue_logs_an_out_of_domain_study_without_patient_identifiers(tmp_path: Path, caplog) -> None:
    import logging

    from dicom_node.drafts import latest_draft
    from dicom_node.index import StudyState
    from dicom_node.settings import StoreSettings
    from dicom_node.store import ReceivedInstance, Store
    from engine.queue import DraftingQueue
    from tests.conftest import copy_with_fresh_uids, sample_path

    path = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(sample_path("CT_small.dcm"))
    ds.PatientName, ds.PatientID = "Doe^Jane", "PID-12345"
    ds.save_as(path)
    study_uid = str(copy_with_fresh_uids(path, path).StudyInstanceUID)
    store = Store(StoreSettings(tmp_path / "store"))
    queue = DraftingQueue(store, load_model(embedded_model_dir(), EngineSettings(providers=("cpu",))))
    try:
        store.put(ReceivedInstance.from_part10(path.read_bytes()))
        store.index.transition(study_uid, StudyState.STABLE)
        with caplog.at_level(logging.INFO, logger="engine.queue"):
            queue.start()
            assert queue.wait_idle(120)
        draft = latest_draft(store.index, study_uid)
        assert draft.detail["domain"]["in_domain"] is False and draft.detail["critical"] == []
        lines = [r.getMessage() for r in caplog.records if "outside the training domain" in r.getMessage()]
        assert len(lines) == 1 and study_uid in lines[0] and EMBEDDED_ID in lines[0]
        assert "Doe" not in lines[0] and "PID-12345" not in lines[0]
    finally:
        queue.stop()
        store.close()
