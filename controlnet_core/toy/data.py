"""Synthetic training data for the toy models: coloured shapes, captions and control maps.

Every sample is a deterministic function of ``(seed, index)``: 1–3 non-overlapping shapes of
different kinds (circle, square, triangle, star) of varied size, position and rotation on a plain
coloured background, drawn 4× super-sampled and box-filtered to 64×64 so edges are antialiased the
same way in training and evaluation. Each sample carries its caption ("a red star and a blue circle
on a white background"), per-shape masks, and three control maps in the SD1.5 ControlNet convention
(white on black): canny edges of the image, hand-drawn-like strokes along the outlines (wobbly,
0.5–4 px wide at 64 px, i.e. 1–8 px on a 128-px canvas) and ADE20K-style region maps.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

RESOLUTION = 64
SUPERSAMPLE = 4
CANNY_LOW, CANNY_HIGH = 100, 200

SHAPES = ("circle", "square", "triangle", "star")
# Shape colours named in captions (RGB). Distinct enough that "nearest palette colour" is unambiguous.
SHAPE_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 215, 30),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "purple": (135, 55, 175),
    "pink": (245, 125, 190),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
}
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
    "beige": (235, 220, 185),
    "blue": (35, 75, 215),
}
_BACKGROUND_WEIGHTS = np.array([0.4, 0.15, 0.15, 0.15, 0.15])
# Region-map colours, taken from the ADE20K palette the segmentation ControlNet uses.
REGION_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (120, 120, 120),  # ADE20K "wall"
    "circle": (255, 6, 51),
    "square": (6, 230, 230),
    "triangle": (204, 255, 4),
    "star": (224, 5, 255),
}
CAPTION_WORDS = sorted(
    {"a", "an", "and", "on", "background", ","}
    | set(SHAPES)
    | set(SHAPE_COLORS)
    | set(BACKGROUND_COLORS)
)


@dataclasses.dataclass
class ShapeSpec:
    """One shape: kind, colour name, centre (x, y) and radius in 64-px units, rotation in radians."""

    kind: str
    color: str
    cx: float
    cy: float
    radius: float
    angle: float


@dataclasses.dataclass
class Sample:
    """One generated sample. Images are uint8 HxWx3; masks are bool (n_shapes, H, W)."""

    image: np.ndarray
    caption: str
    shapes: list[ShapeSpec]
    background: str
    masks: np.ndarray
    canny: np.ndarray
    scribble: np.ndarray
    regions: np.ndarray


def shape_outline(spec: ShapeSpec, points_per_side: int = 1) -> np.ndarray:
    """Return the closed outline of a shape as (N, 2) float points in 64-px coordinates."""
    if spec.kind == "circle":
        n = 64 * points_per_side
        t = np.linspace(0, 2 * math.pi, n, endpoint=False) + spec.angle
        return np.stack([spec.cx + spec.radius * np.cos(t), spec.cy + spec.radius * np.sin(t)], 1)
    if spec.kind == "square":
        # Polygons reach 1.15 × radius at their corners, so they look about as big as circles.
        r = spec.radius * 1.15
        t = spec.angle + math.pi / 4 + np.arange(4) * math.pi / 2
        verts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif spec.kind == "triangle":
        r = spec.radius * 1.15
        t = spec.angle - math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        verts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif spec.kind == "star":
        r = spec.radius * 1.15
        t = spec.angle - math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        verts = np.stack([np.cos(t), np.sin(t)], 1) * radii[:, None]
    else:
        raise ValueError(f"unknown shape kind {spec.kind!r}; expected one of {SHAPES}")
    verts = verts + np.array([spec.cx, spec.cy])
    if points_per_side == 1:
        return verts
    nxt = np.roll(verts, -1, axis=0)
    f = np.linspace(0, 1, points_per_side, endpoint=False)[None, :, None]
    return (verts[:, None, :] + f * (nxt - verts)[:, None, :]).reshape(-1, 2)


def _render_mask(spec: ShapeSpec, size: int) -> Image.Image:
    """Antialiased coverage mask of a shape at ``size`` px (drawn super-sampled, box-filtered)."""
    big = size * SUPERSAMPLE
    scale = big / RESOLUTION
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if spec.kind == "circle":
        r = spec.radius * scale
        cx, cy = spec.cx * scale, spec.cy * scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        pts = [tuple(p) for p in shape_outline(spec) * scale]
        draw.polygon(pts, fill=255)
    return canvas.resize((size, size), Image.Resampling.BOX)


def _sample_shapes(rng: np.random.Generator, background: str) -> list[ShapeSpec]:
    count = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    colors = [c for c in SHAPE_COLORS if SHAPE_COLORS[c] != BACKGROUND_COLORS[background]]
    # Different kinds in one image: in "a red star and a blue star" nothing says which star is red,
    # so such captions cannot be followed and teach the model that a shape's kind does not predict
    # its colour.
    kinds = [str(k) for k in rng.permutation(SHAPES)[:count]]
    shapes: list[ShapeSpec] = []
    for kind in kinds:
        for _attempt in range(30):
            radius = float(rng.uniform(7, 22 if count == 1 else 15))
            margin = radius * 1.15 + 1.5
            cx = float(rng.uniform(margin, RESOLUTION - margin))
            cy = float(rng.uniform(margin, RESOLUTION - margin))
            if all(
                math.hypot(cx - s.cx, cy - s.cy) > (radius + s.radius) * 1.2 + 2 for s in shapes
            ):
                break
        else:
            continue
        shapes.append(
            ShapeSpec(
                kind=kind,
                color=str(rng.choice(colors)),
                cx=cx,
                cy=cy,
                radius=radius,
                angle=float(rng.uniform(0, 2 * math.pi)),
            )
        )
    return shapes


def make_caption(shapes: list[ShapeSpec], background: str) -> str:
    """Caption in the fixed grammar the toy text encoder was trained on."""
    parts = [f"{'an' if s.color[0] in 'aeiou' else 'a'} {s.color} {s.kind}" for s in shapes]
    if len(parts) <= 2:
        objects = " and ".join(parts)
    else:
        objects = ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{objects} on a {background} background"


def _wobbly_stroke(points: np.ndarray, rng: np.random.Generator, closed: bool = True) -> np.ndarray:
    """Perturb an outline with smooth low-frequency noise, like a hand following it."""
    n = len(points)
    amplitude = rng.uniform(0.2, 1.2)
    t = np.linspace(0, 2 * math.pi, n, endpoint=not closed)
    offset = np.zeros((n, 2))
    for k in (1, 2, 3):
        phase = rng.uniform(0, 2 * math.pi, size=2)
        offset += rng.normal(0, amplitude / k, size=2) * np.stack(
            [np.sin(k * t + phase[0]), np.sin(k * t + phase[1])], 1
        )
    offset += rng.normal(0, 0.15, size=(n, 2))
    return points + offset


def scribble_map(
    shapes: list[ShapeSpec], rng: np.random.Generator, size: int = RESOLUTION
) -> np.ndarray:
    """Hand-drawn-like strokes along each shape's outline: uint8 HxWx3, white on black."""
    big = size * SUPERSAMPLE
    scale = big / RESOLUTION
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    width_64 = rng.uniform(0.5, 4.0) if rng.random() < 0.8 else rng.uniform(0.5, 1.5)
    for spec in shapes:
        pts = shape_outline(spec, points_per_side=12 if spec.kind != "circle" else 1)
        # A person starts anywhere, sometimes overshoots a little or leaves a small gap.
        pts = np.roll(pts, int(rng.integers(len(pts))), axis=0)
        extra = int(rng.integers(-2, 4))
        pts = (
            np.concatenate([pts, pts[: max(extra, 0) + 1]])
            if extra >= 0
            else pts[: len(pts) + extra]
        )
        pts = _wobbly_stroke(pts, rng, closed=False) * scale
        w = max(1, round(width_64 * scale * rng.uniform(0.85, 1.15)))
        draw.line([tuple(p) for p in pts], fill=255, width=w, joint="curve")
        r = w / 2
        for p in (pts[0], pts[-1]):
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=255)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX))
    return np.repeat(small[:, :, None], 3, axis=2)


def canny_map(image: np.ndarray) -> np.ndarray:
    """Canny edges as the app's Canny tab computes them (thresholds 100/200): uint8 HxWx3."""
    edges = cv2.Canny(image, CANNY_LOW, CANNY_HIGH)
    return np.repeat(edges[:, :, None], 3, axis=2)


def outline_map(shapes: list[ShapeSpec], size: int = RESOLUTION) -> np.ndarray:
    """Ground-truth 1-px shape outlines (bool HxW), used to score outputs drawn from scribbles."""
    masks = [np.asarray(_render_mask(s, size)) > 127 for s in shapes]
    out = np.zeros((size, size), bool)
    kernel = np.ones((3, 3), np.uint8)
    for m in masks:
        m8 = m.astype(np.uint8)
        out |= (m8 - cv2.erode(m8, kernel)).astype(bool)
    return out


def generate_sample(seed: int, index: int) -> Sample:
    """Generate sample ``index`` of the dataset with ``seed``; the same pair always gives the same sample."""
    rng = np.random.default_rng([seed, index])
    background = str(rng.choice(list(BACKGROUND_COLORS), p=_BACKGROUND_WEIGHTS))
    shapes = _sample_shapes(rng, background)
    image = np.empty((RESOLUTION, RESOLUTION, 3), np.float32)
    image[:] = BACKGROUND_COLORS[background]
    regions = np.empty((RESOLUTION, RESOLUTION, 3), np.float32)
    regions[:] = REGION_COLORS["background"]
    masks = []
    for spec in shapes:
        cover = np.asarray(_render_mask(spec, RESOLUTION), np.float32)[:, :, None] / 255.0
        image = image * (1 - cover) + np.array(SHAPE_COLORS[spec.color], np.float32) * cover
        hard = cover[:, :, 0] > 0.5
        regions[hard] = REGION_COLORS[spec.kind]
        masks.append(hard)
    image_u8 = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Sample(
        image=image_u8,
        caption=make_caption(shapes, background),
        shapes=shapes,
        background=background,
        masks=np.array(masks, bool).reshape(len(shapes), RESOLUTION, RESOLUTION),
        canny=canny_map(image_u8),
        scribble=scribble_map(shapes, rng),
        regions=regions.astype(np.uint8),
    )


def _generate_arrays(args: tuple[int, int, int]) -> dict[str, np.ndarray | list[str]]:
    seed, start, stop = args
    out: dict[str, list] = {"image": [], "canny": [], "scribble": [], "regions": [], "caption": []}
    for i in range(start, stop):
        s = generate_sample(seed, i)
        out["image"].append(s.image)
        out["canny"].append(s.canny[:, :, 0])
        out["scribble"].append(s.scribble[:, :, 0])
        out["regions"].append(s.regions)
        out["caption"].append(s.caption)
    return {k: (v if k == "caption" else np.stack(v)) for k, v in out.items()}


def generate_dataset(seed: int, count: int, workers: int = 1) -> dict[str, np.ndarray | list[str]]:
    """Generate ``count`` samples as stacked arrays (image, canny, scribble, regions) and captions.

    Sample ``i`` depends only on ``(seed, i)``, so the result is the same for any ``workers``.
    Edge maps are stored single-channel (they are grey) to save memory.
    """
    chunk = max(1, math.ceil(count / max(1, workers * 4)))
    jobs = [(seed, a, min(count, a + chunk)) for a in range(0, count, chunk)]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_generate_arrays, jobs)
    else:
        parts = [_generate_arrays(j) for j in jobs]
    merged: dict[str, np.ndarray | list[str]] = {}
    for key in ("image", "canny", "scribble", "regions"):
        merged[key] = np.concatenate([p[key] for p in parts])
    merged["caption"] = [c for p in parts for c in p["caption"]]
    return merged
