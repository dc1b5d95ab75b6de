"""How far the labeler can be trusted on real report language: its figures on the IU X-ray dev half
(1,927 real chest reports) against their MeSH indexing, as `bench/labeler_real_reports.py` measures them and
`tests/training/test_labeler_real_reports.py` checks them. Shown beside every model comparison it judges."""

from __future__ import annotations

LABELER_DEV_SET = "IU X-ray dev half, 1,927 real chest reports, against MeSH (positive = present or uncertain)"
LABELER_DEV_MACRO_F1 = 0.869
LABELER_DEV_F1: dict[str, float] = {
    "cardiomegaly": 0.981, "pleural_effusion": 0.893, "pneumothorax": 0.909, "consolidation": 0.890,
    "nodule": 0.838, "edema": 0.679, "atelectasis": 0.893,
}


def labeler_quality() -> dict[str, object]:
    return {"set": LABELER_DEV_SET, "macro_f1": LABELER_DEV_MACRO_F1, "per_finding_f1": dict(LABELER_DEV_F1)}
