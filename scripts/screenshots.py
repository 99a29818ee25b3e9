"""Screenshots of the running app in headless Chromium, for the README and docs.

    python scripts/screenshots.py [--backend tiny|toy] [--out docs/screenshots] [--only main ...]

Starts `python app.py` on a free port, drives the page with Playwright (Debian's /usr/bin/chromium,
no browser download) and saves one PNG per shot. Each shot is a function below, registered in SHOTS.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(backend: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "app.py", "--backend", backend, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the app did not come up within 120 s")


def open_tab(page, label: str) -> None:
    page.get_by_role("tab", name=label, exact=True).click()
    page.wait_for_timeout(500)


def visible_panel(page):
    return page.locator("[role=tabpanel]:visible").first


def generate_and_wait(page, panel, images: int = 2) -> None:
    panel.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        f"document.querySelectorAll('[role=tabpanel]:not([hidden]) .gallery-item img, "
        f"[role=tabpanel]:not([hidden]) button.thumbnail-item img').length >= {images}",
        timeout=180_000,
    )
    page.mouse.move(0, 0)  # off the button: a hovered button is drawn paler
    page.wait_for_timeout(1500)


def shot_main(page, out: Path) -> None:
    """The Canny tab after a generation: control map first, then the image."""
    from demos.examples import shapes_drawing

    open_tab(page, "Canny")
    panel = visible_panel(page)
    panel.locator("input[type=file]").first.set_input_files(shapes_drawing("star_circle", True))
    page.wait_for_timeout(1500)
    generate_and_wait(page, panel)
    page.screenshot(path=str(out / "main.png"), full_page=True)


def shot_compare(page, out: Path) -> None:
    """The Canny tab after "Compare with plain SD": gallery and the before/after slider."""
    from demos.examples import shapes_drawing

    open_tab(page, "Canny")
    panel = visible_panel(page)
    panel.locator("input[type=file]").first.set_input_files(shapes_drawing("star_circle", True))
    page.wait_for_timeout(1500)
    panel.get_by_role("button", name="Compare with plain SD", exact=True).click()
    page.wait_for_function(
        "document.querySelectorAll('[role=tabpanel]:not([hidden]) .gallery-item img, "
        "[role=tabpanel]:not([hidden]) button.thumbnail-item img').length >= 3",
        timeout=180_000,
    )
    page.wait_for_timeout(2000)
    page.screenshot(path=str(out / "compare.png"), full_page=True)


def shot_inside_toy(page, out: Path) -> None:
    """The Canny tab's "Inside the ControlNet" panel after "Look inside" (run with --backend toy:
    the toy model's residuals have structure, random weights' do not)."""
    from demos.examples import shapes_drawing

    open_tab(page, "Canny")
    panel = visible_panel(page)
    panel.locator("input[type=file]").first.set_input_files(shapes_drawing("star_circle", True))
    page.wait_for_timeout(1500)
    inside = panel.locator(".block", has_text="Inside the ControlNet").first
    panel.get_by_text("Inside the ControlNet", exact=False).first.click()
    panel.get_by_role("button", name="Look inside", exact=True).click()
    page.wait_for_function(
        "[...document.querySelectorAll('[role=tabpanel]:not([hidden]) .caption-label')]"
        ".some(e => e.textContent.includes('(mid_block)'))",
        timeout=180_000,
    )
    page.mouse.move(0, 0)
    page.wait_for_timeout(1500)
    inside.screenshot(path=str(out / "inside_toy.png"))


SHOTS: dict[str, Callable] = {
    "main": shot_main,
    "compare": shot_compare,
    "inside_toy": shot_inside_toy,
}


def main(shots: dict[str, Callable] = SHOTS, description: str = __doc__) -> None:
    """Parse the command line, start the app, and take the chosen `shots`."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--backend", default="tiny", choices=["tiny", "toy"])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--only", nargs="*", choices=list(shots))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    port = free_port()
    app = start_app(args.backend, port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name in args.only or list(shots):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
                page.wait_for_selector("text=Generate", timeout=60_000)
                shots[name](page, out)
                page.close()
                print(f"saved {out / name}.png")
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    main()
