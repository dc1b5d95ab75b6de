"""Screenshots of the desktop app for the README (`make screenshots`, run under xvfb-run or offscreen).

Makes a few phantom studies, sends them to the app's own DICOM node, lets the app draft them with the
embedded model (or, when it is not installed, a tiny random bundle built on the fly: its text is
gibberish), signs one, opens a study with a frontal and a lateral view, types a sentence into the
findings so that model text and typed text differ on screen, and saves:
  docs/app-main.png      the main window: worklist, images side by side, draft with AI-marked text, a
                         calibrated distance drawn on the frontal view
  docs/app-worklist.png  the worklist with its state badges
  docs/app-amend.png     a signed study whose image was replaced: the banner naming it, the amendment
  docs/app-prior.png     a longitudinal phantom read against its prior (signed here before): current | prior
                         frontals with the prior's date, the prior's report above the draft
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def choose_platform() -> str:
    """xcb on the (Xvfb) display when Qt can load it there, else offscreen (the same pictures: widgets
    are rendered by Qt either way)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return os.environ["QT_QPA_PLATFORM"]
    if os.environ.get("DISPLAY"):
        probe = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
                               env={**os.environ, "QT_QPA_PLATFORM": "xcb"}, capture_output=True, timeout=60,
                               check=False)
        if probe.returncode == 0:
            return "xcb"
        print("Qt cannot use the X display (missing xcb libraries?): rendering offscreen", flush=True)
    return "offscreen"


def bundle(work: Path, chosen: Path | None) -> Path:
    from raddraft.resources import embedded_model_dir

    if chosen is not None:
        return chosen
    embedded = embedded_model_dir()
    if (embedded / "model.json").exists():
        return embedded
    print("embedded model not installed: building a tiny random bundle (its drafts are gibberish)", flush=True)
    from tests.training.tiny_llava import save_tiny_llava
    from training.export import export_bundle

    checkpoint = save_tiny_llava(work / "tiny-checkpoint")
    export_bundle(checkpoint, work / "tiny-bundle", name="tiny-demo", version="0.0.1")
    return work / "tiny-bundle"


def phantoms(work: Path, count: int) -> list[dict]:
    from training.data.phantoms import PhantomConfig, generate_dataset

    out = work / "phantoms"
    generate_dataset(out, count, seed=2024, config=PhantomConfig(image_size=512, lateral_fraction=0.6, workers=1))
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for record in records:
        record["paths"] = [out / image for image in record["images"]]
    return records


def measure_on(canvas) -> None:
    """Draw a distance across the image with Shift + left drag, as a reader does."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    rect = canvas.image_rect()
    start = QPoint(int(rect.left() + rect.width() * 0.30), int(rect.top() + rect.height() * 0.45))
    end = QPoint(int(rect.left() + rect.width() * 0.45), int(rect.top() + rect.height() * 0.55))
    shift = Qt.KeyboardModifier.ShiftModifier
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, shift, start)
    QTest.mouseMove(canvas, end)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, shift, end)


def resend_corrected(workstation, study_uid: str, path: Path) -> None:
    """The study's first instance again, same SOP Instance UID, pixels changed (a corrected image)."""
    import pydicom

    from dicom_node.sender import send_files

    instance = workstation.store.index.instances_of(study_uid)[0]
    ds = pydicom.dcmread(workstation.store.path_of(instance))
    ds.PixelData = ds.pixel_array[:, ::-1].copy().tobytes()
    ds.save_as(path)
    send_files("127.0.0.1", workstation.node.port, [path], called_ae="RADDRAFT")


def sign_as_drafted(workstation, study_uid: str) -> None:
    """Sign the study's draft as it stands, answering the checks before signing as the sign dialog would."""
    from engine.findings.checks import CriticalCommunication, SignReview
    from engine.provenance import Origin, SectionText

    draft = workstation.open_study(study_uid, mark=False).draft
    sections = {"findings": SectionText(draft.findings, Origin.AI), "impression": SectionText(draft.impression, Origin.AI)}
    for section in sections.values():
        section.accept_all()
    checks = workstation.sign_checks(study_uid, draft.findings, draft.impression)
    review = SignReview(override_reason="reviewed against the images" if checks.problems else "",
                        communication=CriticalCommunication("Dr Lee, ED", "2026-12-01 10:05", "telephone")
                        if checks.critical else None)
    workstation.sign(study_uid, sections, draft.id, review)


def read_against_prior(window, workstation, work: Path, wait_until, out: Path) -> Path:
    """A longitudinal phantom's prior is sent, drafted and signed; then its current study, whose prior the
    store now holds: it opens with current | prior frontals and the prior's report."""
    from dicom_node.sender import send_files
    from training.data.phantoms import PhantomConfig, generate_dataset

    longitudinal = work / "longitudinal"
    generate_dataset(longitudinal, 2, seed=7, config=PhantomConfig(image_size=512, lateral_fraction=1.0, workers=1),
                     priors=True)
    record = next(r for r in (json.loads(line) for line in (longitudinal / "manifest.jsonl").read_text().splitlines())
                  if r.get("prior_images"))
    rows = window.worklist.model
    prior_uid, current_uid = record["prior_study_uid"], record["study_uid"]
    send_files("127.0.0.1", workstation.node.port, [longitudinal / p for p in record["prior_images"]],
               called_ae="RADDRAFT")
    wait_until(lambda: rows.row_of(prior_uid) is not None and rows.row_of(prior_uid).badge == "drafted")
    sign_as_drafted(workstation, prior_uid)
    send_files("127.0.0.1", workstation.node.port, [longitudinal / p for p in record["images"]], called_ae="RADDRAFT")
    wait_until(lambda: rows.row_of(current_uid) is not None and rows.row_of(current_uid).badge in ("drafted", "failed"))
    window.worklist.select(current_uid)
    window.open_study(current_uid)
    viewer = window.viewer
    wait_until(lambda: window.opened is not None and window.opened.study.study_uid == current_uid
               and viewer.prior is not None and all(c.image is not None for c in viewer.canvases))
    deadline = time.monotonic() + 1.0
    wait_until(lambda: time.monotonic() > deadline)
    path = out / "app-prior.png"
    window.grab().save(str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--model", type=Path, help="model bundle (default: the embedded one, else a tiny random one)")
    args = parser.parse_args()
    os.environ["QT_QPA_PLATFORM"] = choose_platform()
    from PySide6.QtWidgets import QApplication

    from desktop.app import open_main_window
    from dicom_node.sender import send_files
    from raddraft.config import load_config
    from raddraft.workstation import Workstation


    def wait_until(condition, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not get there in time")
            QApplication.processEvents()
            time.sleep(0.02)

    with tempfile.TemporaryDirectory(prefix="raddraft-shots-") as tmp:
        work = Path(tmp)
        model, studies = bundle(work, args.model), phantoms(work, args.studies)
        (work / "raddraft.toml").write_text("")
        values = {"store.root": str(work / "store"), "node.port": 0, "node.stable_after_s": 0.5,
                  "engine.model": str(model), "engine.providers": ["cpu"], "engine.max_new_tokens": 60,
                  "reading.radiologist": "Demo^Radiologist"}
        workstation = Workstation.start(load_config(work / "raddraft.toml", values), config_path=work / "raddraft.toml")
        window = open_main_window(workstation, (1500, 940))
        for study in studies:
            send_files("127.0.0.1", workstation.node.port, study["paths"], called_ae="RADDRAFT")
        rows = window.worklist.model
        wait_until(lambda: all(rows.row_of(s["study_uid"]) is not None and rows.row_of(s["study_uid"]).badge
                               in ("drafted", "failed") for s in studies))
        # Sign one study, so the worklist shows more than one state.
        signed = studies[-1]["study_uid"]
        window.open_study(signed)
        wait_until(lambda: window.opened is not None and window.opened.study.study_uid == signed
                   and window.panel.findings.toPlainText() != "")
        window.panel.accept_ai()
        window.sign()
        wait_until(lambda: rows.row_of(signed).badge == "signed")
        # Open a study with both views and start reading it.
        shown = next((s for s in studies if len(s["paths"]) > 1), studies[0])
        window.worklist.select(shown["study_uid"])
        window.open_study(shown["study_uid"])
        wait_until(lambda: window.opened is not None and window.opened.study.study_uid == shown["study_uid"]
                   and all(c.image is not None for c in window.viewer.canvases if c.isVisible()))
        editor = window.panel.impression
        editor.moveCursor(editor.textCursor().MoveOperation.End)
        editor.insertPlainText("\nCompared with no prior study.")
        measure_on(window.viewer.canvases[0])
        wait_until(lambda: rows.row_of(shown["study_uid"]).in_progress)
        deadline = time.monotonic() + 1.5  # let the status bar and thumbnails settle
        wait_until(lambda: time.monotonic() > deadline)
        args.out.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(args.out / "app-main.png"))
        window.worklist.grab().save(str(args.out / "app-worklist.png"))
        # The signed study's frontal image is resent corrected: banner, badge, then an amendment.
        window.open_study(signed)
        wait_until(lambda: window.opened is not None and window.opened.study.study_uid == signed
                   and window.panel.signed)
        resend_corrected(workstation, signed, work / "corrected.dcm")
        wait_until(lambda: window.panel.changed.isVisible())
        window.panel.amend.click()
        window.panel.addendum.setText("Frontal view replaced by the modality (corrected pixels); findings unchanged.")
        window.panel.findings.moveCursor(window.panel.findings.textCursor().MoveOperation.End)
        window.panel.findings.insertPlainText(" Reviewed on the corrected frontal view.")
        deadline = time.monotonic() + 1.0
        wait_until(lambda: time.monotonic() > deadline)
        window.grab().save(str(args.out / "app-amend.png"))
        print(f"saved {read_against_prior(window, workstation, work, wait_until, args.out)}")
        print(f"saved {args.out / 'app-main.png'}, {args.out / 'app-worklist.png'} and {args.out / 'app-amend.png'} "
              f"(model {workstation.model.model_id if workstation.model else 'none'})")
        window.shutdown()
        window.close()
        workstation.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
