"""The image viewer: series thumbnails, and one canvas per view (frontal and lateral side by side when the
study has both; with a prior, current | prior by the chest hanging protocol of `desktop.hanging`, the prior's
date on its image, a selector between priors and window/level linked across both when asked). Decoding (`engine.display.FrameCache`) and window/level rendering run on worker threads;
a canvas asks for a new rendering and gets the latest one, never a queue of stale ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shiboken6
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.hanging import LATERALS, HangingStep, LoadedPrior, PriorsOfStudy, chest_hanging
from desktop.image_canvas import ImageCanvas
from desktop.tasks import Background
from dicom_node.reports import format_date
from engine.display import DisplayFrame, FrameCache, presets, render, thumbnail, view_kind

THUMB = 96
CURRENT_COLOUR, PRIOR_COLOUR = QColor(120, 220, 120), QColor(255, 170, 60)


def to_qimage(pixels: np.ndarray) -> QImage:
    """A QImage that owns a copy of uint8 [rows, cols] (grey) or [rows, cols, 3] (RGB) pixels."""
    pixels = np.ascontiguousarray(pixels)
    rows, cols = pixels.shape[:2]
    fmt = QImage.Format.Format_Grayscale8 if pixels.ndim == 2 else QImage.Format.Format_RGB888
    return QImage(pixels.data, cols, rows, pixels.strides[0], fmt).copy()


@dataclass
class Stack:
    """The images of one series, in order."""

    title: str
    view: str
    paths: list[Path] = field(default_factory=list)


@dataclass
class _Showing:
    stacks: list[Stack] = field(default_factory=list)  # of the current study, or of the prior on screen
    stack: int = -1
    instance: int = 0
    frame: int = 0
    num_frames: int = 1
    token: int = 0
    rendering: bool = False
    pending: bool = False


def stacks_of(opened) -> list[Stack]:
    """One stack per series of an `OpenedStudy`, frontal views first, then lateral, then the rest."""
    described = {s.series_uid: s for s in getattr(opened, "series", ())}
    by_series: dict[str, Stack] = {}
    for row, path in zip(opened.instances, opened.paths):
        series = described.get(row.series_uid)
        text = series.series_description if series else ""
        if row.series_uid not in by_series:
            kind = view_kind(row.view_position, text)
            title = text or row.view_position or f"Series {series.series_number if series else ''}".strip()
            by_series[row.series_uid] = Stack(title, kind)
        by_series[row.series_uid].paths.append(path)
    order = {"frontal": 0, "lateral": 1, "": 2}
    return sorted(by_series.values(), key=lambda s: order[s.view])


class Viewer(QWidget):
    measured = Signal(str)  # a distance drawn on one of the images
    prior_changed = Signal(int)  # the prior now compared with (an index of `priors.priors`), -1: none
    priors_wanted = Signal()  # "Look for priors": ask the PACS again for the open study

    def __init__(self, background: Background, cache: FrameCache | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._background = background
        self.cache = cache or FrameCache()
        self.stacks: list[Stack] = []
        self.prior_stacks: list[Stack] = []
        self.priors = PriorsOfStudy("", ())
        self.prior_index = -1
        self.steps: list[HangingStep] = []  # the comparison's screens (frontals, laterals); [] without a prior
        self.step = 0
        self._study = 0
        self._study_uid = self._study_date = ""
        self.canvases = [ImageCanvas("frontal"), ImageCanvas("lateral")]
        self._showing = [_Showing(), _Showing()]
        self.active = 0
        self.thumbs = QListWidget()
        self.thumbs.setViewMode(QListView.ViewMode.IconMode)
        self.thumbs.setFlow(QListView.Flow.TopToBottom)
        self.thumbs.setWrapping(False)
        self.thumbs.setMovement(QListView.Movement.Static)
        self.thumbs.setIconSize(QSize(THUMB, THUMB))
        self.thumbs.setSpacing(6)
        self.thumbs.setGridSize(QSize(THUMB + 16, THUMB + 44))  # icon and two lines of text: cells never overlap
        self.thumbs.setFixedWidth(THUMB + 30)
        self.thumbs.setWordWrap(True)
        self.thumbs.itemClicked.connect(lambda item: self.show_thumbnail(self.thumbs.row(item)))
        self.presets = QComboBox(toolTip="Window presets")
        self.presets.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.presets.setMinimumContentsLength(22)
        self.presets.setPlaceholderText("Custom window")
        self.presets.activated.connect(self._apply_preset)
        self.toolbar = QToolBar()
        self.toolbar.addWidget(self.presets)
        self._build_prior_tools()
        for text, keys, slot in (
            ("Invert", "I", lambda: self.canvas.toggle_invert()), ("Fit", "F", lambda: self.canvas.fit()),
            ("Zoom in", "+", lambda: self.canvas.zoom_by(1.25)), ("Zoom out", "-", lambda: self.canvas.zoom_by(0.8)),
            ("Reset", "R", lambda: self.canvas.reset()), ("Previous image", "PgUp", lambda: self.scroll(-1)),
            ("Next image", "PgDown", lambda: self.scroll(1)),
        ):
            action = QAction(text, self, shortcut=QKeySequence(keys), toolTip=f"{text} ({keys})")
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(slot)
            self.addAction(action)
            self.toolbar.addAction(action)
        images = QHBoxLayout()
        images.setSpacing(2)
        for i, canvas in enumerate(self.canvases):
            canvas.render_wanted.connect(lambda i=i: self._render(i))
            canvas.scroll_requested.connect(lambda step, i=i: (self.set_active(i), self.scroll(step)))
            canvas.clicked.connect(lambda i=i: self.set_active(i))
            canvas.measured.connect(self.measured.emit)
            canvas.windowed.connect(lambda center, width, i=i: self._link_window(i, center, width))
            images.addWidget(canvas)
        self.canvases[1].hide()
        body = QHBoxLayout()
        body.addWidget(self.thumbs)
        body.addLayout(images, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toolbar)
        layout.addLayout(body, 1)
        self.set_active(0)

    @property
    def canvas(self) -> ImageCanvas:
        return self.canvases[self.active]

    def set_active(self, i: int) -> None:
        self.active = i
        for j, canvas in enumerate(self.canvases):
            canvas.active = j == i and self.canvases[1].isVisible()
            canvas.update()
        self._fill_presets()

    # -- studies -------------------------------------------------------------------------------------
    def clear(self) -> None:
        self._study += 1
        self._study_uid = self._study_date = ""
        self.stacks = []
        self.thumbs.clear()
        for i, canvas in enumerate(self.canvases):
            self._showing[i] = _Showing(token=self._showing[i].token + 1)
            canvas.show_message("")
            canvas.caption = ""
        self.canvases[1].hide()
        self.presets.clear()
        self._forget_priors()
        self.prior_note.hide()

    def open_study(self, opened) -> None:
        self.clear()
        study = getattr(opened, "study", None)
        self._study_uid = study.study_uid if study is not None else ""
        self._study_date = study.study_date if study is not None else ""
        self.stacks = stacks_of(opened)
        for i, stack in enumerate(self.stacks):
            item = QListWidgetItem(f"{stack.title}\n{len(stack.paths)} image{'s' if len(stack.paths) > 1 else ''}")
            self.thumbs.addItem(item)
            self._load_thumbnail(i, item)
        if not self.stacks:
            self.canvases[0].show_message("No images")
            return
        self._hang_study_alone()

    def _hang_study_alone(self) -> None:
        """Frontal | lateral of the current study (no prior to compare with)."""
        both = len(self.stacks) > 1 and self.stacks[0].view == "frontal" and self.stacks[1].view == "lateral"
        self.canvases[1].setVisible(both)
        for i in range(2 if both else 1):
            self.canvases[i].caption = ""
            self.canvases[i].label = self.stacks[i].view
            self.canvases[i].reset()
            self.show_stack(i, i)
        self.set_active(0)

    def show_thumbnail(self, stack: int) -> None:
        """A series of the current study, from its thumbnail: on the active image, or, while a prior hangs on
        the right, on the current study's side (never in the prior's place under the prior's date)."""
        self.show_stack(0 if self.steps else self.active, stack)

    def show_stack(self, canvas: int, stack: int, stacks: list[Stack] | None = None) -> None:
        stacks = self.stacks if stacks is None else stacks
        if not 0 <= stack < len(stacks):
            return
        showing = self._showing[canvas]
        showing.stacks, showing.stack, showing.instance, showing.frame, showing.num_frames = stacks, stack, 0, 0, 1
        self.canvases[canvas].label = stacks[stack].view or stacks[stack].title
        self._load(canvas, keep_window=False)

    # -- priors: current | prior, the prior's date on its image --------------------------------------------
    def _build_prior_tools(self) -> None:
        self.prior_box = QComboBox(toolTip="The prior study to compare with")
        self.prior_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.prior_box.activated.connect(self.show_prior)
        self.prior_note = QLabel("")  # "No prior", when there is none
        self.prior_note.setStyleSheet("color: palette(mid); padding: 0 6px;")
        self.laterals = QAction("Laterals", self, checkable=True, shortcut=QKeySequence("L"),
                                toolTip="Current | prior laterals instead of frontals (L)")
        self.laterals.toggled.connect(lambda on: self.show_step(1 if on else 0))
        self.link = QAction("Link W/L", self, checkable=True, shortcut=QKeySequence("K"),
                            toolTip="The same window/level on the current and the prior image (K)")
        self.link.toggled.connect(lambda on: on and self._link_window(self.active, self.canvas.center,
                                                                      self.canvas.width_))
        self.look_again = QAction("Look for priors", self, toolTip="Ask the PACS again for this patient's "
                                  "earlier studies, and retrieve them")
        self.look_again.triggered.connect(self.priors_wanted.emit)
        self._prior_actions = []
        for widget in (self.prior_box, self.prior_note):
            self._prior_actions.append(self.toolbar.addWidget(widget))
        self.toolbar.addAction(self.look_again)
        for action in (self.laterals, self.link):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
            self.toolbar.addAction(action)
            self._prior_actions.append(action)
        self._show_prior_tools()

    def _show_prior_tools(self) -> None:
        has_prior = self.prior_index >= 0
        box, note, laterals, link = self._prior_actions
        box.setVisible(has_prior)
        note.setVisible(not has_prior and bool(self.prior_note.text()))
        laterals.setVisible(has_prior)
        laterals.setEnabled(len(self.steps) > 1)
        link.setVisible(has_prior)
        self.look_again.setEnabled(bool(self._study_uid))

    def _forget_priors(self) -> None:
        self.priors, self.prior_stacks, self.prior_index, self.steps, self.step = PriorsOfStudy("", ()), [], -1, [], 0
        self.prior_box.clear()
        self.prior_note.setText("")
        self._check_laterals(False)
        self._show_prior_tools()

    def set_priors(self, priors: PriorsOfStudy) -> None:
        """The priors of the study on screen (loaded on a worker thread): the newest hangs beside it."""
        if priors.study_uid != self._study_uid:
            return  # loaded for a study the radiologist has left
        self._forget_priors()
        self.priors = priors
        for loaded in priors.priors:
            self.prior_box.addItem(f"Prior {loaded.title}")
        if not priors.priors:
            self.prior_note.setText("No prior")  # why not: in its tooltip, and in full beside the draft
            self.prior_note.setToolTip(priors.reason)
            self._show_prior_tools()
            self.prior_changed.emit(-1)
            return
        self.show_prior(0)

    @property
    def prior(self) -> LoadedPrior | None:
        """The prior on screen beside the current study."""
        return self.priors.priors[self.prior_index] if 0 <= self.prior_index < len(self.priors.priors) else None

    def show_prior(self, index: int) -> None:
        if not 0 <= index < len(self.priors.priors) or not self.stacks:
            return
        self.prior_index = index
        self.prior_box.setCurrentIndex(index)
        self.prior_stacks = stacks_of(self.priors.priors[index])
        self.steps = chest_hanging([s.view for s in self.stacks], [s.view for s in self.prior_stacks])
        self._check_laterals(False)
        self._show_prior_tools()
        if self.steps:
            self.show_step(0)
        else:  # a prior without images: its report only, the study hangs alone
            self._hang_study_alone()
        self.prior_changed.emit(index)

    def show_step(self, step: int) -> None:
        """Hang one screen of the comparison: current on the left, the prior with its date on the right."""
        if not 0 <= step < len(self.steps):
            return
        self.step, hanging, prior = step, self.steps[step], self.prior
        self.canvases[1].show()
        for i, (stacks, index) in enumerate(((self.stacks, hanging.current), (self.prior_stacks, hanging.prior))):
            canvas = self.canvases[i]
            canvas.caption = f"CURRENT {format_date(self._study_date)}".strip() if i == 0 else f"PRIOR {prior.date}"
            canvas.caption_colour = CURRENT_COLOUR if i == 0 else PRIOR_COLOUR
            canvas.reset()
            self.show_stack(i, index, stacks)
        self._check_laterals(hanging.name == LATERALS)
        self.set_active(0)

    def _check_laterals(self, checked: bool) -> None:
        """The Laterals button as the hanging is, without hanging again."""
        self.laterals.blockSignals(True)
        self.laterals.setChecked(checked)
        self.laterals.blockSignals(False)

    @property
    def hanging(self) -> str:
        """What hangs: "frontals" / "laterals" against the prior, or "" (the study alone)."""
        return self.steps[self.step].name if self.steps else ""

    def _link_window(self, source: int, center: float, width: float) -> None:
        """With Link W/L on, the window the radiologist set on one image is set on the other one too."""
        if not self.link.isChecked() or not self.steps:
            return
        for j, canvas in enumerate(self.canvases):
            if j != source and canvas.isVisible() and canvas.frame is not None:
                canvas.set_window(center, width)

    def scroll(self, step: int) -> None:
        """Next/previous frame of a multi-frame image, then the next/previous image of the series."""
        showing = self._showing[self.active]
        if showing.stack < 0:
            return
        paths = showing.stacks[showing.stack].paths
        frame = showing.frame + step
        if 0 <= frame < showing.num_frames:
            showing.frame = frame
        elif 0 <= showing.instance + step < len(paths):
            showing.instance += step
            showing.frame = 0 if step > 0 else -1  # -1: the last frame, once its count is known
        else:
            return
        self._load(self.active, keep_window=True)

    # -- workers -------------------------------------------------------------------------------------
    def _load(self, i: int, keep_window: bool) -> None:
        showing = self._showing[i]
        showing.token += 1
        token, path = showing.token, showing.stacks[showing.stack].paths[showing.instance]
        frame_index = showing.frame
        cache = self.cache

        def load() -> DisplayFrame:
            frame = cache.get(path, max(frame_index, 0))
            return cache.get(path, frame.num_frames - 1) if frame_index < 0 else frame

        def done(frame: DisplayFrame) -> None:
            if token != showing.token or not shiboken6.isValid(self.canvases[i]):
                return  # the user moved on meanwhile, or the window is gone
            showing.frame, showing.num_frames = frame.frame, frame.num_frames
            count = len(showing.stacks[showing.stack].paths)
            canvas = self.canvases[i]
            canvas.position_text = f"image {showing.instance + 1}/{count}" + (
                f", frame {frame.frame + 1}/{frame.num_frames}" if frame.num_frames > 1 else "")
            canvas.set_frame(frame, keep_window=keep_window)
            self._adopt_linked_window(i)
            if i == self.active:
                self._fill_presets()

        def failed(error: Exception) -> None:
            if token == showing.token and shiboken6.isValid(self.canvases[i]):
                self.canvases[i].show_message(str(error))

        self._background.run(load, done, failed)

    def _render(self, i: int) -> None:
        showing, canvas = self._showing[i], self.canvases[i]
        if canvas.frame is None:
            return
        if showing.rendering:
            showing.pending = True
            return
        showing.rendering, showing.pending = True, False
        frame, center, width, invert = canvas.frame, canvas.center, canvas.width_, canvas.invert

        def finished(image: QImage | None) -> None:
            showing.rendering = False
            if not shiboken6.isValid(canvas):
                return  # the window closed while this rendering ran
            if image is not None:
                canvas.show_rendered(image)
            if showing.pending:
                self._render(i)

        self._background.run(lambda: to_qimage(render(frame, center, width, invert)), finished,
                             lambda error: finished(None))

    def _load_thumbnail(self, stack: int, item: QListWidgetItem) -> None:
        path, cache, study = self.stacks[stack].paths[0], self.cache, self._study

        def done(image: QImage) -> None:
            # the list (and its items) still belongs to this study, and the viewer is still there
            if study == self._study and shiboken6.isValid(item):
                item.setIcon(QIcon(QPixmap.fromImage(image)))

        self._background.run(lambda: to_qimage(thumbnail(cache.get(path), THUMB)), done, lambda error: None)

    def _fill_presets(self) -> None:
        frame = self.canvas.frame
        self.presets.clear()
        if frame is not None:
            for preset in presets(frame):
                self.presets.addItem(f"{preset.name} ({preset.width:.0f}/{preset.center:.0f})",
                                     (preset.center, preset.width))
            # the entry of the window on screen, not the first one ("Header") every time the box is refilled
            on_screen = (self.canvas.center, self.canvas.width_)
            self.presets.setCurrentIndex(next((i for i in range(self.presets.count())
                                               if tuple(self.presets.itemData(i) or ()) == on_screen), -1))

    def _adopt_linked_window(self, i: int) -> None:
        """A new image in one canvas takes the window of the other while they are linked."""
        other = self.canvases[1 - i]
        if self.link.isChecked() and self.steps and other.frame is not None and other.isVisible():
            self.canvases[i].set_window(other.center, other.width_)

    def _apply_preset(self, index: int) -> None:
        window = self.presets.itemData(index)
        if window:
            self.canvas.set_window(*window)
            self._link_window(self.active, *window)
