"""Reading against a prior, on the real widgets (offscreen): the chest hanging protocol (current | prior
frontals, then laterals), the prior's date on its image, window/level linked on request, a selector
between priors, the prior's report beside the draft, and why there is none when there is none."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from desktop.hanging import FRONTALS, LATERALS, HangingStep, LoadedPrior, PriorsOfStudy, chest_hanging
from desktop.pdf import report_document, write_report_pdf
from desktop.prior_panel import PriorPanel
from desktop.tasks import Background
from desktop.viewer import Viewer
from dicom_node.drafts import DraftRecord, save_draft
from dicom_node.index import StudyState
from dicom_node.priors import PriorRetriever, priors_of
from dicom_node.reports import SignedReport, latest_report, sign_report
from dicom_node.settings import PacsSettings
from dicom_node.sr import comparison_reference
from tests.desktop.test_autosave import open_and_wait
from tests.desktop.viewers import instance_row, shown_viewer
from tests.dicom_node.priors_fixtures import put_all, write_cr_study
from tests.engine.test_display import write_image

CURRENT_UID = "1.2.826.0.1.3680043.8.498.1"
PIXELS = np.tile(np.arange(0, 4000, 10, dtype=np.uint16), (300, 1))


@dataclass(frozen=True)
class StandInPrior:
    """The shape of dicom_node.priors.PriorStudy (what the viewer and the panel read)."""

    study_uid: str
    study_date: str
    modality: str
    description: str
    instances: list = field(default_factory=list)
    findings: str = ""
    impression: str = ""
    report_source: str = ""


def _study_images(tmp_path, name: str, date: str, views=("PA", "LL")):
    rows, paths = [], []
    for view in views:
        path = write_image(tmp_path / f"{name}-{view}.dcm", PIXELS, ViewPosition=view, StudyDate=date,
                           WindowCenter=2000, WindowWidth=4000)
        rows.append(instance_row(path, view))
        paths.append(path)
    return rows, paths


def _prior(tmp_path, name: str, date: str, impression: str, views=("PA", "LL")) -> LoadedPrior:
    rows, paths = _study_images(tmp_path, name, date, views)
    prior = StandInPrior(f"1.2.3.{name}", date, "CR", "chest", rows, "Lungs clear.", impression, "raddraft")
    return LoadedPrior(prior, tuple(paths))


@pytest.fixture
def backgrounds(qtbot):
    """The viewers' worker pools, drained before their widgets go (a thumbnail done after its list is gone
    would land in the next test)."""
    made: list[Background] = []
    yield made
    for background in made:
        background.wait(30_000)
        qtbot.waitUntil(lambda background=background: background.busy() == 0, timeout=30_000)


def _viewer(qtbot, tmp_path, backgrounds, views=("PA", "LL")) -> Viewer:
    _rows, paths = _study_images(tmp_path, "current", "20250115", views)
    background = Background()
    backgrounds.append(background)
    study = SimpleNamespace(study_uid=CURRENT_UID, study_date="20250115")
    return shown_viewer(qtbot, list(zip(paths, views, strict=True)), size=(1200, 600), background=background,
                        study=study)


def _shown(qtbot, viewer: Viewer, date: str, view: str) -> None:
    """Wait until the prior canvas shows an image of the prior of `date`, of `view`."""
    canvas = viewer.canvases[1]
    qtbot.waitUntil(lambda: canvas.frame is not None and canvas.image is not None
                    and canvas.frame.attributes["study_date"] == date and canvas.frame.attributes["view"] == view,
                    timeout=10_000)


def test_the_chest_hanging_protocol():
    assert chest_hanging(["frontal", "lateral"], ["frontal", "lateral"]) == [
        HangingStep(FRONTALS, 0, 0), HangingStep(LATERALS, 1, 1)]
    # a side without a lateral keeps its frontal beside the other's lateral
    assert chest_hanging(["frontal"], ["frontal", "lateral"]) == [HangingStep(FRONTALS, 0, 0),
                                                                   HangingStep(LATERALS, 0, 1)]
    assert chest_hanging(["frontal"], ["frontal"]) == [HangingStep(FRONTALS, 0, 0)]
    assert chest_hanging(["", "frontal"], ["frontal"]) == [HangingStep(FRONTALS, 1, 0)]
    assert chest_hanging(["frontal"], []) == []


def test_current_and_prior_frontals_then_laterals_with_the_prior_date(qtbot, tmp_path, backgrounds):
    viewer = _viewer(qtbot, tmp_path, backgrounds)
    assert viewer.hanging == "" and viewer.canvases[1].label == "lateral"  # alone: frontal | lateral
    viewer.set_priors(PriorsOfStudy(CURRENT_UID, (_prior(tmp_path, "p1", "20240302", "Small effusion."),),
                                    "retrieved", "prior of 2024-03-02 ready"))
    _shown(qtbot, viewer, "20240302", "PA")
    current, prior = viewer.canvases
    assert viewer.hanging == FRONTALS and prior.isVisible()
    assert current.caption == "CURRENT 2025-01-15" and prior.caption == "PRIOR 2024-03-02"
    assert current.frame.attributes["view"] == "PA" and current.frame.attributes["study_date"] == "20250115"
    assert viewer.prior_box.currentText() == "Prior 2024-03-02 · CR chest"
    viewer.setFocus()
    QTest.keyClick(viewer, Qt.Key.Key_L)  # then the laterals
    _shown(qtbot, viewer, "20240302", "LL")
    qtbot.waitUntil(lambda: current.frame.attributes["view"] == "LL", timeout=10_000)
    assert viewer.hanging == LATERALS and viewer.laterals.isChecked() and prior.caption == "PRIOR 2024-03-02"
    viewer.laterals.setChecked(False)
    _shown(qtbot, viewer, "20240302", "PA")
    viewer.set_active(1)
    viewer.show_thumbnail(1)  # a thumbnail of the current study never lands under the prior's date
    qtbot.waitUntil(lambda: current.frame.attributes["view"] == "LL", timeout=10_000)
    assert prior.frame.attributes["study_date"] == "20240302"
    viewer.show_thumbnail(0)
    qtbot.waitUntil(lambda: current.frame.attributes["view"] == "PA", timeout=10_000)
    # the date is painted on the image: the caption's orange where the overlay is drawn
    image = prior.grab().toImage()
    orange = [(x, y) for x in range(prior.width() // 2 - 80, prior.width() // 2 + 80) for y in range(6, 24)
              if (c := image.pixelColor(x, y)).red() > 200 and 120 < c.green() < 200 and c.blue() < 100]
    assert orange


def test_window_level_is_linked_only_when_asked(qtbot, tmp_path, backgrounds):
    viewer = _viewer(qtbot, tmp_path, backgrounds)
    viewer.set_priors(PriorsOfStudy(CURRENT_UID, (_prior(tmp_path, "p1", "20240302", "Small effusion."),)))
    _shown(qtbot, viewer, "20240302", "PA")
    current, prior = viewer.canvases

    def drag(dx: int, dy: int) -> None:
        qtbot.mousePress(current, Qt.MouseButton.LeftButton, pos=QPoint(300, 300))
        qtbot.mouseMove(current, QPoint(300 + dx, 300 + dy))
        qtbot.mouseRelease(current, Qt.MouseButton.LeftButton, pos=QPoint(300 + dx, 300 + dy))

    drag(40, 30)
    assert (current.center, current.width_) != (prior.center, prior.width_)  # not linked: the prior stays
    assert (prior.center, prior.width_) == prior.frame.default_window
    viewer.link.setChecked(True)  # linking takes the window of the image in hand at once
    assert (prior.center, prior.width_) == (current.center, current.width_)
    drag(-60, 10)
    assert (prior.center, prior.width_) == (current.center, current.width_) != prior.frame.default_window
    viewer.presets.activated.emit(0)  # a preset on the current image reaches the prior too
    assert (prior.center, prior.width_) == (current.center, current.width_) == tuple(viewer.presets.itemData(0))


def test_switching_between_priors_changes_image_and_report(qtbot, tmp_path, backgrounds):
    viewer = _viewer(qtbot, tmp_path, backgrounds)
    panel = PriorPanel()
    qtbot.addWidget(panel)
    viewer.prior_changed.connect(lambda _: panel.show_prior(viewer.prior, viewer.priors.reason))
    newest = _prior(tmp_path, "p1", "20240302", "Small right effusion.")
    older = _prior(tmp_path, "p2", "20230110", "No effusion.", views=("PA",))
    viewer.set_priors(PriorsOfStudy(CURRENT_UID, (newest, older), "retrieved", "ready"))
    _shown(qtbot, viewer, "20240302", "PA")
    assert [viewer.prior_box.itemText(i) for i in range(viewer.prior_box.count())] == [
        "Prior 2024-03-02 · CR chest", "Prior 2023-01-10 · CR chest"]
    assert panel.heading.text() == "Prior report · 2024-03-02 · CR chest · signed here"
    assert "IMPRESSION\nSmall right effusion." in panel.text.toPlainText() and panel.isVisible()
    viewer.prior_box.setCurrentIndex(1)
    viewer.prior_box.activated.emit(1)
    _shown(qtbot, viewer, "20230110", "PA")
    assert viewer.canvases[1].caption == "PRIOR 2023-01-10"
    assert "IMPRESSION\nNo effusion." in panel.text.toPlainText()
    assert viewer.laterals.isEnabled()  # the current study's lateral still hangs beside the prior's frontal
    no_images = LoadedPrior(StandInPrior("1.2.3.p3", "20220101", "CR", "chest", [], "", "Old report.", "sr"), ())
    viewer.set_priors(PriorsOfStudy(CURRENT_UID, (newest, no_images)))
    _shown(qtbot, viewer, "20240302", "PA")
    viewer.show_prior(1)  # a prior whose images are not here: its report, and the study alone
    assert viewer.hanging == "" and viewer.canvases[1].caption == "" and viewer.canvases[1].label == "lateral"
    assert panel.heading.text() == "Prior report · 2022-01-01 · CR chest · from the SR in the prior study"


def test_without_a_prior_the_study_hangs_alone_and_says_why(qtbot, tmp_path, backgrounds):
    viewer = _viewer(qtbot, tmp_path, backgrounds)
    panel = PriorPanel()
    qtbot.addWidget(panel)
    panel.show()
    viewer.prior_changed.connect(lambda _: panel.show_prior(viewer.prior, viewer.priors.reason))
    viewer.set_priors(PriorsOfStudy("another study", (_prior(tmp_path, "p1", "20240302", "x"),)))
    assert viewer.prior is None  # loaded for a study no longer open: ignored
    reason = "drafted without a prior: PACS ARCHIVE@127.0.0.1:104 cannot be reached for C-FIND"
    viewer.set_priors(PriorsOfStudy(CURRENT_UID, (), "pacs-unreachable", reason))
    assert viewer.prior_note.text() == "No prior" and viewer.prior_note.toolTip() == reason
    qtbot.waitUntil(viewer.prior_note.isVisible, timeout=2_000)  # the toolbar lays it out
    assert not viewer.prior_box.isVisible() and viewer.hanging == ""
    assert viewer.canvases[1].label == "lateral" and viewer.canvases[1].caption == ""
    assert panel.heading.text() == f"No prior: {reason}" and not panel.text.isVisible()


# -- in the app, over a real store: priors found by dicom_node.priors, signed as the report's comparison ------
PATIENT = "PRI-0018"
FINDINGS, IMPRESSION = "Right pleural effusion.", "Right pleural effusion."


def _current_drafted(store, tmp_path, impression: str = IMPRESSION):
    current = write_cr_study(tmp_path / "current", PATIENT, "20250110")
    put_all(store, current.paths)
    for state in (StudyState.STABLE, StudyState.DRAFTING):
        store.index.transition(current.study_uid, state)
    save_draft(store.index, DraftRecord(current.study_uid, "tiny@1", "cpu", FINDINGS, impression))
    return current


def _earlier_signed_here(store, tmp_path):
    earlier = write_cr_study(tmp_path / "earlier", PATIENT, "20231105")
    put_all(store, earlier.paths)
    store.index.transition(earlier.study_uid, StudyState.DRAFTED)
    sign_report(store.index, SignedReport(earlier.study_uid, "Small right effusion.", "Small right pleural effusion.",
                                          "Reader^A"))
    return earlier


def _sign_and_wait(window, qtbot, study_uid: str):
    window.panel.accept.click()
    window.sign()
    # the first checks before signing load the report-language pipeline (seconds on a loaded machine)
    qtbot.waitUntil(lambda: latest_report(window.ws.store.index, study_uid) is not None, timeout=60_000)
    return latest_report(window.ws.store.index, study_uid)


@pytest.mark.slow
def test_the_app_hangs_the_retrieved_prior_and_signs_it_as_the_comparison(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    store = window.ws.store
    earlier = _earlier_signed_here(store, tmp_path)
    # a comparison stated with a prior on screen is no "comparison without a prior" to review before signing
    current = _current_drafted(store, tmp_path, "Right pleural effusion, increased since the prior study.")
    PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    open_and_wait(window, qtbot, current.study_uid)
    viewer = window.viewer
    qtbot.waitUntil(lambda: viewer.prior is not None, timeout=10_000)
    _shown(qtbot, viewer, "20231105", "PA")
    assert viewer.canvases[0].caption == "CURRENT 2025-01-10" and viewer.canvases[1].caption == "PRIOR 2023-11-05"
    assert window.prior_panel.heading.text() == "Prior report · 2023-11-05 · CR CHEST PA AND LATERAL · signed here"
    assert "IMPRESSION\nSmall right pleural effusion." in window.prior_panel.text.toPlainText()

    report = _sign_and_wait(window, qtbot, current.study_uid)
    assert window.sign_dialog is None  # signed without a review of the comparison
    assert report.detail["comparison"]["study_uid"] == earlier.study_uid
    text = window.ws.report_text(report.id)
    line = "Comparison: CR CHEST PA AND LATERAL 2023-11-05."
    assert line in text and line in report_document(text).toPlainText()  # the text export and the PDF
    assert write_report_pdf(text, tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    sr = pydicom.dcmread(window.ws.sr_file(report.id))
    reference = comparison_reference(sr)
    assert (reference["study_uid"], reference["date"]) == (earlier.study_uid, "20231105")
    assert reference["baseline"] == priors_of(store.index, current.study_uid)[0].instances[0].sop_instance_uid
    assert reference["previous_findings"] == "Small right pleural effusion."


def test_no_prior_says_why_then_look_for_priors_finds_one(desktop, qtbot, tmp_path, no_model):
    window = desktop(**no_model)
    store = window.ws.store
    current = _current_drafted(store, tmp_path)
    PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
    open_and_wait(window, qtbot, current.study_uid)
    viewer, panel = window.viewer, window.prior_panel
    qtbot.waitUntil(lambda: viewer.priors.study_uid == current.study_uid, timeout=10_000)
    assert viewer.prior is None and viewer.prior_note.text() == "No prior" and viewer.hanging == ""
    assert panel.heading.text().startswith("No prior: drafted without a prior") and panel.isVisible()

    earlier = _earlier_signed_here(store, tmp_path)  # the prior reaches the store: ask again
    viewer.look_again.trigger()
    qtbot.waitUntil(lambda: viewer.prior is not None, timeout=20_000)
    assert viewer.prior.study_uid == earlier.study_uid
    _shown(qtbot, viewer, "20231105", "PA")
    assert panel.heading.text().startswith("Prior report · 2023-11-05")

    viewer.set_priors(PriorsOfStudy(current.study_uid, (), "none-found", "no earlier study"))  # read without one
    report = _sign_and_wait(window, qtbot, current.study_uid)
    assert report.detail["comparison"] is None
    assert "Comparison: none.\n" in window.ws.report_text(report.id)
    assert comparison_reference(pydicom.dcmread(window.ws.sr_file(report.id))) == {"description": "None."}
