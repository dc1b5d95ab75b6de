"""The prior's report beside the draft: the findings and impression of the prior on screen in the viewer
(RadDraft's own signed report of it, or the SR found in the prior study), read only; when the study has no
prior, why not."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSizePolicy, QVBoxLayout, QWidget

from desktop.hanging import LoadedPrior

SOURCES = {"raddraft": "signed here", "sr": "from the SR in the prior study"}


def prior_report_text(prior: object) -> str:
    """The prior report as the panel shows it (a `dicom_node.priors.PriorStudy`)."""
    parts = [(heading, str(getattr(prior, name, "") or "").strip())
             for heading, name in (("FINDINGS", "findings"), ("IMPRESSION", "impression"))]
    return "\n\n".join(f"{heading}\n{text}" for heading, text in parts if text)


class PriorPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.heading = QLabel("")
        self.heading.setWordWrap(True)
        self.heading.setStyleSheet("font-weight: bold; color: #c06a00;")
        self.heading.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setPlaceholderText("The prior study has no report.")
        self.text.setToolTip("The prior study's report, for comparison (read only)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.heading)
        layout.addWidget(self.text, 1)
        self.show_none("")

    def show_prior(self, loaded: LoadedPrior | None, reason: str = "") -> None:
        """The report of the prior on screen; None: the study has none (`reason` says why)."""
        if loaded is None:
            self.show_none(reason)
            return
        source = SOURCES.get(getattr(loaded.prior, "report_source", ""), "")
        self.heading.setText(f"Prior report · {loaded.title}" + (f" · {source}" if source else " · no report"))
        self.text.setPlainText(prior_report_text(loaded.prior))
        self.text.show()
        self.show()

    def show_none(self, reason: str) -> None:
        self.heading.setText(f"No prior: {reason}" if reason else "")
        self.text.clear()
        self.text.hide()
        self.setVisible(bool(reason))
