"""One image on screen: paints a rendered frame with zoom and pan, and the overlay; turns the mouse into
window/level (left drag), pan (right or middle drag), zoom (Ctrl + wheel) and scrolling (wheel).

It never decodes or renders pixels itself: it asks (`render_wanted`) and the viewer answers on a worker
thread with `show_rendered`.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.display import DisplayFrame

MIN_ZOOM, MAX_ZOOM = 0.1, 20.0


class ImageCanvas(QWidget):
    render_wanted = Signal()  # window, level or invert changed
    scroll_requested = Signal(int)  # +1 / -1: next or previous image (frame)
    clicked = Signal()

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
        self.message = ""
        self.active = False
        self._drag: tuple[Qt.MouseButton, QPointF, float, float, QPointF] | None = None
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

    def zoom_by(self, factor: float) -> None:
        self.zoom = min(max(self.zoom * factor, MIN_ZOOM), MAX_ZOOM)
        self.update()

    def reset(self) -> None:
        self.invert = False
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
        painter.setPen(QColor(230, 200, 80) if self.active else QColor(200, 200, 200))
        margin = 6
        box = self.rect().adjusted(margin, margin, -margin, -margin)
        if self.message:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
        if self.frame is not None:
            a = self.frame.attributes
            left = "\n".join(x for x in (a.get("patient", ""), a.get("patient_id", ""), _date(a.get("study_date", ""))) if x)
            right = "\n".join(x for x in (self.label, a.get("view", ""), self.position_text) if x)
            painter.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop, left)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, right)
            bottom = f"W {self.width_:.0f}  L {self.center:.0f}" + ("  inverted" if self.invert else "")
            painter.drawText(box, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, bottom)
            painter.drawText(box, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                             f"{a.get('photometric', '')}  zoom {self.zoom * 100:.0f}%")
        painter.end()

    # -- mouse ---------------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.clicked.emit()
        self.setFocus()
        self._drag = (event.button(), event.position(), self.center, self.width_, QPointF(self.pan))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is None or self.frame is None:
            return
        button, start, center, width, pan = self._drag
        delta = event.position() - start
        if button == Qt.MouseButton.LeftButton:
            lo, hi = self.frame.value_range
            step = max(hi - lo, 1.0) / 400.0  # one pixel of drag: a quarter percent of the value range
            self.set_window(center + delta.y() * step, max(width + delta.x() * step, 1.0))
        elif button in (Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            self.pan = pan + delta
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120
        if not steps:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_by(math.pow(1.15, steps))
        else:
            self.scroll_requested.emit(-1 if steps > 0 else 1)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
