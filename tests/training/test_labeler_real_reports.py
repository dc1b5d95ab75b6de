"""The labeler on real report language: the IU X-ray dev half against its MeSH indexing (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.findings.labeler import Labeler
from engine.findings.quality import LABELER_DEV_F1, LABELER_DEV_MACRO_F1
from training.evaluation.real_reports import SCORED_KEYS, mesh_keys, read_reports, score

DEV_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "iu_reports_dev.csv"


@pytest.fixture(scope="module")
def dev_scores():
    if not DEV_CSV.is_file():
        pytest.skip(f"the IU X-ray dev reports are not here ({DEV_CSV})")
    return score(read_reports(DEV_CSV), Labeler().label_many)


def test_dev_macro_f1_is_the_reported_figure(dev_scores):
    """The figures the comparison reports and the README show are what the labeler measures."""
    assert dev_scores.macro_f1 == pytest.approx(LABELER_DEV_MACRO_F1, abs=0.01)
    for key, f1 in LABELER_DEV_F1.items():
        assert dev_scores.per_key[key][0] == pytest.approx(f1, abs=0.02), key


def test_every_scored_finding_is_found_in_real_reports(dev_scores):
    assert set(dev_scores.per_key) == set(SCORED_KEYS)
    for key, (f1, tp, _fp, _fn) in dev_scores.per_key.items():
        assert tp > 0 and f1 >= 0.6, key


def test_mesh_mapping_reads_headings_with_qualifiers():
    assert mesh_keys("Cardiomegaly/borderline;Pulmonary Artery/enlarged") == {"cardiomegaly"}
    assert mesh_keys("Airspace Disease/lung/base/left;Nodule/lung") == {"consolidation", "nodule"}
    assert mesh_keys("normal") == frozenset()
