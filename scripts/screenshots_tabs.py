"""Screenshots of three tabs for docs/preprocessors.md: pose presets, segmentation painting, sketch.

    python scripts/screenshots_tabs.py [--backend tiny|toy] [--out docs/screenshots] [--only pose ...]

Reuses scripts/screenshots.py (starting the app, headless Chromium through Playwright) and adds the
pose-preset and segmentation-painting journeys; the sketch shot is that script's.
"""

from __future__ import annotations

import argparse
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
    canvases = panel.locator("canvas")
    sizes = [canvases.nth(i).bounding_box() for i in range(canvases.count())]
    largest = max(range(len(sizes)), key=lambda i: sizes[i]["width"] * sizes[i]["height"])
    canvases.nth(largest).scroll_into_view_if_needed()  # mouse events need it in the viewport
    page.wait_for_timeout(300)
    full = canvases.nth(largest).bounding_box()
    # The picture is a square in the middle of the canvas element, shown at the editor's zoom.
    side = min(full["height"], full["width"]) * 0.85
    box = {
        "x": full["x"] + (full["width"] - side) / 2,
        "y": full["y"] + (full["height"] - side) / 2,
        "width": side,
        "height": side,
    }
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


SHOTS: dict[str, Callable] = {"pose": shot_pose, "seg": shot_seg, "sketch": base.shot_sketch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tiny", choices=["tiny", "toy"])
    parser.add_argument("--out", default=str(base.ROOT / "docs" / "screenshots"))
    parser.add_argument("--only", nargs="*", choices=list(SHOTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    port = base.free_port()
    app = base.start_app(args.backend, port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=base.CHROMIUM, args=base.CHROMIUM_ARGS
            )
            for name in args.only or list(SHOTS):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
                page.wait_for_selector("text=Generate", timeout=60_000)
                SHOTS[name](page, out)
                page.close()
                print(f"saved {out / name}.png")
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
