"""The login of `raddraft app --server URL`: user name and password, exchanged for a token by the site server.

The exchange runs on a worker thread (`Background`); a wrong password keeps the dialog open with the
reason, and the password field is cleared.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from desktop.site_client import NotAuthorized, Session, SiteError
from desktop.tasks import Background


class LoginDialog(QDialog):
    def __init__(self, server: str, login: Callable[[str, str], Session], user: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RadDraft: log in")
        self._login, self._background = login, Background(self, max_threads=1)
        self.session: Session | None = None
        self.user = QLineEdit(user, placeholderText="user name")
        self.password = QLineEdit(placeholderText="password", echoMode=QLineEdit.EchoMode.Password)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b03a2e;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Log in")
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Site server {server}"))
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(self.buttons)
        (self.password if user else self.user).setFocus()

    def submit(self) -> None:
        name, password = self.user.text().strip(), self.password.text()
        if not name or not password:
            self.message.setText("Give your user name and password.")
            return
        self.buttons.setEnabled(False)
        self.message.setText("Logging in…")
        self._background.run(lambda: self._login(name, password), self._logged_in, self._refused)

    def _logged_in(self, session: Session) -> None:
        self.session = session
        self.accept()

    def _refused(self, error: Exception) -> None:
        self.buttons.setEnabled(True)
        self.password.clear()
        self.password.setFocus()
        self.message.setText("Wrong user name or password." if isinstance(error, NotAuthorized)
                             else str(error) if isinstance(error, SiteError) else f"Cannot log in: {error}")

    def done(self, result: int) -> None:
        self._background.wait(5000)
        super().done(result)
