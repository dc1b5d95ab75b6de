"""One person, one pseudonym: studies whose Patient IDs are linked through Other Patient IDs (Sequence),
and, when the site turns it on, through the same name and birth date, are one patient.

Linked IDs form one group; the group's key is its smallest ID, so a patient seen under one ID keeps the
pseudonym, date offset and split that ID always gave, and a patient seen under several gets one of them
for all their studies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from training.site.descriptors import values_of
from training.site.textfold import fold


@dataclass(frozen=True)
class PatientRecord:
    """What one study says about its patient (originals, kept in memory only)."""

    study_uid: str
    patient_id: str
    other_ids: tuple[str, ...]
    name: str = ""
    birth_date: str = ""


def record_of(study_uid: str, patient_id: str, headers: Iterable[Dataset]) -> PatientRecord:
    other_ids: set[str] = set()
    name = birth_date = ""
    for ds in headers:
        other_ids.update(v.strip() for v in values_of(ds.get("OtherPatientIDs")) if v.strip())
        for item in ds.get("OtherPatientIDsSequence") or ():
            other_ids.update(v.strip() for v in values_of(item.get("PatientID")) if v.strip())
        name = name or str(ds.get("PatientName", "") or "").strip()
        birth_date = birth_date or str(ds.get("PatientBirthDate", "") or "").strip()
    return PatientRecord(study_uid, patient_id.strip(), tuple(sorted(other_ids - {patient_id.strip()})), name,
                         birth_date)


def link_patients(records: Iterable[PatientRecord], by_name_and_birth_date: bool = False) -> dict[str, str]:
    """The patient key of each study (by Study Instance UID)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    records = list(records)
    for record in records:
        study = f"study\0{record.study_uid}"
        find(study)
        for patient_id in (record.patient_id, *record.other_ids):
            if patient_id:
                union(study, f"id\0{patient_id}")
        if by_name_and_birth_date and record.name and len(record.birth_date) == 8:
            union(study, f"person\0{_name_key(record.name)}\0{record.birth_date}")
    keys: dict[str, str] = {}
    for node in parent:
        if node.startswith("id\0"):
            root = find(node)
            keys[root] = min(keys.get(root, node[3:]), node[3:])
    return {r.study_uid: keys.get(find(f"study\0{r.study_uid}"), f"no patient id: {r.study_uid}") for r in records}


def _name_key(name: str) -> str:
    """Family and given name, folded, of the first (alphabetic) group of a person name."""
    components = name.split("=")[0].split("^")
    return "^".join(fold(part).strip() for part in components[:2])
