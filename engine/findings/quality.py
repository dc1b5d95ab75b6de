"""How far the labeler can be trusted on real report language: its figures on the IU X-ray dev half
(1,927 real chest reports) against their MeSH indexing, as `bench/labeler_real_reports.py` measures them and
`tests/training/test_labeler_real_reports.py` checks them. Shown beside every model comparison it judges."""

from __future__ import annotations

LABELER_DEV_SET = "IU X-ray dev half, 1,927 real chest reports, against MeSH (positive = present or uncertain)"
LABELER_DEV_MACRO_F1 = 0.848
LABELER_DEV_F1: dict[str, float] = {
    "cardiomegaly": 0.970, "pleural_effusion": 0.887, "pneumothorax": 0.870, "consolidation": 0.875,
    "nodule": 0.765, "edema": 0.679, "atelectasis": 0.893,
}


def labeler_quality() -> dict[str, object]:
    return {"set": LABELER_DEV_SET, "macro_f1": LABELER_DEV_MACRO_F1, "per_finding_f1": dict(LABELER_DEV_F1)}
