"""The status bar (node, studies today, model and provider, queue, PACS) and the banner that lists problems
without stopping anything (bad bundle, port in use, send failed)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QStatusBar, QToolButton, QWidget


class StatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.critical = QLabel("")
        self.critical.setStyleSheet("color: #d0021b; font-weight: bold;")
        self.out_of_domain = QLabel("")
        self.out_of_domain.setStyleSheet("color: #d0021b;")
        self.node, self.today, self.model, self.queue, self.pacs = (QLabel("…") for _ in range(5))
        for label in (self.critical, self.out_of_domain, self.node, self.today, self.model, self.queue, self.pacs):
            label.setContentsMargins(6, 0, 6, 0)
            self.addPermanentWidget(label)

    def show_status(self, status) -> None:
        """`status`: a raddraft.workstation.WorkstationStatus."""
        colour = "#1e8e5a" if status.listening else "#b03a2e"
        self.node.setText(f"<span style='color:{colour}'>●</span> {status.node}")
        self.today.setText(f"{status.studies_today} studies today")
        self.model.setText(f"Model {status.model}" + (f" on {status.provider}" if status.provider else ""))
        self.queue.setText(f"Queue {status.queue_length}")
        self.pacs.setText(f"PACS {status.pacs}" + (f" ({status.outbox_pending} to send)" if status.outbox_pending else ""))

    def show_critical(self, count: int) -> None:
        """How many studies with a critical finding wait to be read."""
        self.critical.setText(f"⚠ {count} critical" if count else "")
        self.critical.setVisible(bool(count))

    def show_out_of_domain(self, count: int) -> None:
        """How many unsigned studies have a draft outside its model's training domain."""
        self.out_of_domain.setText(f"{count} out of domain" if count else "")
        self.out_of_domain.setToolTip("Drafts of these studies are unreliable: the images are unlike the "
                                      "model's training images" if count else "")
        self.out_of_domain.setVisible(bool(count))

    def notify(self, text: str, error: bool = False) -> None:
        self.setStyleSheet("QStatusBar { color: #b03a2e; }" if error else "")
        self.showMessage(text, 10000)


class MessageBanner(QFrame):
    """Problems worth reading, one per line, until dismissed; never modal."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet("MessageBanner { background: #fdecea; border: 1px solid #e6a39a; border-radius: 4px; }")
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(text="✕", toolTip="Dismiss", autoRaise=True)
        close.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.messages: list[str] = []
        self.hide()

    def add(self, message: str) -> None:
        if message in self.messages:
            return
        self.messages = [*self.messages[-4:], message]
        self.text.setText("\n".join(self.messages))
        self.show()

    def dismiss(self) -> None:
        self.messages = []
        self.hide()

    def clear_where(self, fixed) -> None:
        """Take away the messages whose problem is fixed (`fixed(message)` is true); hide when none is left."""
        kept = [message for message in self.messages if not fixed(message)]
        if kept != self.messages:
            self.messages = kept
            self.text.setText("\n".join(kept))
            self.setVisible(bool(kept))
