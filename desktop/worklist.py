"""The worklist: studies from the store, live, with a state badge; sort, search, state filter, keyboard.

`WorklistModel` holds `dicom_node.worklist.WorklistRow`s and updates row by row (selection survives a
refresh); `WorklistFeed` fetches rows on a worker thread, at most a few times a second however many
instances arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QRect,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from dicom_node.reports import format_date, person_name
from dicom_node.worklist import BADGES, WorklistRow

STUDY_UID_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
BADGE_ROLE = Qt.ItemDataRole.UserRole + 3
CRITICAL_ROLE = Qt.ItemDataRole.UserRole + 4
CRITICAL = "critical"

BADGE_COLOURS = {
    "receiving": "#6b7c93", "stable": "#8a8f98", "drafting": "#c98a00", "drafted": "#2f6fdb", "failed": "#c0392b",
    "signed": "#1e8e5a", "sending": "#3c9d8f", "send failed": "#d35400", "sent": "#166b43", CRITICAL: "#d0021b",
    "changed after signing": "#8e44ad",
}
STATE_FILTERS = {
    "All studies": None,
    "To read": {"receiving", "stable", "drafting", "drafted", "failed", CRITICAL},
    "Drafted": {"drafted", CRITICAL},
    "Critical": {CRITICAL},
    "Signed / sent": {"signed", "sending", "send failed", "sent", "changed after signing"},
    "Problems": {"failed", "send failed", "changed after signing"},
}


def _received(row: WorklistRow) -> str:
    when = time.localtime(row.last_received)
    today = time.localtime()
    same_day = (when.tm_year, when.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", when)


def shown_badge(row: WorklistRow) -> str:
    """A study with an unsigned critical finding shows a red "critical" badge instead of its state."""
    return CRITICAL if row.critical_unread else row.badge


def progress_text(row: WorklistRow, reader: str = "") -> str:
    """"in progress" for the reader's own opened study, "being read by X" for one another radiologist holds."""
    if not row.in_progress:
        return ""
    return f"being read by {row.opened_by}" if row.opened_by and reader and row.opened_by != reader else "in progress"


def _state_text(row: WorklistRow, reader: str = "") -> str:
    badge, progress = shown_badge(row), progress_text(row, reader)
    return f"{badge} · {progress}" if progress else badge


def domain_text(row: WorklistRow) -> str:
    """The current draft's domain state ("" without a draft)."""
    if not row.has_draft:
        return ""
    return {True: "in domain", False: "OUT OF DOMAIN", None: "unknown"}[row.in_domain]


# (header, display text, sort key)
COLUMNS: tuple[tuple[str, Callable[[WorklistRow], str], Callable[[WorklistRow], object]], ...] = (
    ("Patient", lambda r: person_name(r.patient_name), lambda r: person_name(r.patient_name).lower()),
    ("Patient ID", lambda r: r.patient_id, lambda r: r.patient_id),
    ("Accession", lambda r: r.accession_number, lambda r: r.accession_number),
    ("Modality", lambda r: r.modalities.replace(",", "/"), lambda r: r.modalities),
    ("Description", lambda r: r.study_description, lambda r: r.study_description.lower()),
    ("Study date", lambda r: format_date(r.study_date), lambda r: r.study_date + r.study_time),
    ("Received", _received, lambda r: r.last_received),
    ("Images", lambda r: str(r.num_instances), lambda r: r.num_instances),
    ("State", _state_text, lambda r: -1 if r.critical_unread else BADGES.index(r.badge) if r.badge in BADGES else 99),
    ("Domain", lambda r: domain_text(r), lambda r: domain_text(r)),
)
STATE_COLUMN = next(i for i, (header, _, _) in enumerate(COLUMNS) if header == "State")
RECEIVED_COLUMN = 6


class WorklistModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[WorklistRow] = []
        self.reader = ""  # who reads here: studies opened by someone else say who

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        _, text, key = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _state_text(row, self.reader) if index.column() == STATE_COLUMN else text(row)
        if role == SORT_ROLE:
            return key(row)
        if role == STUDY_UID_ROLE:
            return row.study_uid
        if role == BADGE_ROLE:
            return shown_badge(row), progress_text(row, self.reader)
        if role == CRITICAL_ROLE:
            return row.critical_unread
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == STATE_COLUMN:
            critical = f"Critical: {', '.join(row.critical)}" if row.critical_unread else ""
            return "; ".join(p for p in (critical, row.badge_detail) if p) or None
        if role == Qt.ItemDataRole.ForegroundRole and row.critical_unread:
            return QColor(BADGE_COLOURS[CRITICAL])
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() == 7:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def critical_count(self) -> int:
        return sum(row.critical_unread for row in self._rows)

    def out_of_domain_count(self) -> int:
        return sum(row.out_of_domain_unread for row in self._rows)

    def row_of(self, study_uid: str) -> WorklistRow | None:
        return next((r for r in self._rows if r.study_uid == study_uid), None)

    def set_rows(self, rows: list[WorklistRow]) -> None:
        """Apply a fresh list: remove, update and add rows one by one (no reset, so selection stays)."""
        fresh = {r.study_uid: r for r in rows}
        for i in range(len(self._rows) - 1, -1, -1):
            if self._rows[i].study_uid not in fresh:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._rows[i]
                self.endRemoveRows()
        known = set()
        for i, old in enumerate(self._rows):
            known.add(old.study_uid)
            new = fresh[old.study_uid]
            if new != old:
                self._rows[i] = new
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        added = [r for r in rows if r.study_uid not in known]
        if added:
            self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows) + len(added) - 1)
            self._rows.extend(added)
            self.endInsertRows()


class WorklistFilter(QSortFilterProxyModel):
    """Search text in any column, and a set of badges to show (None: all)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.badges: set[str] | None = None
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_badges(self, badges: set[str] | None) -> None:
        if hasattr(self, "endFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self.badges = badges
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self.badges = badges
            self.invalidateFilter()

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:
        """Studies with an unsigned critical finding come first, whatever the column and order."""
        left_critical, right_critical = bool(left.data(CRITICAL_ROLE)), bool(right.data(CRITICAL_ROLE))
        if left_critical != right_critical:
            ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
            return left_critical if ascending else right_critical
        return super().lessThan(left, right)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:
        if self.badges is not None:
            badge, _ = self.sourceModel().index(source_row, STATE_COLUMN, source_parent).data(BADGE_ROLE)
            if badge not in self.badges:
                return False
        return super().filterAcceptsRow(source_row, source_parent)


class BadgeDelegate(QStyledItemDelegate):
    """The state as a coloured pill, with "in progress" (or who reads it) beside it."""

    def paint(self, painter: QPainter, option, index: QModelIndex) -> None:
        badge, progress = index.data(BADGE_ROLE)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setClipRect(option.rect)  # never over the next column
        metrics = option.fontMetrics
        badge = metrics.elidedText(badge, Qt.TextElideMode.ElideRight, max(option.rect.width() - 22, 20))
        width = metrics.horizontalAdvance(badge) + 14
        pill = QRect(option.rect.x() + 4, option.rect.y() + 3, width, option.rect.height() - 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(BADGE_COLOURS.get(badge, "#777777")))
        painter.drawRoundedRect(pill, pill.height() / 2, pill.height() / 2)
        painter.setPen(QColor("white"))
        painter.drawText(pill, Qt.AlignmentFlag.AlignCenter, badge)
        if progress:
            painter.setPen(option.palette.text().color())
            rest = QRect(pill.right() + 6, option.rect.y(), option.rect.width() - width - 10, option.rect.height())
            painter.drawText(rest, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, f"● {progress}")
        painter.restore()


class WorklistPanel(QWidget):
    study_opened = Signal(str)
    release_requested = Signal(str)  # an admin lets another reader's claim of a study go

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = WorklistModel(self)
        self.proxy = WorklistFilter(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit(placeholderText="Search patient, ID, accession, description…", clearButtonEnabled=True)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)
        self.state_filter = QComboBox()
        self.state_filter.addItems(list(STATE_FILTERS))
        self.state_filter.currentTextChanged.connect(lambda name: self.proxy.set_badges(STATE_FILTERS[name]))
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(RECEIVED_COLUMN, Qt.SortOrder.DescendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().hide()
        self.view.setItemDelegateForColumn(STATE_COLUMN, BadgeDelegate(self.view))
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.view.setWordWrap(False)
        for column, width in enumerate((200, 110, 110, 70, 220, 90, 130, 60)):
            self.view.setColumnWidth(column, width)
        self.view.setColumnWidth(STATE_COLUMN, 230)  # "changed after signing", or a state and "● in progress"
        self.view.activated.connect(self._open_index)
        self.view.doubleClicked.connect(self._open_index)
        self.may_release = False  # an admin of the site server: claims of others may be released here
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        bar = QHBoxLayout()
        bar.addWidget(self.search, 1)
        bar.addWidget(self.state_filter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.view)

    def set_rows(self, rows: list[WorklistRow]) -> None:
        self.model.set_rows(rows)

    def set_reader(self, name: str) -> None:
        """The radiologist reading here: the studies others opened show "being read by" them."""
        self.model.reader = name

    def critical_count(self) -> int:
        return self.model.critical_count()

    def out_of_domain_count(self) -> int:
        return self.model.out_of_domain_count()

    def current_study_uid(self) -> str | None:
        index = self.view.currentIndex()
        return index.data(STUDY_UID_ROLE) if index.isValid() else None

    def uids_in_view_order(self) -> list[str]:
        return [self.proxy.index(r, 0).data(STUDY_UID_ROLE) for r in range(self.proxy.rowCount())]

    def select(self, study_uid: str) -> bool:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(STUDY_UID_ROLE) == study_uid:
                self.view.setCurrentIndex(index)
                self.view.scrollTo(index)
                return True
        return False

    def open_relative(self, step: int, from_uid: str | None = None) -> str | None:
        """Select and open the study `step` rows away (in the current sort and filter)."""
        uids = self.uids_in_view_order()
        if not uids:
            return None
        current = from_uid or self.current_study_uid()
        position = uids.index(current) + step if current in uids else (0 if step > 0 else len(uids) - 1)
        if not 0 <= position < len(uids):
            return None
        self.select(uids[position])
        self.study_opened.emit(uids[position])
        return uids[position]

    def release_text(self, study_uid: str) -> str | None:
        """The menu entry that releases another reader's claim of the study, when this reader may."""
        row = self.model.row_of(study_uid)
        if not self.may_release or row is None or progress_text(row, self.model.reader) == "in progress":
            return None
        return f"Release the study from {row.opened_by}" if row.in_progress and row.opened_by else None

    def request_release(self, study_uid: str) -> None:
        if self.release_text(study_uid):
            self.release_requested.emit(study_uid)

    def _context_menu(self, position) -> None:
        uid = self.view.indexAt(position).data(STUDY_UID_ROLE)
        text = self.release_text(uid) if uid else None
        if text:
            menu = QMenu(self)
            release = menu.addAction(text)
            if menu.exec(self.view.viewport().mapToGlobal(position)) is release:
                self.request_release(uid)

    def _open_index(self, index: QModelIndex) -> None:
        uid = index.data(STUDY_UID_ROLE)
        if uid:
            self.study_opened.emit(uid)


class WorklistFeed(QObject):
    """Refreshes the worklist from the store on a worker thread: `request()` as often as you like; fetches
    run at most every `interval_ms`, one at a time."""

    def __init__(self, background, fetch: Callable[[], list[WorklistRow]], deliver: Callable[[list], None],
                 interval_ms: int = 250, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._background, self._fetch, self._deliver = background, fetch, deliver
        self._timer = QTimer(self, singleShot=True, interval=interval_ms)
        self._timer.timeout.connect(self._start)
        self._running = self._again = False
        self.fetches = 0

    def request(self) -> None:
        if self._running:
            self._again = True
        elif not self._timer.isActive():
            self._timer.start()

    def _start(self) -> None:
        self._running, self._again = True, False
        self._background.run(self._fetch, self._done, self._failed)

    def _done(self, rows: list[WorklistRow]) -> None:
        self._running = False
        self.fetches += 1
        self._deliver(rows)
        if self._again:
            self.request()

    def _failed(self, error: Exception) -> None:
        self._running = False
        if self._again:
            self.request()
