"""The image viewer: series thumbnails, and one canvas per view (frontal and lateral side by side when the
study has both). Decoding (`engine.display.FrameCache`) and window/level rendering run on worker threads;
a canvas asks for a new rendering and gets the latest one, never a queue of stale ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QListView,
    QListWidget,
    QListWidgetItem,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from desktop.image_canvas import ImageCanvas
from desktop.tasks import Background
from engine.display import DisplayFrame, FrameCache, presets, render, thumbnail, view_kind

THUMB = 96


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

    def __init__(self, background: Background, cache: FrameCache | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._background = background
        self.cache = cache or FrameCache()
        self.stacks: list[Stack] = []
        self._study = 0
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
        self.thumbs.itemClicked.connect(lambda item: self.show_stack(self.active, self.thumbs.row(item)))
        self.presets = QComboBox(toolTip="Window presets")
        self.presets.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.presets.setMinimumContentsLength(22)
        self.presets.setPlaceholderText("Custom window")
        self.presets.activated.connect(self._apply_preset)
        self.toolbar = QToolBar()
        self.toolbar.addWidget(self.presets)
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
        self.stacks = []
        self.thumbs.clear()
        for i, canvas in enumerate(self.canvases):
            self._showing[i] = _Showing(token=self._showing[i].token + 1)
            canvas.show_message("")
        self.canvases[1].hide()
        self.presets.clear()

    def open_study(self, opened) -> None:
        self.clear()
        self.stacks = stacks_of(opened)
        for i, stack in enumerate(self.stacks):
            item = QListWidgetItem(f"{stack.title}\n{len(stack.paths)} image{'s' if len(stack.paths) > 1 else ''}")
            self.thumbs.addItem(item)
            self._load_thumbnail(i, item)
        if not self.stacks:
            self.canvases[0].show_message("No images")
            return
        both = len(self.stacks) > 1 and self.stacks[0].view == "frontal" and self.stacks[1].view == "lateral"
        self.canvases[1].setVisible(both)
        for i in range(2 if both else 1):
            self.canvases[i].label = self.stacks[i].view
            self.canvases[i].reset()
            self.show_stack(i, i)
        self.set_active(0)

    def show_stack(self, canvas: int, stack: int) -> None:
        if not 0 <= stack < len(self.stacks):
            return
        showing = self._showing[canvas]
        showing.stack, showing.instance, showing.frame, showing.num_frames = stack, 0, 0, 1
        self.canvases[canvas].label = self.stacks[stack].view or self.stacks[stack].title
        self._load(canvas, keep_window=False)

    def scroll(self, step: int) -> None:
        """Next/previous frame of a multi-frame image, then the next/previous image of the series."""
        showing = self._showing[self.active]
        if showing.stack < 0:
            return
        paths = self.stacks[showing.stack].paths
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
        token, path = showing.token, self.stacks[showing.stack].paths[showing.instance]
        frame_index = showing.frame
        cache = self.cache

        def load() -> DisplayFrame:
            frame = cache.get(path, max(frame_index, 0))
            return cache.get(path, frame.num_frames - 1) if frame_index < 0 else frame

        def done(frame: DisplayFrame) -> None:
            if token != showing.token:
                return  # the user moved on meanwhile
            showing.frame, showing.num_frames = frame.frame, frame.num_frames
            count = len(self.stacks[showing.stack].paths)
            canvas = self.canvases[i]
            canvas.position_text = f"image {showing.instance + 1}/{count}" + (
                f", frame {frame.frame + 1}/{frame.num_frames}" if frame.num_frames > 1 else "")
            canvas.set_frame(frame, keep_window=keep_window)
            if i == self.active:
                self._fill_presets()

        self._background.run(load, done, lambda error: self.canvases[i].show_message(str(error)))

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
            if image is not None:
                canvas.show_rendered(image)
            if showing.pending:
                self._render(i)

        self._background.run(lambda: to_qimage(render(frame, center, width, invert)), finished,
                             lambda error: finished(None))

    def _load_thumbnail(self, stack: int, item: QListWidgetItem) -> None:
        path, cache, study = self.stacks[stack].paths[0], self.cache, self._study

        def done(image: QImage) -> None:
            if study == self._study:  # the list (and its items) still belongs to this study
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

    def _apply_preset(self, index: int) -> None:
        window = self.presets.itemData(index)
        if window:
            self.canvas.set_window(*window)
