"""Per-finding confidence from token probabilities, on the embedded model's tokenizer and the real labeler."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from engine.confidence import SectionTokens, finding_confidence, token_spans
from raddraft.resources import embedded_model_dir


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(embedded_model_dir() / "tokenizer.json"))


def _section(tokenizer: Tokenizer, text: str, low: dict[str, float]) -> SectionTokens:
    """`text` as the model would have written it, each token 0.99 likely except the words in `low`."""
    ids = tokenizer.encode(" " + text, add_special_tokens=False).ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
    spans = token_spans(tokenizer, ids, decoded)
    probs = [low.get(decoded[start:end].strip(), 0.99) for start, end in spans]
    return SectionTokens(decoded, ids, probs)


def test_token_spans_cover_the_text(tokenizer) -> None:
    text = "Moderate right pleural effusion."
    ids = tokenizer.encode(" " + text, add_special_tokens=False).ids
    spans = token_spans(tokenizer, ids, text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert "".join(text[a:b] for a, b in spans) == text


def test_the_weakest_token_of_each_statement_is_its_confidence(tokenizer) -> None:
    findings = _section(tokenizer, "The lungs are clear. Moderate right pleural effusion. No pneumothorax.",
                        {"The": 0.2, "right": 0.6, "No": 0.7})
    impression = _section(tokenizer, "Right pleural effusion.", {"Right": 0.5})
    confidence = finding_confidence(tokenizer, {"findings": findings, "impression": impression})
    assert confidence["pleural_effusion"] == 0.5  # the lower of the two sections
    assert confidence["pneumothorax"] == 0.7  # decided at "No"
    assert "cardiomegaly" not in confidence  # not stated: no confidence claimed
    assert all(value > 0.2 for value in confidence.values())  # "The" chooses wording, not a finding


def test_no_tokens_no_confidence(tokenizer) -> None:
    assert finding_confidence(tokenizer, {"findings": SectionTokens("", (), ())}) == {}
