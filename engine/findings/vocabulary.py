"""The finding vocabulary shared by the labeler, the checks before signing, the phantom generator and the metrics.

Keys follow CheXpert observations where they coincide (Cardiomegaly, Pleural Effusion, Pneumothorax,
Consolidation, Edema, Atelectasis, Support Devices, No Finding); `nodule` covers CheXpert's "Lung Lesion"
(nodule or mass).
"""

from __future__ import annotations

FINDING_KEYS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "nodule",
    "edema",
    "atelectasis",
    "support_device",
)
NO_FINDING = "no_finding"
LABEL_KEYS: tuple[str, ...] = FINDING_KEYS + (NO_FINDING,)
# Findings that make a study abnormal. A support device alone does not (as in CheXpert's "No Finding").
PATHOLOGY_KEYS: tuple[str, ...] = tuple(k for k in FINDING_KEYS if k != "support_device")

PRESENT = "present"
ABSENT = "absent"
UNCERTAIN = "uncertain"
NOT_MENTIONED = "not_mentioned"
LABEL_VALUES: tuple[str, ...] = (PRESENT, ABSENT, UNCERTAIN, NOT_MENTIONED)
