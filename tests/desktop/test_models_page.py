"""The Models page in the real window, offscreen: the current model and its card, the versions, the signed
reports to train on, a fine-tuning run in a real background process, promotion and rollback.

The run's steps are real processes speaking the commands' JSON-lines protocol. They run a small script
in place of `raddraft dataset` / `raddraft finetune` (the page's `command` seam), so that the page's side
(process handling, parsing, the comparison, promotion into the registry) is tested in seconds without
training; the script's candidate is a real bundle (the embedded one under a new version) that the engine
loads when it is promoted. One slow test runs the real `raddraft dataset` and `raddraft finetune` (a tiny
model, one epoch) through the page, up to the promotion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from desktop.finetune_run import (
    FAILED,
    ComparisonError,
    LineBuffer,
    RunState,
    load_comparison,
    parse_line,
    plan_run,
    training_unavailable,
)
from dicom_node.index import StudyState
from dicom_node.reports import SignedReport, sign_report
from dicom_node.store import ReceivedInstance
from engine.registry import ModelRegistry
from tests.conftest import copy_with_fresh_uids, sample_path
from tests.embedded_model import (
    EMBEDDED_FINDINGS_F1_TEXT,
    EMBEDDED_ID,
    EMBEDDED_IMPRESSION_F1_TEXT,
    EMBEDDED_NAME,
    EMBEDDED_VERSION,
)

CANDIDATE = f"{EMBEDDED_VERSION}+site.test"
OVERRIDES = {"engine.providers": ["cpu"], "engine.follow_interval_s": 0.2, "engine.draft_on_stable": False}

STEPS_SCRIPT = r'''
import json, shutil, sys, time
from pathlib import Path

def emit(**event):
    print(json.dumps(event), flush=True)

def option(name):
    return sys.argv[sys.argv.index(name) + 1]

command = sys.argv[1]
FAIL_DATASET, HANG, PROMOTE, CURRENT = {fail_dataset!r}, {hang!r}, {promote!r}, {current!r}
if command == "dataset":
    print("dataset: reading the store", file=sys.stderr, flush=True)
    if FAIL_DATASET:
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: no signed reports after the filters", file=sys.stderr, flush=True)
        sys.exit(3)
    out = Path(option("--out"))
    out.mkdir(parents=True)
    for done in range(1, 4):
        emit(event="progress", task="dataset", done=done, total=3)
        if HANG:
            time.sleep(60)
    emit(event="result", out=str(out), studies={{"train": 1, "validation": 0, "test": 0}}, excluded={{}})
elif command == "finetune":
    source, out, data = Path(option("--from")), Path(option("--out")), Path(option("--data"))
    assert data.is_dir() and "--no-promote" in sys.argv
    emit(event="stage", name="finetune")
    for step in range(1, 5):
        emit(event="progress", task="finetune", done=step, total=4, epoch=1, epochs=1, loss=2.0 / step)
    print("training: 4 steps", file=sys.stderr, flush=True)
    emit(event="stage", name="compare")
    candidate = out / "candidate"
    shutil.copytree(source, candidate)
    manifest = json.loads((candidate / "model.json").read_text())
    manifest["version"] = "{candidate}"
    (candidate / "model.json").write_text(json.dumps(manifest))
    shutil.copy(source / "training_curves.png", out / "comparison.png")
    scores = lambda micro: {{"micro_f1": micro, "macro_f1": micro - 0.05, "bleu4": 0.3, "rouge_l": 0.5,
                            "per_finding_f1": {{"cardiomegaly": micro, "pleural_effusion": 0.8}}}}
    decision = {{"promote": PROMOTE, "forced": False, "tolerance": 0.02,
                "reasons": ["overall micro F1 better: 0.800 -> 0.850" if PROMOTE else "overall micro F1 not better"]}}
    record = {{"current": {{"name": manifest["name"], "version": CURRENT, "path": str(source)}},
              "candidate": {{"name": manifest["name"], "version": "{candidate}", "path": str(candidate)}},
              "test_studies": 12, "metrics": {{"current": scores(0.80), "candidate": scores(0.85 if PROMOTE else 0.78)}},
              "decision": decision}}
    (out / "comparison.json").write_text(json.dumps(record))
    emit(event="result", out=str(out), comparison=str(out / "comparison.json"), plot=str(out / "comparison.png"),
         candidate=str(candidate), decision=decision, installed=None)
'''


def steps_command(tmp_path: Path, *, promote: bool = True, fail_dataset: bool = False, hang: bool = False):
    script = tmp_path / "steps.py"
    script.write_text(STEPS_SCRIPT.format(promote=promote, fail_dataset=fail_dataset, hang=hang,
                                          candidate=CANDIDATE, current=EMBEDDED_VERSION))
    return (sys.executable, str(script))


def sign_one_study(ws, tmp_path: Path) -> str:
    path = tmp_path / "ct.dcm"
    uid = str(copy_with_fresh_uids(sample_path("CT_small.dcm"), path).StudyInstanceUID)
    ws.store.put(ReceivedInstance.from_part10(path.read_bytes()))
    ws.store.index.transition(uid, StudyState.STABLE)
    sign_report(ws.store.index, SignedReport(uid, "No effusion.", "Normal.", "Smith^Anna"))
    return uid


def open_page(desktop, qtbot, tmp_path, **script):
    window = desktop(**OVERRIDES)
    sign_one_study(window.ws, tmp_path)
    page = window.open_models()
    if script:
        page.command = steps_command(tmp_path, **script)
    page.unavailable_reason = None  # the steps are the script's: the training extra is not needed
    qtbot.waitUntil(lambda: page.overview is not None, timeout=10_000)
    page._update_buttons()
    return window, page


def table_rows(table) -> list[list[str]]:
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def registry(window) -> ModelRegistry:
    return ModelRegistry(window.ws.store.root / "models", embedded=window.ws.model_choice.path)


def run_to_the_comparison(page, qtbot) -> None:
    qtbot.mouseClick(page.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.comparison is not None, timeout=30_000)


def test_the_page_shows_the_current_model_its_card_the_versions_and_the_signed_reports(desktop, qtbot, tmp_path):
    window, page = open_page(desktop, qtbot, tmp_path)
    assert window.models_dialog.isVisible()
    assert f"Drafting with {EMBEDDED_ID}" in page.running_label.text()
    card = page.card.toPlainText()
    assert card.startswith(f"{EMBEDDED_NAME} {EMBEDDED_VERSION}") and "Synthetic phantoms only." in card  # rendered
    assert "**" not in card
    assert table_rows(page.table) == [["●", EMBEDDED_VERSION, EMBEDDED_NAME, "–", EMBEDDED_FINDINGS_F1_TEXT,
                                        EMBEDDED_IMPRESSION_F1_TEXT, "embedded"]]
    assert page.signed_label.text() == ("Signed reports available for training: 1 (1 new since the current "
                                        "model was installed).")
    page.table.selectRow(0)
    assert not page.use_button.isEnabled()  # it is the current one already
    assert page.finetune_button.isEnabled() and not page.cancel_button.isEnabled()
    assert not page.promote_button.isEnabled() and not page.promote_anyway_button.isEnabled()


def test_a_run_then_promote_then_roll_back(desktop, qtbot, tmp_path):
    window, page = open_page(desktop, qtbot, tmp_path, promote=True)
    run_to_the_comparison(page, qtbot)
    log = page.log.toPlainText()
    assert f"dataset --from-store {window.ws.store.root} --out {window.ws.store.root / 'training'}" in log
    assert "--no-promote --progress json" in log and f"--from {window.ws.model.bundle_dir}" in log
    assert "dataset: reading the store" in log and "training: 4 steps" in log and "[stage] compare" in log
    assert page.run.results["dataset"]["studies"]["train"] == 1
    assert page.progress.value() == page.progress.maximum() > 0  # full
    assert page.status.text().startswith("Finished")
    rows = table_rows(page.comparison_table)
    assert rows[0] == ["clinical micro F1", "0.800", "0.850", "+0.050"]
    assert ["F1 pleural effusion", "0.800", "0.800", "+0.000"] in rows
    assert "Promote the candidate" in page.decision_label.text() and "12 held-out studies" in page.decision_label.text()
    assert not page.plot.pixmap().isNull()
    assert page.promote_button.isEnabled() and not page.promote_anyway_button.isEnabled()

    qtbot.mouseClick(page.promote_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.ws.model.model_id == f"{EMBEDDED_NAME}@{CANDIDATE}", timeout=30_000)
    current = registry(window).current()
    assert current.version == CANDIDATE and current.how == "promoted"
    assert current.record["decision"]["promote"] and current.record["test_studies"] == 12
    qtbot.waitUntil(lambda: page.table.rowCount() == 2 and page.table.item(0, 0).text() == "●", timeout=10_000)
    assert table_rows(page.table)[0][1] == CANDIDATE and table_rows(page.table)[0][-1] == "promoted"
    assert "0 new since" in page.signed_label.text()
    assert not page.promote_button.isEnabled()  # installed: not twice
    qtbot.waitUntil(lambda: CANDIDATE in window.status_bar.model.text(), timeout=5_000)

    page.select_version(CANDIDATE)
    assert page.details.text() == (f"{EMBEDDED_NAME}@{CANDIDATE}: promoted by the Models page.\n"
                                   f"Compared with {EMBEDDED_VERSION} on 12 held-out studies: overall micro F1 better: "
                                   "0.800 -> 0.850")
    assert not page.use_button.isEnabled()
    page.select_version(EMBEDDED_VERSION)
    assert "embedded model" in page.details.text() and page.use_button.isEnabled()
    qtbot.mouseClick(page.use_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.ws.model.model_id == EMBEDDED_ID, timeout=30_000)
    assert registry(window).current().embedded
    qtbot.waitUntil(lambda: table_rows(page.table)[1][0] == "●", timeout=10_000)


def test_promote_anyway_asks_and_is_recorded_as_forced(desktop, qtbot, tmp_path):
    window, page = open_page(desktop, qtbot, tmp_path, promote=False)
    run_to_the_comparison(page, qtbot)
    assert "Keep the current model" in page.decision_label.text()
    assert not page.promote_button.isEnabled() and page.promote_anyway_button.isEnabled()
    asked: list[str] = []
    page.confirm = lambda text: asked.append(text) or False
    qtbot.mouseClick(page.promote_anyway_button, Qt.MouseButton.LeftButton)
    assert "overall micro F1 not better" in asked[0] and registry(window).current().embedded
    page.confirm = lambda text: True
    qtbot.mouseClick(page.promote_anyway_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.ws.model.model_id.endswith(CANDIDATE), timeout=30_000)
    current = registry(window).current()
    assert current.how == "forced" and current.record["decision"]["forced"]
    assert current.record["decision"]["reasons"][-1] == "promotion forced by the user (Models page)"


def test_a_failed_step_shows_its_last_stderr_lines_and_stops(desktop, qtbot, tmp_path):
    _, page = open_page(desktop, qtbot, tmp_path, fail_dataset=True)
    qtbot.mouseClick(page.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run.outcome == FAILED, timeout=30_000)
    text = page.status.text()
    assert text.startswith("Building the dataset from signed reports failed (exit status 3):")
    assert text.endswith("ValueError: no signed reports after the filters")
    assert "finetune --from" not in page.log.toPlainText()
    assert page.finetune_button.isEnabled() and not page.cancel_button.isEnabled()
    assert page.comparison is None and not page.promote_button.isEnabled()


def test_cancel_kills_the_process(desktop, qtbot, tmp_path):
    _, page = open_page(desktop, qtbot, tmp_path, hang=True)
    qtbot.mouseClick(page.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run.done == 1, timeout=30_000)
    assert page.cancel_button.isEnabled() and not page.finetune_button.isEnabled()
    assert page.progress.maximum() == 3 and "dataset 1/3" in page.status.text()
    process = page.process
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.running(), timeout=10_000)
    assert process.exitStatus() == process.ExitStatus.CrashExit  # killed, not finished
    assert page.status.text() == "Cancelled: the process was stopped."
    assert "finetune --from" not in page.log.toPlainText() and page.finetune_button.isEnabled()


def test_without_the_training_extra_the_button_says_why(desktop, qtbot, tmp_path, monkeypatch):
    from desktop.models_page import ModelsPage

    window = desktop(**OVERRIDES)
    page = ModelsPage(window.ws, window.background, unavailable=lambda: training_unavailable(lambda name: None))
    qtbot.addWidget(page)
    page.refresh()
    qtbot.waitUntil(lambda: page.overview is not None, timeout=10_000)
    assert not page.finetune_button.isEnabled()
    assert "training extra is not installed" in page.finetune_button.toolTip()
    assert "Fine-tuning is not available" in page.unavailable_label.text()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert "packaged app" in training_unavailable()


# -- the page's data model, without Qt --------------------------------------------------------------------
def test_protocol_lines_and_partial_chunks():
    buffer = LineBuffer()
    assert buffer.feed('{"event": "progress", "task": "dataset", "do') == []
    lines = buffer.feed('ne": 2, "total": 5}\r\nplain text\n{"eve')
    assert lines == ['{"event": "progress", "task": "dataset", "done": 2, "total": 5}', "plain text"]
    assert buffer.flush() == ['{"eve'] and buffer.flush() == []
    assert parse_line(lines[0]).kind == "progress"
    assert parse_line("plain text") is None and parse_line("{broken") is None and parse_line('{"x": 1}') is None


def test_run_state_through_both_steps(tmp_path):
    run = RunState(plan_run(("raddraft",), tmp_path / "store", tmp_path / "work", tmp_path / "bundle", "T"))
    assert run.steps[0].argv == ("raddraft", "dataset", "--from-store", str(tmp_path / "store"), "--out",
                                 str(tmp_path / "work" / "dataset-T"), "--progress", "json")
    assert run.steps[1].argv == ("raddraft", "finetune", "--from", str(tmp_path / "bundle"), "--data",
                                 str(tmp_path / "work" / "dataset-T"), "--out", str(tmp_path / "work" / "finetune-T"),
                                 "--no-promote", "--progress", "json")
    run.apply(parse_line('{"event": "progress", "task": "dataset", "done": 1, "total": 4}'))
    assert "Step 1 of 2" in run.status_line() and run.status_line().endswith("dataset 1/4")
    assert run.step_exited(0) is None and run.outcome == FAILED  # exited without its result
    assert "without a message" in run.failure_text(0)

    run = RunState(plan_run(("raddraft",), tmp_path / "store", tmp_path / "work", tmp_path / "bundle", "T"))
    run.apply(parse_line('{"event": "result", "out": "x"}'))
    assert run.step_exited(0).name == "finetune" and run.done == 0
    run.apply(parse_line('{"event": "error", "message": "the dataset has no test split"}'))
    run.add_stderr(["", "Traceback"])
    assert run.step_exited(1) is None and run.failure_text(1) == ("Fine-tuning failed (exit status 1): "
                                                                   "the dataset has no test split")
    assert run.output("comparison", "comparison.json") == tmp_path / "work" / "finetune-T" / "comparison.json"


def test_a_comparison_that_is_not_one_is_a_typed_error(tmp_path):
    with pytest.raises(ComparisonError, match="is missing"):
        load_comparison(tmp_path / "comparison.json")
    (tmp_path / "comparison.json").write_text(json.dumps({"current": {}, "candidate": {}}))
    with pytest.raises(ComparisonError, match="not a comparison written by raddraft finetune"):
        load_comparison(tmp_path / "comparison.json")


# -- the real commands ----------------------------------------------------------------------------------
PASS_THROUGH = r'''
import os, sys
# The real `raddraft`, with the fine-tuning sized for a test (one epoch of a tiny model, no quantization).
EXTRA = {{"finetune": ["--original", {original!r}, "--min-test-studies", "1", "--set", "compute.threads=1",
                      "--set", "stages.finetune.optimisation.epochs=1", "--set", "stages.finetune.optimisation.batch_size=4",
                      "--set", "output.quantize=[]", "--set", "output.max_new_tokens=12"]}}
arguments = sys.argv[1:]
os.execv(sys.executable, [sys.executable, "-m", "raddraft", *arguments, *EXTRA.get(arguments[0], [])])
'''


@pytest.fixture(scope="module")
def site_studies(tmp_path_factory) -> tuple[Path, list[dict]]:
    from training.data.phantoms import PhantomConfig, generate_dataset, read_manifest

    out = tmp_path_factory.mktemp("site-studies")
    generate_dataset(out, 12, seed=707, config=PhantomConfig(image_size=64, workers=1))
    return out, read_manifest(out / "manifest.jsonl")


@pytest.mark.slow
def test_a_real_dataset_and_finetune_run_then_promotion(desktop, qtbot, tmp_path, tiny_bundle, site_studies):
    pytest.importorskip("peft", reason="fine-tuning needs the training extra")
    folder, records = site_studies
    store = tmp_path / "store"
    models = ModelRegistry(store / "models", embedded=None)
    models.install(tiny_bundle, {"how": "installed"})
    models.use("0.0.1")
    window = desktop(**OVERRIDES)
    ws = window.ws
    assert ws.model.model_id == "tiny-test@0.0.1"
    for record in records:
        for image in record["images"]:
            ws.store.put(ReceivedInstance.from_part10((folder / image).read_bytes()))
        ws.store.index.transition(record["study_uid"], StudyState.STABLE)
        sign_report(ws.store.index, SignedReport(record["study_uid"], record["report"]["findings"],
                                                 record["report"]["impression"], "Smith^Anna"))
    page = window.open_models()
    (tmp_path / "raddraft-shim.py").write_text(PASS_THROUGH.format(original=str(folder / "manifest.jsonl")))
    page.command = (sys.executable, str(tmp_path / "raddraft-shim.py"))
    qtbot.waitUntil(lambda: page.overview is not None and "12 new" in page.signed_label.text(), timeout=10_000)
    qtbot.mouseClick(page.finetune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.comparison is not None or page.run.outcome == FAILED, timeout=280_000)
    assert page.comparison is not None, page.log.toPlainText()[-3000:]
    assert page.run.results["dataset"]["studies"]["test"] >= 1
    candidate = page.comparison.candidate["version"]
    assert candidate.startswith("0.0.1+site.") and page.comparison_table.rowCount() >= 4
    assert not page.plot.pixmap().isNull()

    keep = not page.comparison.decision.promote
    page.confirm = lambda text: True
    qtbot.mouseClick(page.promote_anyway_button if keep else page.promote_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ws.model.model_id == f"tiny-test@{candidate}", timeout=60_000)
    installed = ModelRegistry(store / "models").current()
    assert installed.version == candidate and installed.how == ("forced" if keep else "promoted")
