"""Which report text came from the model: marking, acceptance by the explicit action only, and signing metrics."""

from __future__ import annotations

import pytest

from engine.provenance import Origin, SectionText, levenshtein, signing_metrics, validate_for_signing

DRAFT = "No pleural effusion. Heart size is normal. Lungs are clear."


def drafted(text: str = DRAFT) -> SectionText:
    section = SectionText()
    section.start_ai("draft 1")
    for piece in (text[:9], text[9:30], text[30:]):  # streamed in pieces
        section.append_ai(piece)
    return section


def marked(section: SectionText) -> list[str]:
    return [section.text[s.start:s.end] for s in section.unreviewed()]


def test_streamed_text_is_ai_and_marked():
    section = drafted()
    assert section.text == DRAFT and section.model_text == DRAFT and section.source == "draft 1"
    assert marked(section) == [DRAFT]
    assert section.ai_characters() == len(DRAFT)


def test_typing_inside_a_sentence_changes_only_the_typed_characters():
    section = drafted()
    section.sync_to(DRAFT.replace("No pleural", "No large pleural"))
    assert marked(section) == ["No ", "pleural effusion. Heart size is normal. Lungs are clear."]
    assert [s.origin for s in section.spans()] == [Origin.AI, Origin.HUMAN, Origin.AI]


def test_deleting_model_text_reviews_nothing():
    section = drafted()
    section.sync_to(DRAFT.replace(" size", ""))
    assert marked(section) == [DRAFT.replace(" size", "")]
    assert section.ai_characters() == len(DRAFT) - len(" size")


def test_from_runs_is_what_an_editor_hands_over():
    section = SectionText.from_runs([("No effusion.", Origin.ACCEPTED), (" Mild cardiomegaly.", Origin.HUMAN)],
                                    "No effusion.", "draft 3")
    assert section.text == "No effusion. Mild cardiomegaly."
    assert section.accepted_characters() == len("No effusion.") == section.ai_characters()
    assert section.origins()[-1] == Origin.HUMAN and section.source == "draft 3"


def test_a_new_sentence_beside_ai_text_leaves_it_marked():
    section = drafted()
    section.sync_to(DRAFT + " Mild cardiomegaly.")
    assert marked(section) == [DRAFT]
    assert section.text.endswith(" Mild cardiomegaly.")
    assert section.spans()[-1].origin == Origin.HUMAN


def test_cursor_hint_places_a_doubled_letter():
    section = drafted("All well.")
    section.sync_to("All wwell.", cursor_hint=5)  # typed the second "w" after "All w"
    assert [(s.start, s.end, s.origin) for s in section.spans()] == [
        (0, 5, Origin.AI), (5, 6, Origin.HUMAN), (6, 10, Origin.AI)]


def test_accept_and_validation_for_signing():
    findings, impression = drafted(), SectionText()
    problems = validate_for_signing({"findings": findings, "impression": impression})
    assert problems == ["Findings has 1 AI-marked passage not yet accepted (edit it, or press Accept AI text).", "Impression is empty."]
    impression.sync_to("Normal chest.")
    assert findings.accept_all() == len(DRAFT)
    assert validate_for_signing({"findings": findings, "impression": impression}) == []
    assert marked(findings) == [] and findings.ai_characters() == len(DRAFT)


def test_signing_metrics_share_kept_and_edit_distance():
    findings, impression = drafted(), drafted("Normal chest.")
    findings.sync_to(DRAFT.replace("Heart size is normal. ", ""))  # 22 characters of the model's text gone
    impression.accept_all()
    metrics = signing_metrics({"findings": findings, "impression": impression})
    written = len(DRAFT) + len("Normal chest.")
    assert metrics.ai_characters_written == written
    assert metrics.ai_characters_kept == written - 22
    assert metrics.ai_characters_accepted == len("Normal chest.")  # the findings' rest was never accepted
    assert metrics.sections["findings"]["ai_characters_accepted"] == 0
    assert metrics.ai_share_kept == pytest.approx((written - 22) / written)
    assert metrics.edit_distance == 22
    assert metrics.sections["findings"]["source"] == "draft 1"
    human = SectionText("Typed by hand.")
    assert signing_metrics({"findings": human}).ai_share_kept == 0.0
    assert signing_metrics({"findings": human}).edit_distance == len("Typed by hand.")


@pytest.mark.parametrize("a,b,distance", [("", "", 0), ("kitten", "sitting", 3), ("abc", "", 3),
                                          ("flaw", "lawn", 2), ("same text", "same text", 0)])
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_edit_outside_the_text_is_refused():
    with pytest.raises(ValueError):
        SectionText("abc").edit(2, 5, "")
