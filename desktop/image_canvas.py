"""One image on screen: paints a rendered frame with zoom and pan, and the overlay (outlined text, readable
over bright anatomy; orientation markers from Patient Orientation); turns the mouse into window/level (left
drag), pan (right or middle drag), zoom at the cursor (Ctrl + wheel), a distance (Shift + left drag:
calibrated by Pixel Spacing, else Imager Pixel Spacing, else "uncalibrated" pixels; Esc clears it), a
magnifier under the cursor (the M key toggles it) and scrolling (wheel).

It never decodes or renders pixels itself: it asks (`render_wanted`) and the viewer answers on a worker
thread with `show_rendered`.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPen,
    QWheelEvent,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.display import DisplayFrame

MIN_ZOOM, MAX_ZOOM = 0.1, 20.0
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
MAGNIFIER_SIZE, MAGNIFIER_ZOOM = 180, 3.0
CAPTION_LINE = 22  # pixels: the caption's line ("PRIOR 2024-03-02") at the top of the image


def opposite(direction: str) -> str:
    return "".join(OPPOSITE.get(c, c) for c in direction)


def orientation_markers(orientation: str) -> dict[str, str]:
    """Patient Orientation "L\\F" (the direction of the rows, then of the columns) as the letters at the
    right, left, bottom and top edges; {} when the header has none."""
    parts = [part.strip() for part in orientation.split("\\")]
    if len(parts) != 2 or not all(parts):
        return {}
    return {"right": parts[0], "left": opposite(parts[0]), "bottom": parts[1], "top": opposite(parts[1])}


def distance_text(a: QPointF, b: QPointF, spacing: str, source: str) -> str:
    """The distance between two image points (in pixels of the frame): mm when calibrated."""
    dx, dy = b.x() - a.x(), b.y() - a.y()
    try:
        row, col = (float(v) for v in spacing.split("\\"))
    except ValueError:
        return f"{math.hypot(dx, dy):.0f} px (uncalibrated)"
    return f"{math.hypot(dx * col, dy * row):.1f} mm ({source})"


class ImageCanvas(QWidget):
    render_wanted = Signal()  # window, level or invert changed
    scroll_requested = Signal(int)  # +1 / -1: next or previous image (frame)
    clicked = Signal()
    measured = Signal(str)  # "23.4 mm (Pixel Spacing)": a distance just drawn
    windowed = Signal(float, float)  # center, width: the radiologist changed the window (drag), for linking

    def __init__(self, label: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.frame: DisplayFrame | None = None
        self.image: QImage | None = None
        self.center = self.width_ = 0.0
        self.invert = False
        self.zoom = 1.0  # 1.0: the image fits the canvas
        self.pan = QPointF(0, 0)
        self.position_text = ""  # "image 2/5, frame 1/3"
        self.caption = ""  # "PRIOR 2024-03-02": which study this is, when a prior hangs beside the current one
        self.caption_colour = QColor(220, 220, 220)
        self.message = ""
        self.active = False
        self._drag: tuple[Qt.MouseButton, QPointF, float, float, QPointF] | None = None
        self.measure: tuple[QPointF, QPointF] | None = None  # in frame pixels
        self.measurement = ""
        self._measuring = False
        self.magnifier = False
        self._cursor: QPointF | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # -- state ---------------------------------------------------------------------------------------
    def set_frame(self, frame: DisplayFrame, keep_window: bool = False) -> None:
        same_kind = self.frame is not None and self.frame.shape == frame.shape
        self.frame, self.message = frame, ""
        if not (keep_window and same_kind):
            self.center, self.width_ = frame.default_window
        self.render_wanted.emit()

    def show_rendered(self, image: QImage) -> None:
        self.image = image
        self.update()

    def show_message(self, text: str) -> None:
        self.frame, self.image, self.message = None, None, text
        self.update()

    def set_window(self, center: float, width: float) -> None:
        self.center, self.width_ = center, max(width, 1.0)
        self.render_wanted.emit()
        self.update()

    def toggle_invert(self) -> None:
        self.invert = not self.invert
        self.render_wanted.emit()

    def fit(self) -> None:
        self.zoom, self.pan = 1.0, QPointF(0, 0)
        self.update()

    def zoom_by(self, factor: float, at: QPointF | None = None) -> None:
        """Zoom; with `at` (a point of the widget), the image point under it stays under it."""
        old = self.zoom
        self.zoom = min(max(self.zoom * factor, MIN_ZOOM), MAX_ZOOM)
        if at is not None and self.image is not None:
            centre = QPointF(self.width() / 2, self.height() / 2) + self.pan
            moved = at - (at - centre) * (self.zoom / old)
            self.pan = moved - QPointF(self.width() / 2, self.height() / 2)
        self.update()

    def to_image(self, point: QPointF) -> QPointF:
        """A widget point in frame pixels (column, row)."""
        rect = self.image_rect()
        if self.image is None or rect.width() <= 0 or self.frame is None:
            return QPointF()
        rows, cols = self.frame.shape
        return QPointF((point.x() - rect.left()) / rect.width() * cols, (point.y() - rect.top()) / rect.height() * rows)

    def to_widget(self, point: QPointF) -> QPointF:
        rect = self.image_rect()
        rows, cols = self.frame.shape if self.frame is not None else (1, 1)
        return QPointF(rect.left() + point.x() / cols * rect.width(), rect.top() + point.y() / rows * rect.height())

    def reset(self) -> None:
        self.invert = False
        self.measure, self.measurement = None, ""  # a distance belongs to the image it was drawn on
        self.fit()
        if self.frame is not None:
            self.set_window(*self.frame.default_window)

    # -- painting ------------------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        if self.image is None:
            return QRectF()
        w, h = self.image.width(), self.image.height()
        scale = min(self.width() / w, self.height() / h) * self.zoom
        centre = QPointF(self.width() / 2, self.height() / 2) + self.pan
        return QRectF(centre.x() - w * scale / 2, centre.y() - h * scale / 2, w * scale, h * scale)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self.image is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 4)
            painter.drawImage(self.image_rect(), self.image)
        painter.setFont(QFont(self.font().family(), 9))
        colour = QColor(230, 200, 80) if self.active else QColor(220, 220, 220)
        margin = 6
        box = self.rect().adjusted(margin, margin, -margin, -margin)
        A = Qt.AlignmentFlag
        if self.message:
            outlined_text(painter, QRectF(self.rect()), A.AlignCenter, self.message, colour)
        if self.frame is not None:
            a = self.frame.attributes
            left = "\n".join(x for x in (a.get("patient", ""), a.get("patient_id", ""), _date(a.get("study_date", ""))) if x)
            right = "\n".join(x for x in (self.label, a.get("view", ""), self.position_text) if x)
            # the caption has the top line to itself: on a narrow image it would run into the corner texts
            corners = QRectF(box).adjusted(0, CAPTION_LINE if self.caption else 0, 0, 0)
            outlined_text(painter, corners, A.AlignLeft | A.AlignTop, left, colour)
            outlined_text(painter, corners, A.AlignRight | A.AlignTop, right, colour)
            bottom = f"W {self.width_:.0f}  L {self.center:.0f}" + ("  inverted" if self.invert else "")
            outlined_text(painter, QRectF(box), A.AlignLeft | A.AlignBottom, bottom, colour)
            outlined_text(painter, QRectF(box), A.AlignRight | A.AlignBottom,
                          f"{a.get('photometric', '')}  zoom {self.zoom * 100:.0f}%", colour)
            if self.caption:
                painter.save()
                painter.setFont(QFont(self.font().family(), 12, QFont.Weight.Bold))
                outlined_text(painter, QRectF(box), A.AlignHCenter | A.AlignTop, self.caption, self.caption_colour)
                painter.restore()
            self._paint_orientation(painter, colour)
            self._paint_measure(painter)
            self._paint_magnifier(painter)
        painter.end()

    def _paint_orientation(self, painter: QPainter, colour: QColor) -> None:
        markers = orientation_markers(self.frame.attributes.get("orientation", ""))
        if not markers:
            return
        painter.save()
        painter.setFont(QFont(self.font().family(), 13, QFont.Weight.Bold))
        area = QRectF(self.rect()).adjusted(8, 24 + (CAPTION_LINE if self.caption else 0), -8, -24)
        A = Qt.AlignmentFlag
        for edge, flags in (("left", A.AlignLeft | A.AlignVCenter), ("right", A.AlignRight | A.AlignVCenter),
                            ("top", A.AlignTop | A.AlignHCenter), ("bottom", A.AlignBottom | A.AlignHCenter)):
            outlined_text(painter, area, flags, markers[edge], colour)
        painter.restore()

    def _paint_measure(self, painter: QPainter) -> None:
        if self.measure is None:
            return
        a, b = (self.to_widget(p) for p in self.measure)
        painter.save()
        painter.setPen(QPen(QColor(0, 0, 0), 3))
        painter.drawLine(QLineF(a, b))
        painter.setPen(QPen(QColor(255, 220, 60), 1.5))
        painter.drawLine(QLineF(a, b))
        label = QRectF(b.x() + 6, b.y() - 8, 260, 20)
        outlined_text(painter, label, Qt.AlignmentFlag.AlignLeft, self.measurement, QColor(255, 220, 60))
        painter.restore()

    def _paint_magnifier(self, painter: QPainter) -> None:
        if not self.magnifier or self._cursor is None or self.image is None:
            return
        rect, size = self.image_rect(), MAGNIFIER_SIZE
        scale = rect.width() / self.image.width() * MAGNIFIER_ZOOM
        source_side = size / scale
        centre = QPointF((self._cursor.x() - rect.left()) / rect.width() * self.image.width(),
                         (self._cursor.y() - rect.top()) / rect.height() * self.image.height())
        source = QRectF(centre.x() - source_side / 2, centre.y() - source_side / 2, source_side, source_side)
        target = QRectF(self._cursor.x() - size / 2, self._cursor.y() - size / 2, size, size)
        painter.save()
        lens = QPainterPath()
        lens.addEllipse(target)
        painter.setClipPath(lens)
        painter.fillRect(target, Qt.GlobalColor.black)
        painter.drawImage(target, self.image, source)
        painter.setClipping(False)
        painter.setPen(QPen(QColor(255, 220, 60), 2))
        painter.drawEllipse(target)
        painter.restore()

    # -- mouse ---------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit()
        self.setFocus()
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if event.button() == Qt.MouseButton.LeftButton and shift and self.frame is not None:
            start = self.to_image(event.position())
            self.measure, self._measuring, self._drag = (start, start), True, None
            return
        self._drag = (event.button(), event.position(), self.center, self.width_, QPointF(self.pan))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._cursor = event.position()
        if self.magnifier:
            self.update()
        if self._measuring and self.measure is not None and self.frame is not None:
            self.measure = (self.measure[0], self.to_image(event.position()))
            a = self.frame.attributes
            self.measurement = distance_text(*self.measure, a.get("spacing", ""), a.get("spacing_source", ""))
            self.update()
            return
        if self._drag is None or self.frame is None:
            return
        button, start, center, width, pan = self._drag
        delta = event.position() - start
        if button == Qt.MouseButton.LeftButton:
            lo, hi = self.frame.value_range
            step = max(hi - lo, 1.0) / 400.0  # one pixel of drag: a quarter percent of the value range
            self.set_window(center + delta.y() * step, max(width + delta.x() * step, 1.0))
            self.windowed.emit(self.center, self.width_)
        elif button in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self.pan = pan + delta
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None
        if self._measuring:
            self._measuring = False
            if self.measurement:
                self.measured.emit(self.measurement)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_M and not event.modifiers():
            self.magnifier = not self.magnifier
            self.update()
            return
        if event.key() == Qt.Key.Key_Escape and self.measure is not None:
            self.measure, self.measurement = None, ""
            self.update()
            return
        super().keyPressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if not steps:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_by(math.pow(1.15, steps), at=event.position())
        else:
            self.scroll_requested.emit(-1 if steps > 0 else 1)


def outlined_text(painter: QPainter, box: QRectF, flags, text: str, colour: QColor) -> None:
    """Text with a dark outline: readable over bright bone and dark lung alike."""
    if not text:
        return
    painter.save()
    painter.setPen(QColor(0, 0, 0))
    for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, -1), (0, 1), (-1, 0), (1, 0)):
        painter.drawText(box.translated(dx, dy), flags, text)
    painter.setPen(colour)
    painter.drawText(box, flags, text)
    painter.restore()


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
