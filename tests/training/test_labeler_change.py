"""The change reader: per-finding change statements (new / increased / decreased / unchanged / resolved, with
negation) on phantom and real report language, and whether a text claims a comparison at all."""

from __future__ import annotations

import pytest

from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest
from training.evaluation.change import change_statements, claims_comparison, read_changes

# Sentences from ../shared/data/iu_reports_dev.csv (real, de-identified reports; "XXXX" is their redaction),
# then the phantom generator's own phrasing, with what a reader would answer.
REAL = [
    ("Interval resolution of left effusion.", {"pleural_effusion": "resolved"}),
    ("Stable cardiomegaly and persistent minimal bibasilar atelectasis.",
     {"cardiomegaly": "unchanged", "atelectasis": "unchanged"}),
    ("Small to moderate left-sided pleural effusion, increased XXXX compared to prior chest radiograph.",
     {"pleural_effusion": "increased"}),
    ("No significant change in right pneumothorax or pleural fluid.",
     {"pneumothorax": "unchanged", "pleural_effusion": "unchanged"}),
    ("Interval improvement in left base consolidative opacity.", {"consolidation": "decreased"}),
    ("Worsening bilateral lower lobe opacities which are most XXXX due to enlarging bilateral pleural effusions.",
     {"pleural_effusion": "increased"}),
    ("Interval placement of right internal jugular central venous catheter with tip approximating the low SVC.",
     {"support_device": "new"}),
    ("The previously seen right-sided PICC has been removed.", {"support_device": "resolved"}),
    ("Interval decrease in size of numerous pulmonary nodules and masses.", {"nodule": "decreased"}),
    ("Resolved interstitial edema.", {"edema": "resolved"}),
    ("Increasing cardiomegaly.", {"cardiomegaly": "increased"}),
    ("Persistent right pleural effusion with adjacent atelectasis.", {"pleural_effusion": "unchanged"}),
    ("A left pleural effusion remains.", {"pleural_effusion": "unchanged"}),
    ("Left subclavian line is stable.", {"support_device": "unchanged"}),
    ("The dominant nodule/mass in the left midlung is also mildly increased.", {"nodule": "increased"}),
    ("There has been resolution of the left-sided airspace disease.", {"consolidation": "resolved"}),
    ("Numerous bilateral pulmonary nodules have increased in size and number XXXX compared to prior study.",
     {"nodule": "increased"}),
    ("Right basilar airspace disease is unchanged.", {"consolidation": "unchanged"}),
    # sampled after the reader was written (150 sentences with change words, random seed 2026)
    ("The tracheostomy tube is in stable position.", {"support_device": "unchanged"}),
    ("Small nodule projecting near the left heart XXXX is unchanged from XXXX and appears calcified.",
     {"nodule": "unchanged"}),
    ("Stable appearance of pacemaker.", {"support_device": "unchanged"}),
    ("There is persistent mild to moderate cardiomegaly.", {"cardiomegaly": "unchanged"}),
    ("Tracheostomy tube remains in the trachea.", {"support_device": "unchanged"}),
    ("Small nodule in the right upper lung is stable.", {"nodule": "unchanged"}),
    ("Left-sided XXXX/ICD device and leads are stable.", {"support_device": "unchanged"}),
    ("Stable left lung consolidation, possibly infectious pneumonia and/or aspiration.",
     {"consolidation": "unchanged"}),
    ("Persistent but decreasing basilar infiltrates atelectasis.", {"atelectasis": "decreased"}),
    ("Heart size remains large.", {"cardiomegaly": "unchanged"}),
    (("Interval development of bilateral upper lobe consolidation, right greater than left, XXXX representing "
     "pneumonia.."), {"consolidation": "new"}),
    ("There is persistence of a left lower lobe calcified nodule XXXX representing a granuloma.",
     {"nodule": "unchanged"}),
    ("The lungs are clear without interval consolidation, pleural effusion or pneumothorax.", {}),
    ("Heart size remains normal.", {}),
    ("Recommend followup PA and lateral chest x-XXXX in 6 weeks to ensure resolution.", {}),
    (("Pulmonary vasculature is increased with mildly increased interstitial markings and fissural thickening, "
     "suggesting mild pulmonary edema."), {}),
    # descriptions, not changes
    (("Cardiomegaly with central vascular congestion and increased interstitial opacities suggesting mild "
     "interstitial pulmonary edema."), {}),
    ("Recommend followup after appropriate treatment to document complete resolution of the pneumonia.", {}),
    ("No pneumothorax or pleural effusion. The heart is mildly enlarged.", {}),
]
PHANTOM = [
    ("Compared with 2024-03-02, the right pleural effusion has increased.", {"pleural_effusion": "increased"}),
    ("Moderate right pleural effusion, increased since 2024-03-02.", {"pleural_effusion": "increased"}),
    ("Interval resolution of the left lower lobe consolidation.", {"consolidation": "resolved"}),
    ("The previously seen small left pneumothorax has resolved.", {"pneumothorax": "resolved"}),
    ("Unchanged moderate cardiomegaly. New small right pleural effusion.",
     {"cardiomegaly": "unchanged", "pleural_effusion": "new"}),
    ("There is a 23 mm nodule in the right mid lung, decreased since 2023-03-21.", {"nodule": "decreased"}),
    ("Possible 12 mm nodule in the right base, new since the prior study; CT is suggested.", {"nodule": "new"}),
    ("Improving mild pulmonary edema.", {"edema": "decreased"}),
    ("The endotracheal tube has been removed.", {"support_device": "resolved"}),
    ("Stable position of the ET tube.", {"support_device": "unchanged"}),
    ("The ET tube has been advanced and now terminates 4 cm above the carina.", {}),
    ("The atelectasis in the left lung base is again seen, unchanged.", {"atelectasis": "unchanged"}),
    ("Possible mild interstitial edema, similar to the prior radiograph.", {"edema": "unchanged"}),
]
NEGATED = [
    ("No new pleural effusion.", {}),
    ("No new focal consolidation or pneumothorax.", {}),
    ("There is no interval increase in the right pleural effusion.", {}),
    ("Without new consolidation. Stable cardiomegaly.", {"cardiomegaly": "unchanged"}),
    ("No pleural effusion. The nodule is unchanged.", {"nodule": "unchanged"}),
]


@pytest.mark.parametrize(("text", "expected"), REAL + PHANTOM + NEGATED, ids=lambda v: v[:50] if isinstance(v, str) else "")
def test_reads_the_change_of_each_finding(text, expected):
    assert read_changes(text) == expected


def test_statements_say_which_words_said_so():
    statements = change_statements("Interval increase in the moderate right pleural effusion. Stable cardiomegaly.")
    assert [(s.key, s.change, s.cue.lower()) for s in statements] == [
        ("pleural_effusion", "increased", "increase"), ("cardiomegaly", "unchanged", "stable")]
    assert statements[0].sentence.startswith("Interval increase")


def test_impression_settles_a_disagreement():
    # once each: the later (impression) statement wins; twice against once: the majority
    assert read_changes("The effusion has increased. IMPRESSION: Stable effusion.") == {"pleural_effusion": "unchanged"}
    assert read_changes("Increased effusion. The effusion has increased. Stable effusion.") == \
        {"pleural_effusion": "increased"}


@pytest.mark.parametrize(("text", "claims"), [
    ("No prior for comparison. Moderate right pleural effusion.", False),
    ("No prior studies are available for comparison. Lungs are clear.", False),
    ("Compared with no prior study.", False),
    ("Comparison: None. The lungs are clear.", False),
    ("There is no pleural effusion or pneumothorax. Recommend short interval follow-up.", False),
    ("Prior granulomatous disease. No acute process.", False),
    ("Compared with 2024-03-02, the right pleural effusion has increased.", True),
    ("No new consolidation.", True),              # "no new" still says a prior was read
    ("Unchanged from prior.", True),
    ("No significant interval change.", True),
    ("Heart size is stable.", True),
    ("The ET tube has been advanced and now terminates 4 cm above the carina. Interval removal of the NG tube.", True),
    ("Calcified right infrahilar lymph XXXX again seen.", True),
    ("Moderate right pleural effusion. Lungs otherwise clear.", False),
])
def test_claims_a_comparison(text, claims):
    assert claims_comparison(text) is claims


@pytest.mark.slow
def test_phantom_references_read_back_their_change(tmp_path):
    """Held-out longitudinal phantoms (a seed the reader was not tuned on): the reference reports' change
    statements read back as the manifest's `change`, and the reports without a prior claim none."""
    generate_dataset(tmp_path, 120, seed=77, config=PhantomConfig(image_size=32, workers=1), priors=True)
    agree = total = 0
    for record in read_manifest(tmp_path / "manifest.jsonl"):
        text = f"{record['report']['findings']} {record['report']['impression']}"
        if record["change"] is None:
            assert not claims_comparison(text), text
            continue
        assert claims_comparison(text), text
        truth, read = dict(record["change"]), read_changes(text)
        if "moved" in record["device_change"].values():
            truth.pop("support_device", None)
            read.pop("support_device", None)
        total += len(set(truth.items()) | set(read.items()))
        agree += len(set(truth.items()) & set(read.items()))
    assert total > 100 and agree / total >= 0.97
