"""Reading against a prior in the app: how soon the radiologist sees it, and how soon Cancel stops a draft.

    python bench/prior_view.py [--studies 10] [--cancels 5]

The app (offscreen, real store and workstation) opens `--studies` CR chest studies alone and `--studies`
others whose prior (signed here, found by dicom_node.priors) hangs beside them; per opening, from
`open_study` to: the current frontal on screen, the prior's frontal on screen (its date on it), the prior's
report beside the draft. Then `--cancels` on-demand drafts with the embedded model (CPU) are cancelled after
their first piece of text: Cancel -> the section back as it was (on the GUI thread), Cancel -> the model
stopped (the worker's generation ended). Medians, worst in brackets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def wait_until(app, condition, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        app.processEvents()
        time.sleep(0.001)
    return time.perf_counter()


def studies(store, work: Path, count: int, with_prior: bool) -> list[str]:
    from dicom_node.index import StudyState
    from dicom_node.priors import PriorRetriever
    from dicom_node.reports import SignedReport, sign_report
    from dicom_node.settings import PacsSettings
    from tests.dicom_node.priors_fixtures import put_all, write_cr_study

    uids = []
    for i in range(count):
        patient = f"BENCH-{'P' if with_prior else 'A'}{i:03d}"
        if with_prior:
            earlier = write_cr_study(work / f"{patient}-earlier", patient, "20231105")
            put_all(store, earlier.paths)
            store.index.transition(earlier.study_uid, StudyState.DRAFTED)
            sign_report(store.index, SignedReport(earlier.study_uid, "Small right effusion.", "Right effusion.", "R^A"))
        current = write_cr_study(work / f"{patient}-current", patient, "20250110")
        put_all(store, current.paths)
        store.index.transition(current.study_uid, StudyState.STABLE)
        PriorRetriever(PacsSettings(), store.index, store, move_destination="RADDRAFT").retrieve_for(current.study_uid)
        uids.append(current.study_uid)
    return uids


def open_times(app, window, uid: str, with_prior: bool) -> tuple[float, float | None, float | None]:
    viewer = window.viewer
    started = time.perf_counter()
    window.open_study(uid)
    current = wait_until(app, lambda: window.opened is not None and window.opened.study.study_uid == uid
                         and viewer.canvases[0].image is not None and viewer.canvases[0].frame is not None
                         and viewer.canvases[0].frame.attributes["study_date"] == "20250110")
    if not with_prior:
        return current - started, None, None
    prior = wait_until(app, lambda: viewer.prior is not None and viewer.canvases[1].image is not None
                       and viewer.canvases[1].frame.attributes["study_date"] == "20231105")
    report = wait_until(app, lambda: "Right effusion." in window.prior_panel.text.toPlainText())
    return current - started, prior - started, report - started


def cancel_times(app, window, uid: str) -> tuple[float, float]:
    first, release, ended = threading.Event(), threading.Event(), {}
    real = window.ws.draft_section

    def held(study_uid, section, findings, on_piece, indication):
        def piece(text):
            on_piece(text)
            if not first.is_set():
                first.set()
                release.wait(30)
        try:
            return real(study_uid, section, findings, piece, indication)
        finally:
            ended["at"] = time.perf_counter()

    window.ws.draft_section = held
    try:
        before = window.panel.findings.runs()
        window.draft_section("findings", asked=True)
        wait_until(app, lambda: first.is_set() and window.panel.findings.runs() != before)
        started = time.perf_counter()
        window.panel.cancel.click()
        restored = time.perf_counter() if window.panel.findings.runs() == before else float("nan")
        release.set()
        wait_until(app, lambda: "at" in ended)
        return restored - started, ended["at"] - started
    finally:
        del window.ws.draft_section


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms ({max(values) * 1000:.0f})" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--cancels", type=int, default=5)
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    from desktop.app import open_main_window
    from raddraft.config import load_config
    from raddraft.resources import embedded_model_dir
    from raddraft.workstation import Workstation

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory(prefix="raddraft-prior-view-") as tmp:
        work = Path(tmp)
        (work / "raddraft.toml").write_text("")
        values = {"store.root": str(work / "store"), "node.port": 0, "engine.draft_on_stable": False,
                  "engine.model": str(embedded_model_dir()), "engine.providers": ["cpu"],
                  "engine.max_new_tokens": 60, "reading.radiologist": "Bench^Reader"}
        workstation = Workstation.start(load_config(work / "raddraft.toml", values), config_path=work / "raddraft.toml")
        window = open_main_window(workstation, (1500, 940))
        try:
            alone = studies(workstation.store, work, args.studies, with_prior=False)
            against = studies(workstation.store, work, args.studies, with_prior=True)
            rows = {"alone": [open_times(app, window, uid, False) for uid in alone],
                    "with a prior": [open_times(app, window, uid, True) for uid in against]}
            cancels = [cancel_times(app, window, against[0]) for _ in range(args.cancels)] \
                if workstation.model is not None else []
        finally:
            window.shutdown()
            window.close()
            workstation.stop()
    print(f"Opening a study ({args.studies} each), from open_study; median (worst)\n")
    print("| study | current frontal on screen | prior frontal on screen | prior report shown |")
    print("|---|---|---|---|")
    for name, times in rows.items():
        columns = [fmt([t[k] for t in times if t[k] is not None]) for k in range(3)]
        print(f"| {name} | " + " | ".join(columns) + " |")
    if cancels:
        print(f"\nCancel drafting ({len(cancels)} drafts of the findings, embedded model on the CPU)\n")
        print("| from Cancel to | median (worst) |")
        print("|---|---|")
        print(f"| the section back as it was | {fmt([c[0] for c in cancels])} |")
        print(f"| the model stopped | {fmt([c[1] for c in cancels])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
