"""The reason for an exam, as the study's DICOM objects state it, for prompts that take an indication.

Looked for, in order, on the first object that has one: Reason for the Requested Procedure, Reason for
Study, Requested Procedure Description (top level or in Request Attributes Sequence), Admitting
Diagnoses Description. Codes alone (Reason for Requested Procedure Code Sequence) give their meaning.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

TEXT_KEYWORDS = ("ReasonForTheRequestedProcedure", "ReasonForStudy", "RequestedProcedureDescription",
                 "AdmittingDiagnosesDescription")
CODE_KEYWORDS = ("ReasonForRequestedProcedureCodeSequence",)


def study_indication(datasets: Iterable[Dataset]) -> str | None:
    """The first indication found (whitespace collapsed), or None."""
    for ds in datasets:
        for source in (ds, *(ds.get("RequestAttributesSequence") or ())):
            text = _indication_of(source)
            if text:
                return text
    return None


def _indication_of(ds: Dataset) -> str | None:
    for keyword in TEXT_KEYWORDS:
        text = _text(ds.get(keyword))
        if text:
            return text
    for keyword in CODE_KEYWORDS:
        for item in ds.get(keyword) or ():
            text = _text(item.get("CodeMeaning"))
            if text:
                return text
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    parts = [str(v) for v in value] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" \
        else [str(value)]
    text = " ".join(" ".join(parts).split())
    return text or None
