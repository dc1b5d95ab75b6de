"""Checks before signing and critical findings, on real report language."""

from __future__ import annotations

import pytest

from dicom_node.errors import SettingsError
from engine.findings.checks import (
    COMPARISON_WITHOUT_PRIOR,
    CRITICAL_NOT_IN_IMPRESSION,
    LATERALITY_CONFLICT,
    SECTION_CONFLICT,
    CriticalCommunication,
    SignReview,
    check_report,
    review_problems,
)
from engine.findings.critical import CriticalSettingsError, check_critical_names, find_critical
from engine.settings import EngineSettings


def kinds(findings: str, impression: str, has_prior: bool = False) -> dict[str, tuple[str, ...]]:
    return {p.kind: p.sentences for p in check_report(findings, impression, has_prior=has_prior)}


def test_a_clean_report_has_no_problems():
    assert kinds("Heart size is normal. No pleural effusion or pneumothorax.",
                 "No acute cardiopulmonary abnormality. Compared with no prior study.") == {}


def test_present_in_one_section_absent_in_the_other_names_both_sentences():
    found = kinds("Small left pleural effusion. The lungs are clear.", "No pleural effusion.")
    assert found[SECTION_CONFLICT] == ("Small left pleural effusion", "No pleural effusion")


def test_a_negative_on_the_other_side_is_no_conflict():
    assert SECTION_CONFLICT not in kinds("Right lower lobe consolidation. The left lung is clear.",
                                         "Right lower lobe pneumonia.")
    assert SECTION_CONFLICT in kinds("Right lower lobe consolidation.", "No consolidation.")


def test_laterality_conflict_for_the_same_finding():
    found = kinds("Moderate left pleural effusion.", "Moderate right pleural effusion.")
    assert found[LATERALITY_CONFLICT] == ("Moderate left pleural effusion", "Moderate right pleural effusion")
    assert LATERALITY_CONFLICT not in kinds("Left and right pleural effusions.", "Bilateral pleural effusions.")
    assert LATERALITY_CONFLICT not in kinds("Left lower lobe atelectasis.", "Left basilar atelectasis.")


def test_critical_finding_missing_from_the_impression():
    found = kinds("Large right pneumothorax with mediastinal shift.", "Small left pleural effusion.")
    assert found[CRITICAL_NOT_IN_IMPRESSION] == ("Large right pneumothorax with mediastinal shift",)
    assert CRITICAL_NOT_IN_IMPRESSION not in kinds("Large right pneumothorax.", "Large right pneumothorax.")
    assert CRITICAL_NOT_IN_IMPRESSION not in kinds("No pneumothorax.", "Normal chest.")


@pytest.mark.parametrize("impression", [
    "Unchanged small left effusion.", "Compared with 2024-03-02, the right effusion has increased.",
    "Stable cardiomegaly.", "Interval improvement of the left lower lobe consolidation.",
    "Cardiomegaly, again seen.", "The nodule is larger than on the prior study.",
])
def test_comparison_claimed_without_a_prior(impression):
    assert COMPARISON_WITHOUT_PRIOR in kinds("Findings as described.", impression)
    assert COMPARISON_WITHOUT_PRIOR not in kinds("Findings as described.", impression, has_prior=True)


@pytest.mark.parametrize("impression", ["Compared with no prior study.", "No prior studies for comparison.",
                                        "New small left pleural effusion.",
                                        "In the absence of a comparison exam, recommend short interval follow-up."])
def test_no_comparison_claimed(impression):
    assert COMPARISON_WITHOUT_PRIOR not in kinds("Small left pleural effusion.", impression)


@pytest.mark.parametrize("text,title", [
    ("Large right pneumothorax with mediastinal shift.", "pneumothorax (tension or large)"),
    ("Tension pneumothorax on the left.", "pneumothorax (tension or large)"),
    ("Small left apical pneumothorax.", "pneumothorax"),
    ("Possible small right apical pneumothorax.", "possible pneumothorax"),
    ("Free air under the right hemidiaphragm.", "free intraperitoneal air"),
    ("Pneumoperitoneum.", "free intraperitoneal air"),
    ("The endotracheal tube tip is in the right mainstem bronchus.", "malpositioned endotracheal or nasogastric tube"),
    ("Nasogastric tube coiled in the esophagus.", "malpositioned endotracheal or nasogastric tube"),
    ("The enteric tube courses into the right lower lobe bronchus.", "malpositioned endotracheal or nasogastric tube"),
])
def test_critical_findings_are_found(text, title):
    assert [f.title for f in find_critical({"findings": text})] == [title]


@pytest.mark.parametrize("text", [
    "No pneumothorax.", "No free air under the diaphragm.", "History of left pneumothorax.",
    "Endotracheal tube terminates 4 cm above the carina.", "Nasogastric tube tip in the stomach.",
    "The right pneumothorax has resolved.",
])
def test_negated_historical_and_well_placed_are_not_critical(text):
    assert find_critical({"findings": text}) == []


def test_the_critical_list_is_configurable_and_checked():
    assert find_critical({"findings": "Large right pneumothorax."}, ("free_air",)) == []
    assert [f.key for f in find_critical({"findings": "Moderate left pleural effusion."}, ("pleural_effusion",))] == [
        "pleural_effusion"]
    with pytest.raises(CriticalSettingsError, match="unknown critical finding 'tension'"):
        check_critical_names(["tension"])
    with pytest.raises(SettingsError, match="critical_findings"):
        EngineSettings(critical_findings=("tension",))


def test_signing_needs_a_reason_for_problems_and_a_communication_for_critical_findings():
    problems = check_report("Large right pneumothorax.", "Unchanged.", has_prior=False)
    critical = find_critical({"findings": "Large right pneumothorax.", "impression": "Unchanged."})
    missing = review_problems(problems, critical, None)
    assert len(missing) == 2 and "reason" in missing[0] and "who was told" in missing[1]
    incomplete = SignReview("checked with the clinician", CriticalCommunication("", "2026-12-01", "fax"))
    assert review_problems(problems, critical, incomplete) == [
        "name who was told of the critical finding", "give when they were told as YYYY-MM-DD HH:MM",
        "say how they were told (telephone, in person, secure message, page, other)"]
    complete = SignReview("checked", CriticalCommunication("Dr Lee, ED", "2026-12-01 10:05", "telephone"))
    assert review_problems(problems, critical, complete) == []
    assert complete.communication.as_text(["pneumothorax"]) == (
        "Critical finding (pneumothorax) communicated to Dr Lee, ED by telephone on 2026-12-01 10:05.")


@pytest.mark.parametrize("text,sides", [
    ("Small right effusion.", {"pleural_effusion": "right"}),
    ("Effusion on the left.", {"pleural_effusion": "left"}),
    ("Left lower lobe atelectasis and right pleural effusion.", {"atelectasis": "left", "pleural_effusion": "right"}),
    ("Left and right pleural effusions.", {"pleural_effusion": "bilateral"}),
    ("Left lower lobe and right perihilar airspace disease.", {"consolidation": "bilateral"}),
    ("Bibasilar atelectasis.", {"atelectasis": "bilateral"}),
])
def test_the_side_of_a_mention(text, sides):
    from engine.findings.labeler import label_mentions

    assert {m.key: m.side for m in label_mentions(text)} == sides
