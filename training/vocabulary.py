"""The finding vocabulary shared by the phantom generator, the labeler and the metrics.

Keys follow CheXpert observations where they coincide (Cardiomegaly, Pleural Effusion, Pneumothorax,
Consolidation, Edema, Atelectasis, Support Devices, No Finding); `nodule` covers CheXpert's "Lung Lesion"
(nodule or mass).
"""

from __future__ import annotations

from engine.findings.vocabulary import (  # noqa: F401 - one vocabulary, kept where the runtime can read it
    ABSENT,
    FINDING_KEYS,
    LABEL_KEYS,
    LABEL_VALUES,
    NO_FINDING,
    NOT_MENTIONED,
    PATHOLOGY_KEYS,
    PRESENT,
    UNCERTAIN,
)
