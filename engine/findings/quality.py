"""How far the labeler can be trusted on real report language: its figures on the IU X-ray dev half
(1,927 real chest reports) against their MeSH indexing, as `bench/labeler_real_reports.py` measures them and
`tests/training/test_labeler_real_reports.py` checks them. Shown beside every model comparison it judges.

Two figures, because MeSH codes hedged findings by a convention of its own (training/evaluation/real_reports.py):
- the issue's mapping, positive = present or uncertain (the headline figure);
- MeSH's convention, positive = present or probable ("likely", "suggestive of", "versus"); a possible finding
  ("may represent", "cannot exclude") is not coded, the observation it explains is.
"""

from __future__ import annotations

LABELER_DEV_SET = "IU X-ray dev half, 1,927 real chest reports, against MeSH (positive = present or uncertain)"
LABELER_DEV_MACRO_F1 = 0.873
LABELER_DEV_F1: dict[str, float] = {
    "cardiomegaly": 0.981, "pleural_effusion": 0.893, "pneumothorax": 0.909, "consolidation": 0.890,
    "nodule": 0.844, "edema": 0.679, "atelectasis": 0.914,
}
# the same reports, positive = present or probable (MeSH's convention for hedges)
LABELER_DEV_MACRO_F1_PROBABLE = 0.929
LABELER_DEV_F1_PROBABLE: dict[str, float] = {
    "cardiomegaly": 0.981, "pleural_effusion": 0.953, "pneumothorax": 0.909, "consolidation": 0.956,
    "nodule": 0.906, "edema": 0.837, "atelectasis": 0.961,
}


def labeler_quality() -> dict[str, object]:
    return {"set": LABELER_DEV_SET, "macro_f1": LABELER_DEV_MACRO_F1, "per_finding_f1": dict(LABELER_DEV_F1),
            "macro_f1_present_or_probable": LABELER_DEV_MACRO_F1_PROBABLE}
