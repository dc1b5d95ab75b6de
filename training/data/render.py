"""Procedural chest radiographs: a frontal (PA/AP) and a lateral projection of one phantom patient.

The renderer builds an attenuation map in "presentation" units (0 = air, higher = denser, shown whiter):
soft tissue of the body, air in the lungs, mediastinum and heart, diaphragm, bones (spine, ribs,
clavicles), lung vessels, then the findings change it (fluid or opacity removes lung air, a pneumothorax
adds air and removes vessels, devices add dense lines). Exposure, processing (unsharp mask) and quantum
noise finish the image. Geometry is in normalised units (0..1 across the image), so the image size is only
a sampling choice. Display convention: the patient's right is on the image left (frontal); the patient
faces the image left (lateral).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from training.data.findings import Finding
from training.data.raster import bezier, blur, draw_line, ellipse, ellipse_mask, grid, smooth_noise, step

# The field of view across the image, used to turn millimetres (nodule size) into image units.
FIELD_OF_VIEW_MM = 430.0
SIDE_SIGN = {"right": -1.0, "left": 1.0}  # frontal display: patient right on image left


@dataclass(frozen=True)
class Anatomy:
    """The phantom patient's body habitus; drawn once per study, shared by its views."""

    cx: float            # midline
    hemithorax: float    # midline to the inner rib margin at the base
    apex_y: float        # lung apices
    dome_right_y: float  # top of the right hemidiaphragm
    dome_left_y: float
    sulcus_drop: float   # costophrenic angle below the dome
    ctr: float           # cardiothoracic ratio
    mediastinum: float   # half-width of the upper mediastinum
    body: float          # midline to the skin
    lung_air: float      # how dark aerated lung is
    rib_contrast: float
    vessel_contrast: float
    arms: bool
    exposure: float      # overall brightness shift
    contrast: float
    noise: float
    gamma: float

    def dome_y(self, side: str) -> float:
        return self.dome_right_y if side == "right" else self.dome_left_y


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    dome_right = float(rng.uniform(0.66, 0.71))
    hemithorax = float(rng.uniform(0.33, 0.38))
    return Anatomy(
        cx=float(0.5 + rng.normal(0, 0.01)),
        hemithorax=hemithorax,
        apex_y=float(rng.uniform(0.11, 0.15)),
        dome_right_y=dome_right,
        dome_left_y=dome_right + float(rng.uniform(0.01, 0.03)),
        sulcus_drop=float(rng.uniform(0.05, 0.075)),
        ctr=float(rng.uniform(0.40, 0.47)),
        mediastinum=float(rng.uniform(0.055, 0.068)),
        body=hemithorax + float(rng.uniform(0.05, 0.09)),
        lung_air=float(rng.uniform(0.40, 0.48)),
        rib_contrast=float(rng.uniform(0.10, 0.15)),
        vessel_contrast=float(rng.uniform(0.16, 0.24)),
        arms=bool(rng.random() < 0.5),
        exposure=float(rng.normal(0.0, 0.04)),
        contrast=float(rng.uniform(0.85, 1.1)),
        noise=float(rng.uniform(0.008, 0.02)),
        gamma=float(rng.uniform(0.85, 1.15)),
    )


def adapt_anatomy(anatomy: Anatomy, findings: tuple[Finding, ...]) -> Anatomy:
    """Findings that change the anatomy itself: a big heart, volume loss lifting a hemidiaphragm."""
    changes: dict[str, float] = {}
    for f in findings:
        if f.kind == "cardiomegaly" and f.ctr is not None:
            changes["ctr"] = f.ctr
        if f.kind == "atelectasis" and f.severity != "mild" and f.zone == "lower":
            lift = 0.015 if f.severity == "moderate" else 0.03
            for side in f.sides():
                key = f"dome_{side}_y"
                changes[key] = getattr(anatomy, key) - lift
    return dataclasses.replace(anatomy, **changes)


# ----------------------------------------------------------------------------------------------- frontal


class _Frontal:
    """One frontal render; holds the grid and anatomy so the helpers stay small."""

    def __init__(self, anatomy: Anatomy, size: int, rng: np.random.Generator) -> None:
        self.a = anatomy
        self.size = size
        self.rng = rng
        self.x, self.y = grid(size)
        self.edge = max(0.0035, 0.8 / size)
        heart_width = anatomy.ctr * 2.0 * anatomy.hemithorax
        self.heart = (anatomy.cx + 0.17 * heart_width, anatomy.dome_left_y - 0.03,
                      0.5 * heart_width, 0.66 * 0.5 * heart_width)
        self.hila = {side: (anatomy.cx + SIDE_SIGN[side] * 0.085, 0.40) for side in ("right", "left")}

    # -- geometry
    def lung_shape(self, side: str, x: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        """The lung field of one side (before the heart and mediastinum are cut out), 0..1."""
        a, e = self.a, self.edge
        x = self.x if x is None else x
        y = self.y if y is None else y
        lateral = (x - a.cx) * SIDE_SIGN[side] / a.hemithorax  # 0 at midline, 1 at the inner rib margin
        dome = a.dome_y(side)
        t = np.clip((y - a.apex_y) / (dome - a.apex_y), 0.0, 1.0)
        width = 0.42 + 0.58 * np.sin(np.minimum(t / 0.95, 1.0) * (np.pi / 2)) ** 0.75
        top = a.apex_y + 2.2 * a.hemithorax * (lateral - 0.4) ** 2
        slope = np.where(lateral > 0.45, (a.sulcus_drop + 0.03) / 0.3, 0.035 / 0.16)
        bottom = dome + slope * (lateral - 0.45) ** 2
        return (step((width - lateral) * a.hemithorax, e) * step((lateral - 0.05) * a.hemithorax, e)
                * step(y - top, e) * step(bottom - y, e))

    def mediastinum_mask(self) -> np.ndarray:
        a, e = self.a, self.edge
        hx, hy, ha, hb = self.heart
        heart = ellipse_mask(self.x, self.y, hx, hy, ha, hb, e, angle=-0.38)
        # the upper mediastinum widens a little towards the heart
        half = a.mediastinum * (0.85 + 0.35 * np.clip((self.y - 0.2) / (hy - 0.2), 0, 1))
        upper = step(half - np.abs(self.x - a.cx - 0.008), e) * step(hy - self.y + 0.02, 0.02)
        knob = ellipse_mask(self.x, self.y, a.cx + a.mediastinum - 0.002, 0.31, 0.03, 0.036, e)
        pulmonary = ellipse_mask(self.x, self.y, a.cx + a.mediastinum, 0.39, 0.024, 0.055, e)
        right_atrium = ellipse_mask(self.x, self.y, hx - 0.55 * ha, hy - 0.01, 0.42 * ha, 0.75 * hb, e)
        below = step(self.y - max(a.dome_left_y, a.dome_right_y) - 0.03, 0.03)
        return np.maximum.reduce([heart, upper, knob, pulmonary, right_atrium, below])

    def body_thickness(self) -> np.ndarray:
        a = self.a
        width = a.body * (0.9 + 0.1 * step(self.y - 0.18, 0.05))
        t = np.sqrt(np.clip(1.0 - ((self.x - a.cx) / width) ** 2, 0.0, 1.0))
        neck = np.sqrt(np.clip(1.0 - ((self.x - a.cx) / 0.11) ** 2, 0.0, 1.0)) * step(0.14 - self.y, 0.04)
        body = np.maximum(t, 0.8 * neck)
        if a.arms:
            for sign in (-1.0, 1.0):
                arm_x = a.cx + sign * (a.body + 0.07)
                arm = np.sqrt(np.clip(1.0 - ((self.x - arm_x) / 0.06) ** 2, 0.0, 1.0))
                body = np.maximum(body, 0.7 * arm * step(0.65 - self.y, 0.06))
        return body

    # -- bones
    def ribs(self) -> np.ndarray:
        a, e = self.a, self.edge
        u = np.abs(self.x - a.cx) / a.hemithorax
        spacing = (a.dome_right_y - a.apex_y) / 8.2
        out = np.zeros_like(self.x)
        # posterior ribs: nearly horizontal, rising slightly laterally, then curving down at the margin
        rel = self.y - (-0.05 * u + 0.12 * u ** 3) * a.hemithorax / 0.35
        phase = (rel - (a.apex_y - 0.045)) / spacing
        d = (np.abs(phase - np.round(phase)) * spacing).astype(np.float32)
        half = 0.0065 + 0.0022 * np.clip(phase, 0, 10) / 10 * 2
        band = step(half - d, e) * (0.75 + 0.6 * np.exp(-((d - half) / 0.0035) ** 2))
        keep = step(phase + 0.5, 0.05) * step(10.3 - phase, 0.05) * step(1.12 - u, 0.03) * step(u - 0.05, 0.02)
        out += band * keep
        # anterior ribs: fainter, running down towards the midline, fading medially (cartilage)
        rel = self.y - 0.13 * (1.0 - u) * a.hemithorax / 0.35
        phase = (rel - (a.apex_y + 0.005)) / (spacing * 1.25)
        d = (np.abs(phase - np.round(phase)) * spacing * 1.25).astype(np.float32)
        band = step(0.0085 - d, e) * step(u - 0.35, 0.08) * step(1.08 - u, 0.03)
        out += 0.45 * band * step(phase + 0.5, 0.05) * step(5.4 - phase, 0.05)
        return out

    def clavicles(self) -> np.ndarray:
        a, e = self.a, self.edge
        canvas = np.zeros_like(self.x)
        for sign in (-1.0, 1.0):
            pts = bezier([(a.cx + sign * 0.035, 0.205), (a.cx + sign * 0.15, 0.19),
                          (a.cx + sign * 0.22, 0.12), (a.cx + sign * 0.34, 0.125)], 20)
            draw_line(canvas, pts, 0.011, 1.0, e)
        return canvas

    def spine(self) -> np.ndarray:
        a, e = self.a, self.edge
        column = step(0.028 - np.abs(self.x - a.cx), e)
        bodies = 0.85 + 0.15 * np.cos(2 * np.pi * (self.y - a.apex_y) / 0.033)
        return column * bodies

    # -- lung vessels
    def vessels(self, rng: np.random.Generator, blurred: float = 0.0) -> np.ndarray:
        """Branching-looking markings radiating from each hilum, fading to the periphery."""
        out = np.zeros_like(self.x)
        wiggle = smooth_noise(rng, self.size, self.size / 14)
        for side, (hx, hy) in self.hila.items():
            dx, dy = self.x - hx, self.y - hy
            r = np.sqrt(dx * dx + dy * dy) + 1e-4
            theta = np.arctan2(dy, dx * SIDE_SIGN[side]) + 0.12 * wiggle
            bins = 540
            profile = np.zeros(bins, dtype=np.float32)
            for _ in range(3):
                spikes = rng.random(bins) ** 6
                kernel = np.exp(-0.5 * (np.arange(-6, 7) / 1.2) ** 2)
                profile += np.convolve(np.concatenate([spikes[-6:], spikes, spikes[:6]]), kernel, "valid")
            idx = ((theta + np.pi) / (2 * np.pi) * bins).astype(np.int32) % bins
            # vessels thin and fade with distance; the angular profile makes them radiate
            fade = np.exp(-r / 0.14) * step(r - 0.015, 0.01)
            out += profile[idx] * fade
        out = out / (out.max() + 1e-6)
        return blur(out, blurred * self.size) if blurred else out


def render_frontal(anatomy: Anatomy, findings: tuple[Finding, ...], size: int,
                   rng: np.random.Generator) -> np.ndarray:
    """A frontal chest radiograph (float32, size x size, 0..1, white = dense).

    `rng` is split into independent streams for the normal anatomy, the findings and the noise, so the
    same rng with and without a finding gives the same picture apart from the finding."""
    base_rng, finding_rng, noise_rng = rng.spawn(3)
    f = _Frontal(adapt_anatomy(anatomy, findings), size, finding_rng)
    a = f.a
    lungs = {side: f.lung_shape(side) for side in ("right", "left")}
    medi = f.mediastinum_mask()
    for side in lungs:
        lungs[side] = lungs[side] * (1.0 - medi)
    air = {side: lungs[side].copy() for side in lungs}          # fraction of lung air per pixel
    vessel_mask = {side: lungs[side].copy() for side in lungs}  # where markings are seen
    extra = np.zeros_like(f.x)                                   # added density (nodules, lines...)
    vessel_gain = 1.0
    edema_haze = 0.0
    for finding in findings:
        if finding.kind == "edema":
            vessel_gain, edema_haze = {"mild": (1.4, 0.5), "moderate": (1.7, 0.8), "severe": (1.9, 1.0)}[
                finding.severity]
    vessels = f.vessels(base_rng, blurred=0.0025 * edema_haze)
    for finding in findings:
        _apply_frontal_finding(f, finding, lungs, air, vessel_mask, extra)

    body = f.body_thickness()
    tissue = 0.62 * body + 0.16 * medi * body
    lung_air = sum(air.values())
    texture = 0.04 * smooth_noise(base_rng, size, size * 0.006)
    mu = tissue - a.lung_air * lung_air * (1.0 + texture)
    mu += a.vessel_contrast * vessel_gain * vessels * sum(vessel_mask[s] * lungs[s] for s in lungs)
    hilum = sum(ellipse_mask(f.x, f.y, hx + SIDE_SIGN[s] * 0.02, hy, 0.03, 0.05, 0.02) for s, (hx, hy)
                in f.hila.items())
    mu += 0.08 * hilum
    trachea = step(0.011 - np.abs(f.x - a.cx - 0.004), f.edge) * step(0.385 - f.y, 0.01)
    mu -= 0.12 * trachea
    bubble = ellipse_mask(f.x, f.y, a.cx + 0.17, a.dome_left_y + 0.06, 0.045, 0.025, f.edge)
    mu -= 0.15 * bubble * step(f.y - a.dome_left_y - 0.03, f.edge)
    bones = a.rib_contrast * f.ribs() * body * (1.0 - 0.6 * medi) + 0.2 * f.clavicles() + 0.05 * f.spine()
    mu += bones + extra
    return _finish(mu, a, size, noise_rng)


def _zone_centre(f: _Frontal, side: str, zone: str) -> tuple[float, float]:
    a = f.a
    top, bottom = a.apex_y + 0.04, a.dome_y(side) - 0.02
    frac = {"upper": 0.18, "middle": 0.5, "lower": 0.82}[zone]
    lateral = {"upper": 0.5, "middle": 0.55, "lower": 0.62}[zone]
    return a.cx + SIDE_SIGN[side] * lateral * a.hemithorax, top + frac * (bottom - top)


def _apply_frontal_finding(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    handler = {
        "pleural_effusion": _effusion, "pneumothorax": _pneumothorax, "consolidation": _consolidation,
        "nodule": _nodule, "edema": _edema, "atelectasis": _atelectasis, "support_device": _device,
    }.get(finding.kind)
    if handler is not None:  # cardiomegaly acts through the anatomy (the heart's width)
        handler(f, finding, lungs, air, vessel_mask, extra)


def _effusion(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    a = f.a
    for side in finding.sides():
        dome = a.dome_y(side)
        level = {"mild": dome + 0.012, "moderate": dome - 0.07, "severe": dome - 0.2}[finding.severity]
        level += float(f.rng.normal(0, 0.008))
        lateral = np.clip((f.x - a.cx) * SIDE_SIGN[side] / a.hemithorax, 0.0, 1.2)
        surface = level - 0.05 * lateral ** 3  # the meniscus climbs the lateral chest wall
        fluid = step(f.y - surface, 0.006) * f.lung_shape(side)
        air[side] *= 1.0 - fluid
        vessel_mask[side] *= 1.0 - fluid
        extra += 0.03 * fluid


def _pneumothorax(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    a = f.a
    frac = {"mild": 0.13, "moderate": 0.27, "severe": 0.45}[finding.severity]
    for side in finding.sides():
        sign = SIDE_SIGN[side]
        # the lung collapses towards the hilum and base: the gap is widest at the apex and laterally
        cx_c = a.cx + sign * 0.15 * a.hemithorax
        cy_c = a.dome_y(side) if finding.severity != "severe" else 0.5 * (a.dome_y(side) + 0.4)
        sx, sy = 1.0 / (1.0 - 0.75 * frac), 1.0 / (1.0 - frac)
        xs = cx_c + (f.x - cx_c) * sx
        ys = cy_c + (f.y - cy_c) * sy
        collapsed = f.lung_shape(side, xs, ys)
        shape = f.lung_shape(side)
        lateral = (f.x - a.cx) * sign / a.hemithorax
        away_from_mediastinum = step((lateral - 0.32) * a.hemithorax, 0.015)
        gap = shape * (1.0 - collapsed) * away_from_mediastinum
        air[side] = air[side] * (1.0 - gap) * (1.0 - 0.5 * frac * collapsed) + 1.12 * gap * lungs[side]
        vessel_mask[side] *= 1.0 - gap
        near_gap = np.clip(blur(gap, 1.5) * 3.0, 0.0, 1.0)
        pleural_line = 4.0 * collapsed * (1.0 - collapsed) * shape * near_gap
        extra += 0.16 * pleural_line


def _consolidation(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    radius = {"mild": 0.06, "moderate": 0.085, "severe": 0.12}[finding.severity]
    density = {"mild": 0.55, "moderate": 0.78, "severe": 0.92}[finding.severity]
    noise = smooth_noise(f.rng, f.size, f.size * 0.02)
    for side in finding.sides():
        cx, cy = _zone_centre(f, side, finding.zone)
        cx += float(f.rng.normal(0, 0.015))
        cy += float(f.rng.normal(0, 0.015))
        r = ellipse(f.x, f.y, cx, cy, radius * 1.15, radius, angle=float(f.rng.uniform(-0.5, 0.5)))
        blob = step(1.0 - r + 0.28 * noise, 0.12) * lungs[side]
        bronchi = np.clip(f.vessels(f.rng) * 3, 0, 1) * blob * (0.35 if finding.severity != "mild" else 0.0)
        air[side] = air[side] * (1.0 - density * blob) + bronchi * 0.4 * lungs[side]
        vessel_mask[side] *= 1.0 - blob


def _nodule(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    side = finding.sides()[0]
    cx, cy = _zone_centre(f, side, finding.zone)
    cx += float(f.rng.normal(0, 0.02))
    cy += float(f.rng.normal(0, 0.015))
    radius = (finding.size_mm or 15.0) / 2.0 / FIELD_OF_VIEW_MM
    theta = np.arctan2(f.y - cy, f.x - cx)
    lobulation = 0.0 if finding.severity != "severe" else (
        0.1 * np.sin(3 * theta + f.rng.uniform(0, 6)) + 0.07 * np.sin(5 * theta + f.rng.uniform(0, 6)))
    r = np.sqrt((f.x - cx) ** 2 + (f.y - cy) ** 2) / (radius * (1.0 + lobulation))
    sphere = np.sqrt(np.clip(1.0 - r ** 2, 0.0, 1.0))
    margin = step(1.0 - r, max(0.06, f.edge / radius))
    extra += (0.30 * sphere + 0.12 * margin) * lungs[side]


def _edema(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    density = {"mild": 0.22, "moderate": 0.38, "severe": 0.55}[finding.severity]
    noise = smooth_noise(f.rng, f.size, f.size * 0.03)
    for side in ("right", "left"):
        hx, hy = f.hila[side]
        sign = SIDE_SIGN[side]
        r = ellipse(f.x, f.y, hx + sign * 0.07, hy + 0.03, 0.19, 0.2)
        haze = np.exp(-1.6 * r ** 2) * (1.0 + 0.25 * noise)
        air[side] *= 1.0 - density * np.clip(haze, 0, 1) * lungs[side]
        if finding.severity != "mild":  # Kerley B lines: short horizontal lines at the lateral bases
            base = f.a.dome_y(side)
            for k in range(7):
                y0 = base - 0.02 - 0.013 * k - float(f.rng.uniform(0, 0.006))
                x_wall = f.a.cx + sign * f.a.hemithorax * (0.99 - 0.02 * k / 7)
                pts = np.array([(x_wall, y0), (x_wall - sign * 0.028, y0 + 0.001)])
                draw_line(extra, pts, 0.0022, 0.08, f.edge)


def _atelectasis(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    for side in finding.sides():
        sign = SIDE_SIGN[side]
        cx, cy = _zone_centre(f, side, finding.zone)
        if finding.severity == "mild":  # plate-like: a thin band
            band = np.zeros_like(f.x)
            half = 0.07 + float(f.rng.uniform(0, 0.03))
            tilt = float(f.rng.uniform(-0.02, 0.03))
            pts = bezier([(cx - half, cy - tilt), (cx, cy + 0.008), (cx + half, cy + tilt)], 12)
            draw_line(band, pts, 0.0085, 1.0, f.edge * 1.5)
            opacity = np.clip(band, 0, 1) * lungs[side]
            density = 0.85
        else:  # a wedge from the hilum to the base or the apex: segmental or lobar collapse
            hx, hy = f.hila[side]
            reach = 0.55 if finding.severity == "moderate" else 0.8
            if finding.zone == "upper":
                tip = (f.a.cx + sign * 0.42 * f.a.hemithorax, f.a.apex_y + 0.02)
                corner = (f.a.cx + sign * 0.08, f.a.apex_y + 0.03)
            else:
                tip = (f.a.cx + sign * reach * f.a.hemithorax, f.a.dome_y(side) + 0.01)
                corner = (f.a.cx + sign * 0.06, f.a.dome_y(side) + 0.01)
            opacity = _triangle(f, (hx, hy), tip, corner) * lungs[side]
            density = 0.7 if finding.severity == "moderate" else 0.85
        air[side] *= 1.0 - density * opacity
        vessel_mask[side] *= 1.0 - 0.7 * opacity


def _triangle(f: _Frontal, p0, p1, p2) -> np.ndarray:
    mask = np.ones_like(f.x)
    pts = [p0, p1, p2]
    centre = np.mean(pts, axis=0)
    for a_pt, b_pt in zip(pts, pts[1:] + pts[:1]):
        nx, ny = b_pt[1] - a_pt[1], a_pt[0] - b_pt[0]
        norm = np.hypot(nx, ny)
        nx, ny = nx / norm, ny / norm
        if (centre[0] - a_pt[0]) * nx + (centre[1] - a_pt[1]) * ny < 0:
            nx, ny = -nx, -ny
        mask *= step((f.x - a_pt[0]) * nx + (f.y - a_pt[1]) * ny, 0.012)
    return mask


def _device(f: _Frontal, finding: Finding, lungs, air, vessel_mask, extra) -> None:
    a, e = f.a, f.edge
    jitter = float(f.rng.normal(0, 0.006))
    if finding.device == "endotracheal_tube":
        tip_y = 0.385 - float(f.rng.uniform(0.035, 0.07))
        x0 = a.cx + 0.004 + jitter * 0.3
        for offset, value in ((-0.0075, 0.10), (0.0075, 0.10), (0.0045, 0.30)):
            pts = np.array([(x0 + offset + 0.01, -0.02), (x0 + offset, 0.12), (x0 + offset, tip_y)])
            draw_line(extra, pts, 0.0018, value, e)
    elif finding.device == "central_venous_catheter":
        tip = (a.cx - 0.03, 0.40 + jitter)
        if f.rng.random() < 0.5:  # right internal jugular
            ctrl = [(a.cx - 0.11, -0.02), (a.cx - 0.07, 0.16), (a.cx - 0.035, 0.25), tip]
        else:  # left subclavian
            ctrl = [(a.cx + 0.3, 0.17), (a.cx + 0.1, 0.17), (a.cx - 0.05, 0.22), tip]
        draw_line(extra, bezier(ctrl, 30), 0.0028, 0.35, e)
    elif finding.device == "nasogastric_tube":
        ctrl = [(a.cx + 0.01, -0.02), (a.cx + 0.02, 0.4), (a.cx + 0.02, a.dome_left_y),
                (a.cx + 0.16, a.dome_left_y + 0.09)]
        draw_line(extra, bezier(ctrl, 30), 0.0032, 0.32, e)
    elif finding.device == "pacemaker":
        gx, gy = a.cx + 0.24, 0.2 + jitter
        extra += 0.9 * ellipse_mask(f.x, f.y, gx, gy, 0.04, 0.028, e)
        hx, hy, ha, hb = f.heart
        for tip in ((a.cx - 0.03, hy - 0.6 * hb), (hx + 0.45 * ha, hy + 0.25 * hb)):
            ctrl = [(gx - 0.02, gy), (a.cx - 0.01, 0.2), (a.cx - 0.05, 0.3), tip]
            draw_line(extra, bezier(ctrl, 30), 0.0025, 0.45, e)


# ----------------------------------------------------------------------------------------------- lateral


def render_lateral(anatomy: Anatomy, findings: tuple[Finding, ...], size: int,
                   rng: np.random.Generator) -> np.ndarray:
    """A lateral chest radiograph (patient facing the image left): both lungs superimposed, heart in
    front, spine behind; effusions fill the posterior sulci."""
    a = adapt_anatomy(anatomy, findings)
    rng, noise_rng = rng.spawn(2)
    x, y = grid(size)
    e = max(0.0035, 0.8 / size)
    ant, post = 0.2, 0.78                       # anterior and posterior lung margins at mid height
    top, dome = a.apex_y + 0.02, 0.5 * (a.dome_right_y + a.dome_left_y) - 0.03
    depth = np.clip((x - ant) / (post - ant), 0.0, 1.2)
    lung_bottom = dome + 0.14 * depth ** 2.2    # diaphragm falls to the posterior costophrenic sulcus
    outline = ellipse(x, y, 0.5 * (ant + post) + 0.01, dome - 0.02, 0.5 * (post - ant) + 0.02, dome - top)
    lung = step((1.0 - outline) * 0.3, e) * step(lung_bottom - y, e)
    heart_ax = 0.11 * a.ctr / 0.45
    heart = ellipse_mask(x, y, ant + 0.06 + heart_ax, dome - 0.04, heart_ax, 0.16, e, angle=-0.6)
    air = lung * (1.0 - 0.85 * heart)
    extra = np.zeros_like(x)
    torso = np.sqrt(np.clip(1.0 - ((x - 0.5) / 0.42) ** 2, 0.0, 1.0))
    arms = 0.6 * np.sqrt(np.clip(1.0 - ((x - 0.4) / 0.16) ** 2, 0.0, 1.0)) * step(0.3 - y, 0.08)
    body = 0.7 * np.maximum(0.6 + 0.4 * torso, 0.0) * step(0.43 - np.abs(x - 0.5), 0.01) + arms
    spine_x = post - 0.03 + 0.03 * (y - 0.5) ** 2
    vertebrae = step(0.045 - np.abs(x - spine_x - 0.045), e) * (0.7 + 0.3 * np.cos(2 * np.pi * y / 0.034))
    sternum = step(0.012 - np.abs(x - (ant - 0.01 + 0.05 * y)), e) * step(0.62 - y, 0.02) * step(y - 0.2, 0.02)
    trachea = step(0.012 - np.abs(x - (0.48 + 0.08 * y)), e) * step(0.4 - y, 0.01)
    noise = smooth_noise(rng, size, size * 0.02)
    for finding in findings:
        zone_y = {"upper": top + 0.12, "middle": 0.45, "lower": dome - 0.02}.get(finding.zone or "", 0.45)
        if finding.kind == "pleural_effusion":
            level = {"mild": 0.005, "moderate": -0.06, "severe": -0.18}[finding.severity]
            surface = dome + 0.1 + level - 0.08 * depth ** 2
            air *= 1.0 - step(y - surface, 0.006)
        elif finding.kind in ("consolidation", "atelectasis"):
            cx = float(rng.uniform(0.45, 0.62))
            rad = {"mild": 0.06, "moderate": 0.08, "severe": 0.11}[finding.severity]
            blob = step(1.0 - ellipse(x, y, cx, zone_y, rad * 1.3, rad * 0.9) + 0.25 * noise, 0.12)
            air *= 1.0 - 0.75 * blob * lung
        elif finding.kind == "nodule":
            cx = float(rng.uniform(0.4, 0.6))
            radius = (finding.size_mm or 15.0) / 2.0 / FIELD_OF_VIEW_MM
            r = ellipse(x, y, cx, zone_y, radius, radius)
            extra += 0.3 * np.sqrt(np.clip(1 - r ** 2, 0, 1)) * lung
        elif finding.kind == "edema":
            haze = np.exp(-1.5 * ellipse(x, y, 0.5, 0.42, 0.2, 0.22) ** 2)
            air *= 1.0 - {"mild": 0.2, "moderate": 0.35, "severe": 0.5}[finding.severity] * haze
        elif finding.kind == "support_device" and finding.device in ("endotracheal_tube", "nasogastric_tube"):
            x0 = 0.48 if finding.device == "endotracheal_tube" else 0.56
            end = 0.33 if finding.device == "endotracheal_tube" else dome + 0.08
            draw_line(extra, np.array([(x0, -0.02), (x0 + 0.08 * end, end)]), 0.003, 0.3, e)
        elif finding.kind == "support_device":
            draw_line(extra, bezier([(0.3, 0.1), (0.42, 0.2), (0.45, 0.38)], 20), 0.003, 0.35, e)
    mu = body * 0.85 + 0.12 * heart - a.lung_air * 0.85 * air - 0.12 * trachea
    mu += 0.18 * vertebrae + 0.15 * sternum + extra
    return _finish(mu, a, size, noise_rng)


# ------------------------------------------------------------------------------------------------ finish


def _finish(mu: np.ndarray, a: Anatomy, size: int, rng: np.random.Generator) -> np.ndarray:
    """Detector blur, exposure, edge-enhancing processing and quantum noise; returns 0..1 float32."""
    img = blur(mu.astype(np.float32), 0.0012 * size)
    img = 0.08 + 0.9 * img
    img = img + 0.6 * (img - blur(img, 0.03 * size))          # unsharp mask, as CR/DX processing does
    img = (img - 0.5) * a.contrast + 0.5 + a.exposure
    img = np.clip(img, 0.0, 1.0) ** a.gamma
    noise = rng.standard_normal(img.shape, dtype=np.float32) * (a.noise * (0.6 + 0.8 * img))
    img = img + blur(noise, 0.5) * 1.6
    return np.clip(img, 0.0, 1.0).astype(np.float32)
