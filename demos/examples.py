"""Example inputs that ship with the project or its packages: nothing is downloaded.

Photos come from scikit-image's bundled public-domain samples; drawings of shapes (what the toy model
knows) are drawn here, once per process, into a temporary folder.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache, lru_cache
from pathlib import Path

from PIL import Image, ImageDraw


def skimage_sample(name: str) -> str:
    """Path of one of scikit-image's bundled sample files (e.g. "astronaut.png")."""
    import skimage.data

    path = Path(skimage.data.__path__[0]) / name
    if not path.exists():
        raise ValueError(f"scikit-image ships no sample named {name!r}")
    return str(path)


@lru_cache(maxsize=1)
def _drawings_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="controlnet-examples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def shapes_drawing(kind: str = "star_circle", filled: bool = False) -> str:
    """A 512² drawing of simple shapes (dark outlines on white, or filled on white); its path."""
    image = Image.new("RGB", (512, 512), "white")
    draw = ImageDraw.Draw(image)
    outline = {"outline": "black", "width": 10} if not filled else {"fill": "black"}
    if kind == "star_circle":
        draw.ellipse((50, 140, 290, 380), **outline)
        star = _star_points(360, 240, 110, 45)
        draw.polygon(star, **outline)
    elif kind == "square_triangle":
        draw.rectangle((60, 140, 250, 330), **outline)
        draw.polygon([(380, 110), (480, 390), (280, 390)], **outline)
    else:
        draw.ellipse((130, 130, 380, 380), **outline)
    path = _drawings_folder() / f"{kind}{'_filled' if filled else ''}.png"
    image.save(path)
    return str(path)


def _star_points(cx: float, cy: float, outer: float, inner: float) -> list[tuple[float, float]]:
    import math

    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


@cache
def depth_scene() -> str:
    """A 512² synthetic depth map (bright = near): a floor receding to the horizon, a ball and a box.

    Lets the depth and normal tabs work offline with preprocessor "none" / normal-from-depth.
    """
    import numpy as np

    size = 512
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    horizon = 0.45 * size
    floor = np.clip((ys - horizon) / (size - horizon), 0.0, 1.0) * 0.9
    depth = np.where(ys > horizon, 0.1 + floor, 0.0)
    # A ball resting on the floor, nearer than the floor around it.
    cx, cy, radius = 0.34 * size, 0.62 * size, 0.15 * size
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
    dome = np.sqrt(np.clip(radius**2 - (xs - cx) ** 2 - (ys - cy) ** 2, 0, None)) / radius
    depth = np.where(inside, 0.55 + 0.35 * dome, depth)
    # A box whose front face is flat and whose left side turns away.
    box = (xs > 0.6 * size) & (xs < 0.85 * size) & (ys > 0.42 * size) & (ys < 0.75 * size)
    depth = np.where(box, 0.45 + 0.25 * (xs - 0.6 * size) / (0.25 * size), depth)
    image = Image.fromarray(np.rint(np.clip(depth, 0, 1) * 255).astype(np.uint8), "L")
    path = _drawings_folder() / "depth_scene.png"
    image.save(path)
    return str(path)


@cache
def pose_preset_image(name: str = "standing") -> str:
    """A 512² OpenPose map of one of the built-in pose presets; its path."""
    from controlnet_core import render_pose_preset

    path = _drawings_folder() / f"pose_{name.replace(' ', '_')}.png"
    Image.fromarray(render_pose_preset(name)).save(path)
    return str(path)


@cache
def seg_landscape() -> str:
    """A 512² segmentation map in ADE20K colours (sky, mountains, trees, grass, a lake); its path."""
    from controlnet_core import class_color

    image = Image.new("RGB", (512, 512), class_color("sky"))
    draw = ImageDraw.Draw(image)
    draw.polygon(
        [(0, 300), (120, 150), (230, 260), (340, 120), (512, 280), (512, 330), (0, 330)],
        fill=class_color("mountain"),
    )
    draw.rectangle((0, 320, 512, 512), fill=class_color("grass"))
    draw.ellipse((150, 360, 470, 480), fill=class_color("water"))
    for x in (40, 95):
        draw.ellipse((x - 35, 230, x + 35, 340), fill=class_color("tree"))
    path = _drawings_folder() / "seg_landscape.png"
    image.save(path)
    return str(path)


@cache
def motorcycle_depth() -> str:
    """scikit-image's stereo disparity of its motorcycle photo as a depth map (bright = near)."""
    import numpy as np

    disparity = np.load(Path(skimage_sample("motorcycle_disp.npz")))["arr_0"]
    known = np.isfinite(disparity)
    low, high = np.percentile(disparity[known], [1, 99])
    depth = np.clip((np.where(known, disparity, low) - low) / (high - low), 0, 1)
    path = _drawings_folder() / "motorcycle_depth.png"
    Image.fromarray(np.rint(depth * 255).astype(np.uint8), "L").save(path)
    return str(path)
