"""Small numpy raster helpers for the phantom renderer: smooth masks, blur, noise, curves.

Everything works on float32 images on a normalised grid (x, y in 0..1, y downwards), so a phantom
looks the same at any pixel size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) pixel-centre coordinates in 0..1, each of shape (size, size)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def step(d: np.ndarray | float, width: float) -> np.ndarray:
    """A smooth 0→1 step of signed distance `d` (positive inside) over about `width`."""
    return 0.5 + 0.5 * np.tanh(np.asarray(d, dtype=np.float32) * np.float32(1.0 / width))


@lru_cache(maxsize=32)
def _gauss_kernel_fft(size: int, sigma_px: float) -> np.ndarray:
    f = np.fft.fftfreq(size).astype(np.float32)
    g = np.exp(-2.0 * (np.pi * sigma_px * f) ** 2).astype(np.float32)
    return np.outer(g, g[: size // 2 + 1])


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (periodic boundary, which is fine for these smooth fields) via the real FFT."""
    if sigma_px <= 0:
        return image
    size = image.shape[0]
    out = np.fft.irfft2(np.fft.rfft2(image) * _gauss_kernel_fft(size, float(sigma_px)), s=image.shape)
    return out.astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Band-limited noise with zero mean and unit standard deviation."""
    field = blur(rng.standard_normal((size, size), dtype=np.float32), sigma_px)
    return (field - field.mean()) / (field.std() + 1e-6)


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float,
            angle: float = 0.0) -> np.ndarray:
    """Normalised radius r of an (optionally rotated) ellipse: r < 1 inside."""
    dx, dy = x - cx, y - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)


def ellipse_mask(x, y, cx, cy, ax, ay, edge: float, angle: float = 0.0) -> np.ndarray:
    return step((1.0 - ellipse(x, y, cx, cy, ax, ay, angle)) * min(ax, ay), edge)


def bezier(points: list[tuple[float, float]], n: int = 24) -> np.ndarray:
    """Points along the Bezier curve of the given control points (an n x 2 array of x, y)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    layer = [np.repeat(np.asarray(p, dtype=np.float64)[None, :], n, axis=0) for p in points]
    while len(layer) > 1:
        layer = [(1 - t) * a + t * b for a, b in zip(layer[:-1], layer[1:])]
    return layer[0]


def polyline_distance(size: int, points: np.ndarray, margin: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """Distance (normalised units) from each pixel of the curve's bounding box (grown by `margin`) to the
    polyline through `points`. Returns the box slices and the distances inside it."""
    x, y = grid(size)
    lo = np.clip(((points.min(axis=0) - margin) * size).astype(int), 0, size)
    hi = np.clip(((points.max(axis=0) + margin) * size).astype(int) + 1, 0, size)
    box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    px, py = x[box][..., None], y[box][..., None]
    a, b = points[:-1].astype(np.float32), points[1:].astype(np.float32)
    ab = b - a
    length2 = np.maximum((ab ** 2).sum(axis=1), 1e-12)
    t = np.clip(((px - a[:, 0]) * ab[:, 0] + (py - a[:, 1]) * ab[:, 1]) / length2, 0.0, 1.0)
    dx = px - (a[:, 0] + t * ab[:, 0])
    dy = py - (a[:, 1] + t * ab[:, 1])
    return box, np.sqrt(dx * dx + dy * dy).min(axis=-1)


def draw_line(canvas: np.ndarray, points: np.ndarray, width: float, value: float, edge: float) -> None:
    """Add `value` along a polyline of half-width `width` (normalised units) to `canvas` in place."""
    box, dist = polyline_distance(canvas.shape[0], points, width + 4 * edge)
    if dist.size:
        canvas[box] += value * step(width - dist, edge)
