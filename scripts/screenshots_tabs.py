"""Screenshots of three tabs for docs/preprocessors.md: pose presets, segmentation painting, sketch.

    python scripts/screenshots_tabs.py [--backend tiny|toy] [--out docs/screenshots] [--only pose ...]

Reuses scripts/screenshots.py (starting the app, headless Chromium through Playwright) and adds the
pose-preset, segmentation-painting and sketch journeys (drawing inside the editor's picture).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import screenshots as base  # noqa: E402  (the sibling script)


def shot_pose(page, out: Path) -> None:
    """Human pose tab: a preset skeleton (no photo) put into the input and generated."""
    base.open_tab(page, "Human pose")
    panel = base.visible_panel(page)
    panel.get_by_label("Preset").click()
    page.get_by_role("option", name="waving", exact=True).click()
    panel.get_by_label("Mirror").check()
    panel.get_by_role("button", name="Use this pose", exact=True).click()
    page.wait_for_function(
        "document.querySelectorAll('[role=tabpanel]:not([hidden]) img').length > 0",
        timeout=60_000,
    )
    page.wait_for_timeout(1000)
    base.generate_and_wait(page, panel)
    page.screenshot(path=str(out / "pose.png"), full_page=True)


def _stroke(page, panel, box, points, color: str) -> None:
    swatch = panel.locator(f"button.color[style*='{color}']")
    if not swatch.first.is_visible():  # the swatch menu closes after each pick
        panel.get_by_role("button", name="Color", exact=True).click()
        page.wait_for_timeout(200)
    swatch.first.click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(100)
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
    page.mouse.up()


def shot_seg(page, out: Path) -> None:
    """Segmentation tab: a landscape painted with named ADE20K classes, used as the map, generated."""
    base.open_tab(page, "Segmentation")
    panel = base.visible_panel(page)
    box = _picture_box(page, panel)
    panel.get_by_role("button", name="Brush", exact=True).click()
    grass, mountain, water, tree = (
        "rgb(4, 250, 7)",
        "rgb(143, 255, 140)",
        "rgb(61, 230, 250)",
        "rgb(4, 200, 3)",
    )
    for row in range(14):  # mountains: a zig-zag ridge filled downwards
        y = 0.42 + row * 0.02
        _stroke(
            page,
            panel,
            box,
            [(0.02, y + 0.04), (0.25, y - 0.12), (0.45, y), (0.7, y - 0.16), (0.98, y)],
            mountain,
        )
    for row in range(9):
        y = 0.66 + row * 0.04
        _stroke(page, panel, box, [(0.01, y), (0.99, y)], grass)
    for row in range(5):
        y = 0.76 + row * 0.03
        _stroke(page, panel, box, [(0.35, y), (0.85, y)], water)
    for x in (0.1, 0.18):
        _stroke(page, panel, box, [(x, 0.5), (x, 0.72)], tree)
        _stroke(page, panel, box, [(x - 0.03, 0.55), (x + 0.03, 0.55)], tree)
    page.wait_for_timeout(800)
    panel.get_by_role("button", name="Use painting as map", exact=True).click()
    page.wait_for_timeout(2000)
    base.generate_and_wait(page, panel)
    page.screenshot(path=str(out / "seg.png"), full_page=True)


def _picture_box(page, panel) -> dict:
    """Viewport box of the picture inside the panel's drawing canvas (scrolled into view)."""
    canvases = panel.locator("canvas")
    sizes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
    largest = max(range(len(sizes)), key=lambda i: sizes[i]["width"] * sizes[i]["height"])
    canvases.nth(largest).scroll_into_view_if_needed()  # mouse events need it in the viewport
    page.wait_for_timeout(300)
    full = canvases.nth(largest).bounding_box()
    side = min(full["height"], full["width"]) * 0.85
    return {
        "x": full["x"] + (full["width"] - side) / 2,
        "y": full["y"] + (full["height"] - side) / 2,
        "width": side,
        "height": side,
    }


def shot_sketch(page, out: Path) -> None:
    """Sketch tab: a star and a circle drawn with the mouse (what the toy model knows), generated."""
    import math

    base.open_tab(page, "Sketch")
    panel = base.visible_panel(page)
    box = _picture_box(page, panel)
    panel.get_by_role("button", name="Brush", exact=True).click()
    page.keyboard.press("Escape")

    def line(points):
        page.mouse.move(
            box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"]
        )
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=10)
        page.mouse.up()

    star = []
    for k in range(11):  # five points, alternating outer and inner radius
        radius, angle = (0.2 if k % 2 == 0 else 0.08), -math.pi / 2 + k * math.pi / 5
        star.append((0.3 + radius * math.cos(angle), 0.45 + radius * math.sin(angle)))
    line(star)
    line(
        [
            (0.72 + 0.14 * math.cos(a / 12 * math.pi), 0.62 + 0.14 * math.sin(a / 12 * math.pi))
            for a in range(25)
        ]
    )
    page.wait_for_timeout(500)
    panel.get_by_role("button", name="Generate", exact=True).scroll_into_view_if_needed()
    base.generate_and_wait(page, panel)
    page.screenshot(path=str(out / "sketch.png"), full_page=True)


SHOTS: dict[str, Callable] = {"pose": shot_pose, "seg": shot_seg, "sketch": shot_sketch}


if __name__ == "__main__":
    base.main(SHOTS, __doc__)
