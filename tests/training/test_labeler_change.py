"""The change reader: per-finding change statements (new / increased / decreased / unchanged / resolved, with
negation) on phantom and real report language, and whether a text claims a comparison at all."""

from __future__ import annotations

import pytest
from change_cases import NEGATED, PHANTOM, REAL

from training.data.longitudinal import PriorSampling
from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest
from training.evaluation.change import change_statements, claims_comparison, read_changes


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
@pytest.mark.parametrize("wording", ["varied", "house"])
def test_phantom_references_read_back_their_change(tmp_path, wording):
    """Held-out longitudinal phantoms (a seed the reader was not tuned on): the reference reports' change
    statements read back as the manifest's `change`, and the reports without a prior claim none; in the
    varied wording of references and in the house wording of training targets alike."""
    generate_dataset(tmp_path, 120, seed=77, config=PhantomConfig(image_size=32, workers=1),
                     priors=PriorSampling(wording=wording))
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
