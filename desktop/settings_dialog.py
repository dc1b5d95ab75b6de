"""Settings: the node, the PACS destination, the model bundle and provider, and who signs. Validated
before it closes (the message names the key): the values at once, then, off the GUI thread, what needs disk
or network (the model folder loads as a bundle, the port is free, the PACS answers C-ECHO: a warning that
"Save anyway" passes). The window then applies and saves it off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

PROVIDERS = {"Automatic (best available)": [], "CPU": ["cpu"], "CUDA (NVIDIA GPU)": ["cuda", "cpu"],
             "TensorRT": ["tensorrt", "cuda", "cpu"], "DirectML": ["directml", "cpu"], "CoreML": ["coreml", "cpu"]}


def _port(value: int, minimum: int = 0) -> QSpinBox:
    box = QSpinBox()
    box.setRange(minimum, 65535)
    box.setValue(value)
    return box


class SettingsDialog(QDialog):
    def __init__(self, config, check: Callable[[Mapping[str, Any]], None], parent: QWidget | None = None,
                 verify: Callable[[Mapping[str, Any]], list[str]] | None = None, background=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RadDraft settings")
        self._config, self._check = config, check
        self._verify, self._background = verify, background
        self._warned: dict[str, Any] | None = None  # changes whose warnings were shown: OK saves them
        node, pacs, engine, reading = config.node, config.pacs, config.engine, config.reading
        self.fields: dict[str, QWidget] = {
            "node.ae_title": QLineEdit(node.ae_title), "node.host": QLineEdit(node.host),
            "node.port": _port(node.port), "node.stable_after_s": QDoubleSpinBox(),
            "pacs.ae_title": QLineEdit(pacs.ae_title), "pacs.host": QLineEdit(pacs.host),
            "pacs.port": _port(pacs.port, 1), "pacs.calling_ae": QLineEdit(pacs.calling_ae),
            "pacs.send_on_sign": QCheckBox("Send each report when it is signed"),
            "engine.model": QLineEdit(str(engine.model) if engine.model else ""),
            "engine.providers": QComboBox(), "engine.draft_on_stable": QCheckBox("Draft each study once complete"),
            "reading.radiologist": QLineEdit(reading.radiologist),
            "reading.organization": QLineEdit(reading.organization),
        }
        f = self.fields
        f["node.stable_after_s"].setRange(0.1, 3600)
        f["node.stable_after_s"].setValue(node.stable_after_s)
        f["pacs.send_on_sign"].setChecked(pacs.send_on_sign)
        f["engine.draft_on_stable"].setChecked(engine.draft_on_stable)
        f["engine.model"].setPlaceholderText("the current model (Models page)")
        f["pacs.host"].setPlaceholderText("empty: no PACS")
        f["reading.radiologist"].setPlaceholderText("Family^Given, e.g. Smith^Anna")
        f["engine.providers"].addItems(list(PROVIDERS))
        current = next((name for name, value in PROVIDERS.items() if tuple(value) == tuple(engine.providers)), None)
        if current:
            f["engine.providers"].setCurrentText(current)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(f["engine.model"], 1)
        model_row.addWidget(browse)
        layout = QVBoxLayout(self)
        for title, rows in (
            ("DICOM node (receives studies)", [("AE title", "node.ae_title"), ("Address", "node.host"),
                                               ("Port", "node.port"), ("Complete after (s)", "node.stable_after_s")]),
            ("PACS destination (signed reports)", [("AE title", "pacs.ae_title"), ("Host", "pacs.host"),
                                                   ("Port", "pacs.port"), ("Our AE title", "pacs.calling_ae"),
                                                   ("", "pacs.send_on_sign")]),
            ("Model", [("Bundle folder", model_row), ("Provider", "engine.providers"), ("", "engine.draft_on_stable")]),
            ("Reading", [("Radiologist", "reading.radiologist"), ("Organization", "reading.organization")]),
        ):
            box = QGroupBox(title)
            form = QFormLayout(box)
            for label, key in rows:
                if isinstance(key, str):
                    form.addRow(label, f[key])
                else:
                    form.addRow(label, key)
            layout.addWidget(box)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b03a2e;")
        self.error.setWordWrap(True)
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder", self.fields["engine.model"].text())
        if folder:
            self.fields["engine.model"].setText(folder)

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, widget in self.fields.items():
            if isinstance(widget, QLineEdit):
                values[key] = widget.text().strip()
            elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
                values[key] = widget.value()
            elif isinstance(widget, QCheckBox):
                values[key] = widget.isChecked()
            elif isinstance(widget, QComboBox):
                values[key] = PROVIDERS[widget.currentText()]
        values["engine.model"] = values["engine.model"] or None
        return values

    def changes(self) -> dict[str, Any]:
        """The dotted keys whose value differs from the running configuration."""
        out = {}
        for key, value in self.values().items():
            section, _, name = key.partition(".")
            current = getattr(getattr(self._config, section), name)
            comparable = list(current) if isinstance(current, tuple) else (str(current) if current is not None
                                                                              and key == "engine.model" else current)
            if value != comparable:
                out[key] = value
        return out

    def accept(self) -> None:
        changes = self.changes()
        try:
            self._check(changes)
        except Exception as error:  # noqa: BLE001 - any validation error is shown, never raised
            self._show(str(error))
            return
        if self._verify is None or self._background is None or changes == self._warned:
            super().accept()
            return
        self.ok.setEnabled(False)
        self.ok.setText("Checking…")
        self._background.run(lambda: self._verify(changes), lambda warnings: self._verified(changes, warnings),
                             lambda error: self._refused(str(error)))

    def _verified(self, changes: dict[str, Any], warnings: list[str]) -> None:
        self.ok.setEnabled(True)
        if not warnings:
            self.ok.setText("OK")
            super().accept()
            return
        self._warned = changes
        self.ok.setText("Save anyway")
        self._show(" ".join(warnings) + " Save anyway, or change it.", warning=True)

    def _refused(self, message: str) -> None:
        self.ok.setEnabled(True)
        self.ok.setText("OK")
        self._show(message)

    def _show(self, message: str, warning: bool = False) -> None:
        self.error.setText(message)
        self.error.setStyleSheet("color: #9a6700;" if warning else "color: #b03a2e;")
