"""A signed report as a DICOM Basic Text SR (PS3.3 A.35.1), following TID 2000 "Basic Diagnostic Imaging
Report" and the IHE Simple Image and Numeric Report (SINR) conventions:

- root CONTAINER "Diagnostic Imaging Report" (LOINC 18748-4) with the language and the observer
  context (TID 1002: observer type person, person observer name),
- section CONTAINER "Findings" (DCM 121070) holding one TEXT "Finding" (121071), section CONTAINER
  "Impressions" (121072) holding one TEXT "Impression" (121073),
- VerificationFlag VERIFIED with the Verifying Observer Sequence (who signed, when, organization),
  CompletionFlag COMPLETE,
- Current Requested Procedure Evidence Sequence listing every instance of the study it reports on,
- the comparison (TID 2000 / CID 7001 headings): a section CONTAINER "Prior Procedure Descriptions"
  (121066) before the Findings, holding the prior study's description ("CR chest 2024-03-02", or "None."
  when the report was read without a prior), its Procedure Study Instance UID (121018, observation
  context) and date, and its frontal image as an IMAGE "Baseline" (121079, CID 7003); the prior report's
  impression as "Previous Findings" (121068 / 121069); every instance of the prior study in the Pertinent
  Other Evidence Sequence (what the content references must be listed in an evidence sequence),
- the same patient and study attributes as the study, in a new series of its own (modality SR).

The SR's UIDs are the ones saved with the report at signing, so every resend is the same instance.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from dicom_node.durable import make_dirs_durable, write_atomically
from dicom_node.index import InstanceRow, StudyRow
from dicom_node.reports import ComparisonStudy, SignedReport, comparison_of

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
REPORTS_DIR = "reports"
SR_SERIES_NUMBER = 9901
_NOT_ALLOWED_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f\ufffd]")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


REPORT_TITLE = code("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS_SECTION, FINDING = code("121070", "DCM", "Findings"), code("121071", "DCM", "Finding")
IMPRESSIONS_SECTION, IMPRESSION = code("121072", "DCM", "Impressions"), code("121073", "DCM", "Impression")
# No DCM code names the communication of a critical result: it is a Comment of the Impressions section.
CRITICAL_COMMUNICATION = code("121106", "DCM", "Comment")


def clean_text(text: str) -> str:
    """Text as a UT value may hold it: control characters (other than TAB, LF, FF, CR, ESC) become spaces."""
    return _NOT_ALLOWED_IN_TEXT.sub(" ", text.replace("\r\n", "\n")).strip()


def _item(relationship: str, value_type: str, name: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = DicomSequence([name])
    return item


def _text_item(name: Dataset, text: str) -> Dataset:
    item = _item("CONTAINS", "TEXT", name)
    item.TextValue = clean_text(text)
    return item


def _section(heading: Dataset, entry: Dataset, text: str, *extra: Dataset) -> Dataset:
    section = _item("CONTAINS", "CONTAINER", heading)
    section.ContinuityOfContent = "SEPARATE"
    section.ContentSequence = DicomSequence([_text_item(entry, text), *extra])
    return section


def _communication_items(report: SignedReport) -> list[Dataset]:
    """The communication of critical findings, as recorded at signing: a TEXT item of the Impressions
    section (TID 2000 leaves a section's text items open)."""
    communication = report.detail.get("critical_communication") if isinstance(report.detail, dict) else None
    text = communication.get("text", "") if isinstance(communication, dict) else ""
    return [_text_item(CRITICAL_COMMUNICATION, text)] if text.strip() else []


def _observer_context(name: str) -> list[Dataset]:
    observer_type = _item("HAS OBS CONTEXT", "CODE", code("121005", "DCM", "Observer Type"))
    observer_type.ConceptCodeSequence = DicomSequence([code("121006", "DCM", "Person")])
    observer_name = _item("HAS OBS CONTEXT", "PNAME", code("121008", "DCM", "Person Observer Name"))
    observer_name.PersonName = name
    return [observer_type, observer_name]


def _language() -> Dataset:
    language = _item("HAS CONCEPT MOD", "CODE", code("121049", "DCM", "Language of Content Item and Descendants"))
    language.ConceptCodeSequence = DicomSequence([code("en", "RFC5646", "English")])
    return language


def _evidence(study_uid: str, instances: Sequence[InstanceRow]) -> DicomSequence:
    return _evidence_of(study_uid, [(row.series_uid, row.sop_class_uid, row.sop_instance_uid) for row in instances])


def _sop_reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    return ref


def _evidence_of(study_uid: str, instances: Sequence[tuple[str, str, str]]) -> DicomSequence:
    """One Hierarchical SOP Instance Reference item: the study, its series, their instances."""
    by_series: dict[str, list[tuple[str, str, str]]] = {}
    for row in instances:
        by_series.setdefault(row[0], []).append(row)
    series_items = []
    for series_uid, rows in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        refs = [_sop_reference(sop_class, sop_instance) for _, sop_class, sop_instance in rows]
        series.ReferencedSOPSequence = DicomSequence(refs)
        series_items.append(series)
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = DicomSequence(series_items)
    return DicomSequence([study])


def build_report_sr(report: SignedReport, study: StudyRow, instances: Sequence[InstanceRow], *,
                    organization: str = "RadDraft", manufacturer: str = "RadDraft") -> Dataset:
    """The Basic Text SR of a signed report on `study` (whose `instances` it references)."""
    if not report.sr_sop_instance_uid or not report.sr_series_uid:
        raise ValueError("the report has no SR UIDs (it was not saved by sign_report)")
    signed = time.localtime(report.signed_at or time.time())
    date, clock = time.strftime("%Y%m%d", signed), time.strftime("%H%M%S", signed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPInstanceUID = report.sr_sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: report text and names in any language
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = report.sr_sop_instance_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, clock
    # Patient and General Study modules: as the study has them.
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex if study.patient_sex in ("M", "F", "O") else ""
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    if study.study_description:
        ds.StudyDescription = study.study_description
    # SR Document Series and General Equipment.
    ds.Modality = "SR"
    ds.SeriesInstanceUID = report.sr_series_uid
    ds.SeriesNumber = SR_SERIES_NUMBER
    ds.SeriesDescription = "RadDraft signed report"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.Manufacturer = manufacturer
    # SR Document General.
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate, ds.ContentTime = date, clock
    observer = Dataset()
    observer.VerifyingObserverName = report.signed_by
    observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
    observer.VerifyingOrganization = organization or "RadDraft"
    observer.VerificationDateTime = date + clock
    ds.VerifyingObserverSequence = DicomSequence([observer])
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(study.study_uid, instances)
    comparison = comparison_of(report)
    if comparison is not None and comparison.instances:
        ds.PertinentOtherEvidenceSequence = _evidence_of(comparison.study_uid, comparison.instances)
    _mark_amendment(ds, report)
    # SR Document Content: the root container and its tree.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([REPORT_TITLE])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2000"
    ds.ContentTemplateSequence = DicomSequence([template])
    ds.ContentSequence = DicomSequence([
        _language(),
        *_observer_context(report.signed_by),
        *_device_observer_context(report),
        *_comparison_sections(report, comparison),
        _section(FINDINGS_SECTION, FINDING, report.findings),
        _section(IMPRESSIONS_SECTION, IMPRESSION, report.impression, *_communication_items(report)),
        *_addendum_section(report),
        *_ai_contribution_items(report),
    ])
    _mark_ai_equipment(ds, report)
    return ds


ADDENDUM = code("121078", "DCM", "Addendum")
PRIOR_PROCEDURES_SECTION = code("121066", "DCM", "Prior Procedure Descriptions")
PROCEDURE_DESCRIPTION = code("121065", "DCM", "Procedure Description")
PROCEDURE_STUDY_UID = code("121018", "DCM", "Procedure Study Instance UID")
STUDY_DATE = code("111060", "DCM", "Study Date")
BASELINE_IMAGE = code("121079", "DCM", "Baseline")
PREVIOUS_FINDINGS_SECTION, PREVIOUS_FINDING = (code("121068", "DCM", "Previous Findings"),
                                               code("121069", "DCM", "Previous Finding"))
_SR_CLASSES = "1.2.840.10008.5.1.4.1.1.88."


def _comparison_sections(report: SignedReport, comparison: ComparisonStudy | None) -> list[Dataset]:
    """What the report was compared with: nothing for a report signed before comparisons were recorded,
    "None." when it was read without a prior, else the prior study with its reference and its frontal image."""
    if "comparison" not in report.detail:
        return []
    if comparison is None:
        return [_section(PRIOR_PROCEDURES_SECTION, PROCEDURE_DESCRIPTION, "None.")]
    study = _item("HAS OBS CONTEXT", "UIDREF", PROCEDURE_STUDY_UID)
    study.UID = comparison.study_uid
    items = [study, _text_item(PROCEDURE_DESCRIPTION, comparison.title)]  # the observation context first
    if len(comparison.study_date) == 8 and comparison.study_date.isdigit():
        date = _item("CONTAINS", "DATE", STUDY_DATE)
        date.Date = comparison.study_date
        items.append(date)
    frontal = next((row for row in comparison.instances if not row[1].startswith(_SR_CLASSES)), None)
    if frontal is not None:
        image = _item("CONTAINS", "IMAGE", BASELINE_IMAGE)
        image.ReferencedSOPSequence = DicomSequence([_sop_reference(frontal[1], frontal[2])])
        items.append(image)
    prior = _item("CONTAINS", "CONTAINER", PRIOR_PROCEDURES_SECTION)
    prior.ContinuityOfContent = "SEPARATE"
    prior.ContentSequence = DicomSequence(items)
    sections = [prior]
    if comparison.impression.strip():
        sections.append(_section(PREVIOUS_FINDINGS_SECTION, PREVIOUS_FINDING, comparison.impression))
    return sections


def _mark_amendment(ds: Dataset, report: SignedReport) -> None:
    """An amendment (IHE SINR: a revised report) refers to the SR it replaces in the Predecessor Documents
    Sequence, and is the next instance of the same series."""
    predecessor = report.detail.get("predecessor")
    if not predecessor:
        return
    ref = Dataset()
    ref.ReferencedSOPClassUID = BASIC_TEXT_SR
    ref.ReferencedSOPInstanceUID = predecessor["sop_instance_uid"]
    series = Dataset()
    series.SeriesInstanceUID = predecessor["series_uid"]
    series.ReferencedSOPSequence = DicomSequence([ref])
    study = Dataset()
    study.StudyInstanceUID = predecessor["study_uid"]
    study.ReferencedSeriesSequence = DicomSequence([series])
    ds.PredecessorDocumentsSequence = DicomSequence([study])
    ds.InstanceNumber = int(report.detail.get("revision", 1)) + 1
    ds.SeriesDescription = "RadDraft signed report (amended)"


# -- the AI's part (IHE AI Results practice): the model as a second observer of the document, a device
# (TID 1002 / TID 1004), beside the radiologist who signed; what it contributed and whether the study was
# within what it was trained on, as Comments (Basic Text SR has no NUM, and dciodvfy accepts no private
# coding scheme, so the statements are TEXT in standard codes).
DEVICE_OBSERVER_TYPE = code("121007", "DCM", "Device")
AI_COMMENT = code("121106", "DCM", "Comment")
_UID_PREFIX = "2.25."


def ai_model(report: SignedReport) -> tuple[str, str] | None:
    """(name, version) of the model whose draft the report started from; None when no model drafted it."""
    model = str(report.detail.get("model") or "") if report.draft_id is not None else ""
    if not model:
        return None
    name, _, version = model.partition("@")
    return name, version


def domain_statement(domain: object) -> str:
    """The draft's domain state in words, as the SR and the text/PDF export state it."""
    state = domain.get("in_domain") if isinstance(domain, dict) else None
    if state is None:
        return "unknown (the model has no domain signature)"
    words = "within the model's training domain" if state else "OUTSIDE the model's training domain"
    score, threshold = domain.get("score"), domain.get("threshold")  # type: ignore[union-attr]
    return f"{words} (score {score} vs threshold {threshold})"


def ai_contribution_line(report: SignedReport) -> str:
    """The one line the text/PDF export ends with."""
    model = ai_model(report)
    if model is None:
        return "AI: not drafted by AI."
    return (f"AI: drafted by {model[0]} {model[1]}; {report.ai_share_kept:.0%} of the AI text kept; study "
            f"{domain_statement(report.detail.get('domain'))}.")


def _device_observer_context(report: SignedReport) -> list[Dataset]:
    from pydicom.uid import generate_uid

    model = ai_model(report)
    if model is None:
        return []
    name, version = model
    observer_type = _item("HAS OBS CONTEXT", "CODE", code("121005", "DCM", "Observer Type"))
    observer_type.ConceptCodeSequence = DicomSequence([DEVICE_OBSERVER_TYPE])
    uid = _item("HAS OBS CONTEXT", "UIDREF", code("121012", "DCM", "Device Observer UID"))
    uid.UID = generate_uid(_UID_PREFIX, entropy_srcs=["raddraft model", name, version])  # same model, same UID
    items = [observer_type, uid]
    for concept, value in ((code("121013", "DCM", "Device Observer Name"), name),
                           (code("121014", "DCM", "Device Observer Manufacturer"), "RadDraft"),
                           (code("121015", "DCM", "Device Observer Model Name"), f"{name} {version}".strip())):
        item = _item("HAS OBS CONTEXT", "TEXT", concept)
        item.TextValue = clean_text(value)
        items.append(item)
    return items


def ai_statements(report: SignedReport) -> list[str]:
    """Drafted by AI or not, the share of AI text kept and the domain state; [] for a report the
    workstation did not sign (no software recorded, no draft)."""
    if report.draft_id is None and not report.detail.get("software"):
        return []
    model = ai_model(report)
    if model is None:
        return ["Drafted by AI: no."]
    return [f"Drafted by AI: yes, by {model[0]} {model[1]}.",
            f"Share of AI text kept: {report.ai_share_kept:.1%}.",
            f"Study domain: {domain_statement(report.detail.get('domain'))}."]


def _ai_contribution_items(report: SignedReport) -> list[Dataset]:
    return [_text_item(AI_COMMENT, statement) for statement in ai_statements(report)]


def _mark_ai_equipment(ds: Dataset, report: SignedReport) -> None:
    software = str(report.detail.get("software") or "").strip()
    if software:
        ds.SoftwareVersions = clean_text(software)[:64]


def _addendum_section(report: SignedReport) -> list[Dataset]:
    addendum = str(report.detail.get("addendum", "")).strip()
    return [_section(ADDENDUM, ADDENDUM, addendum)] if addendum else []


def sr_path(root: Path, report: SignedReport) -> Path:
    return Path(root) / REPORTS_DIR / f"{report.sr_sop_instance_uid}.dcm"


def write_report_sr(root: Path, report: SignedReport, study: StudyRow, instances: Sequence[InstanceRow],
                    **attributes: str) -> Path:
    """Write the report's SR under `root/reports/` (durably, atomically) unless it is there; return its path."""
    path = sr_path(root, report)
    if path.exists():
        return path
    buffer = io.BytesIO()
    build_report_sr(report, study, instances, **attributes).save_as(buffer, enforce_file_format=True)
    make_dirs_durable(path.parent, Path(root))
    write_atomically(path, [buffer.getvalue()])
    return path


def section_texts(ds: Dataset) -> dict[str, str]:
    """{"findings": ..., "impression": ...} read back from an SR built here (tests, and received SRs)."""
    texts: dict[str, str] = {}
    for section in ds.get("ContentSequence", []):
        if section.ValueType != "CONTAINER":
            continue
        meaning = section.ConceptNameCodeSequence[0].CodeValue
        key = {"121070": "findings", "121072": "impression"}.get(meaning)
        if not key:
            continue
        for item in section.get("ContentSequence", []):
            if item.ValueType != "TEXT":
                continue
            name = item.ConceptNameCodeSequence[0].CodeValue
            slot = "critical_communication" if name == CRITICAL_COMMUNICATION.CodeValue else key
            texts[slot] = "\n".join(filter(None, (texts.get(slot, ""), str(item.TextValue))))
    return texts


def comparison_reference(ds: Dataset) -> dict[str, str]:
    """What an SR built here says it was compared with (tests, and received SRs): the description, and for a
    prior its study UID, date, baseline image and previous findings; {} when it records no comparison."""
    found: dict[str, str] = {}
    for section in ds.get("ContentSequence", []):
        heading = section.ConceptNameCodeSequence[0].CodeValue if section.ValueType == "CONTAINER" else ""
        for item in section.get("ContentSequence", []) if heading in ("121066", "121068") else ():
            name = item.ConceptNameCodeSequence[0].CodeValue
            if name == PROCEDURE_DESCRIPTION.CodeValue:
                found["description"] = str(item.TextValue)
            elif name == PROCEDURE_STUDY_UID.CodeValue:
                found["study_uid"] = str(item.UID)
            elif name == STUDY_DATE.CodeValue:
                found["date"] = str(item.Date)
            elif name == BASELINE_IMAGE.CodeValue:
                found["baseline"] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
            elif name == PREVIOUS_FINDING.CodeValue:
                found["previous_findings"] = str(item.TextValue)
    return found
