"""Example inputs that ship with the project or its packages: nothing is downloaded.

Photos come from scikit-image's bundled public-domain samples; drawings of shapes (what the toy model
knows) are drawn here, once per process, into a temporary folder.
"""

from __future__ import annotations

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
    return Path(tempfile.mkdtemp(prefix="controlnet-examples-"))


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
