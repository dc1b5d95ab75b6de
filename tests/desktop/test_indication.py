"""The indication typed by the radiologist reaches the prompt of the draft asked for in the app, for a
model whose prompts take one; a model without one shows no indication field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.bundle import MANIFEST_NAME, PromptLayout, PromptVariant, read_manifest
from tests.desktop.test_autosave import drafted_study, open_and_wait
from tests.embedded_model import embedded_prompted

EMBEDDED = Path(__file__).resolve().parents[2] / "resources" / "models" / "raddraft-phantom-cxr"
INDICATION = "Fever, productive cough and right basal crackles for three days; rule out pneumonia"


def bundle_taking_an_indication(tmp_path: Path) -> Path:
    """The embedded bundle with rendered prompt variants that take an indication, as a template would (prompted
    without a prior: the indication is what is tested here)."""
    bundle = embedded_prompted(tmp_path / "with-indication", "image")
    manifest = read_manifest(bundle)
    plain = {"findings": manifest.prompts.findings, "impression": manifest.prompts.impression,
             "impression_from_findings": manifest.prompts.impression_from_findings}
    variants = []
    for section, text in plain.items():
        variants.append(PromptVariant(section, ("frontal",), text))
        with_indication = text.replace("<image>\n", "<image>\nIndication: {indication}\n", 1)
        variants.append(PromptVariant(section, ("frontal",), with_indication, indication=True))
    layout = PromptLayout(indication="Indication: {indication}", variants=tuple(variants))
    (bundle / MANIFEST_NAME).write_text(dataclasses.replace(manifest, prompting=layout).to_json())
    return bundle


def test_the_typed_indication_reaches_the_prompt_of_the_draft_asked_for(desktop, qtbot, tmp_path):
    window = desktop(**{"engine.model": str(bundle_taking_an_indication(tmp_path)), "engine.draft_on_stable": False})
    ws, panel = window.ws, window.panel
    uid = drafted_study(ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    assert panel.indication.isVisible() and panel.typed_indication() is None

    model = ws.model
    study = model.prepare([ws.store.path_of(row) for row in ws.store.index.instances_of(uid)])
    features = model.image_features(study)
    typed = model.generate("findings", features, **model.prompt_layout(study, INDICATION)).text
    untyped = model.generate("findings", features, **model.prompt_layout(study)).text
    assert INDICATION in model.prompt_text("findings", indication=INDICATION)
    assert typed != untyped  # else this study could not show whether the indication was used

    panel.indication.setText(INDICATION)
    window.draft_section("findings")
    qtbot.waitUntil(lambda: "findings" not in window.generating, timeout=60_000)
    assert panel.findings.section.text.strip() == typed.strip()


def test_a_model_without_an_indication_shows_no_field(desktop, qtbot, tmp_path):
    window = desktop(**{"engine.model": str(EMBEDDED), "engine.draft_on_stable": False})
    uid = drafted_study(window.ws.store, tmp_path, "a")
    open_and_wait(window, qtbot, uid)
    assert not window.ws.model.takes_indication
    assert not window.panel.indication.isVisible() and window.panel.typed_indication() is None
