"""The labeler on real report language: the IU X-ray dev half against its MeSH indexing (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.findings.labeler import Labeler
from engine.findings.quality import (
    LABELER_DEV_F1,
    LABELER_DEV_F1_PROBABLE,
    LABELER_DEV_MACRO_F1,
    LABELER_DEV_MACRO_F1_PROBABLE,
)
from training.evaluation.real_reports import (
    SCORED_KEYS,
    mesh_keys,
    probable_positives,
    read_reports,
    score,
    score_probable,
)

DEV_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "iu_reports_dev.csv"


@pytest.fixture(scope="module")
def dev_reports():
    if not DEV_CSV.is_file():
        pytest.skip(f"the IU X-ray dev reports are not here ({DEV_CSV})")
    return read_reports(DEV_CSV)


@pytest.fixture(scope="module")
def labeler():
    return Labeler()


@pytest.fixture(scope="module")
def dev_scores(dev_reports, labeler):
    return score(dev_reports, labeler.label_many)


def test_dev_macro_f1_is_the_reported_figure(dev_scores):
    """The figures the comparison reports and the README show are what the labeler measures."""
    assert dev_scores.macro_f1 == pytest.approx(LABELER_DEV_MACRO_F1, abs=0.01)
    for key, f1 in LABELER_DEV_F1.items():
        assert dev_scores.per_key[key][0] == pytest.approx(f1, abs=0.02), key


def test_dev_figure_under_meshs_hedge_convention(dev_reports, labeler):
    """Positive = present or probable, what MeSH's indexers code: the second reported figure is measured too."""
    probable = score_probable(dev_reports, labeler.mentions_many)
    assert probable.macro_f1 == pytest.approx(LABELER_DEV_MACRO_F1_PROBABLE, abs=0.01)
    for key, f1 in LABELER_DEV_F1_PROBABLE.items():
        assert probable.per_key[key][0] == pytest.approx(f1, abs=0.02), key


def test_every_scored_finding_is_found_in_real_reports(dev_scores):
    assert set(dev_scores.per_key) == set(SCORED_KEYS)
    for key, (f1, tp, _fp, _fn) in dev_scores.per_key.items():
        assert tp > 0 and f1 >= 0.6, key


def test_mesh_mapping_reads_headings_with_qualifiers():
    assert mesh_keys("Cardiomegaly/borderline;Pulmonary Artery/enlarged") == {"cardiomegaly"}
    assert mesh_keys("Airspace Disease/lung/base/left;Nodule/lung") == {"consolidation", "nodule"}
    assert mesh_keys("normal") == frozenset()


def test_meshs_convention_counts_present_and_probable_findings_only(labeler):
    mentions = labeler.mentions("Likely right lower lobe pneumonia. Streaky opacity may represent atelectasis. "
                                "Small left pleural effusion. History of pneumothorax. No pulmonary edema.")
    assert probable_positives(mentions) == {"consolidation", "pleural_effusion"}
