"""Browser journeys: the app on the tiny backend, driven through Debian's Chromium as a user would.

One app server and one browser serve the whole module; each test opens a fresh page (1280×900, one
phone-width smoke test at 390×844), clicks, types and draws with the mouse, and checks what the page
shows. A failing test leaves a full-page screenshot in `test-artifacts/browser/<test name>.png`.

Playwright drives /usr/bin/chromium (`apt-get install chromium`; `playwright install` is never
needed). Without it, or without the `playwright` package, these tests fail under CI (`CI=true`) and
are skipped elsewhere.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from playwright.sync_api import Locator, Page, expect, sync_playwright
except ImportError:  # reported by the `browser` fixture: a failure under CI, a skip elsewhere
    sync_playwright = None


CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ACTION_TIMEOUT_MS = 15_000
GENERATION_TIMEOUT_MS = 60_000  # the first generation of a modality also builds its tiny model

CANNY_EXAMPLE = "a red star and a blue circle on a white background"
PHISHING = '<a href="https://example.invalid">Session expired</a>'

pytestmark = pytest.mark.timeout(180)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "the playwright package is not installed (pip install -r requirements.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does this)"
    return None


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(serve_app) -> str:
    _, demo, _ = serve_app(["canny", "sketch", "seg"])
    return demo.local_url


@pytest.fixture(scope="module")
def browser():
    reason = missing_browser()
    if reason:
        if in_ci():
            pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    expect.set_options(timeout=ACTION_TIMEOUT_MS)
    yield chromium
    chromium.close()
    playwright.stop()


def _open_page(request, browser, app_url: str, viewport: dict[str, int]) -> Iterator[Page]:
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    page.goto(app_url)
    expect(page.get_by_role("tab", name="Canny")).to_be_visible()
    failures_before = request.session.testsfailed
    yield page
    # A fixture cannot see the test's outcome without a conftest hook, but pytest has already
    # counted a failed call (not an expected xfail) by the time this teardown runs.
    if request.session.testsfailed > failures_before:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as error:  # the screenshot must not hide the test's own failure
            print(f"could not save a screenshot of {name}: {error}")
    context.close()


@pytest.fixture
def page(request, browser, app_url) -> Iterator[Page]:
    yield from _open_page(request, browser, app_url, DESKTOP)


@pytest.fixture
def phone_page(request, browser, app_url) -> Iterator[Page]:
    yield from _open_page(request, browser, app_url, PHONE)


# --- what a user does -------------------------------------------------------------------------


def open_tab(page: Page, name: str) -> Locator:
    """Select a tab and return its panel (gradio renders only the selected tab's panel)."""
    page.get_by_role("tab", name=name).click()
    expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")
    return page.locator("[role=tabpanel]:visible")


def pick_canny_example(page: Page, panel: Locator) -> None:
    """Click the first Canny example and wait until the input shows it.

    Clicking Generate in the same instant as the example (before its image is fetched) sends no
    image: gradio fills the input only once the example's file has loaded.
    """
    panel.get_by_role("gridcell", name=CANNY_EXAMPLE).click()
    input_block = panel.locator("div.block").filter(
        has=page.get_by_test_id("block-label").filter(has_text="Input image")
    )
    expect(input_block.locator("img").first).to_be_visible()
    expect(panel.get_by_role("textbox", name="Prompt", exact=True)).to_have_value(CANNY_EXAMPLE)


def draw_stroke(page: Page, canvas: Locator, span: float = 0.3, rows: int = 1) -> None:
    """Drag the mouse in a zigzag across the middle of `canvas` (`rows` strokes, one below another)."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box, "the drawing canvas has no size"
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    half = span * min(box["width"], box["height"])
    for row in range(rows):
        y = cy if rows == 1 else cy - half / 2 + row * half / (rows - 1)
        page.mouse.move(cx - half, y)
        page.mouse.down()
        for k in range(1, 9):
            # One event per corner: each pointer move re-renders the canvas (~0.25 s in software GL).
            page.mouse.move(cx - half + k * half / 4, y + (12 if k % 2 else -12))
        page.mouse.up()


def gallery(panel: Locator) -> Locator:
    """The thumbnails of the tab's gallery (in preview mode the strip below repeats them)."""
    return panel.get_by_role("button", name=re.compile(r"^Thumbnail \d+ of \d+$"))


def wait_for_gallery(page: Page, panel: Locator, count: int) -> list[str]:
    """Captions of the `count` gallery items, once they are shown; fails early on an error pop-up."""
    thumbnails = gallery(panel)
    error = page.get_by_test_id("toast-body").filter(has_text="Error")
    expect(thumbnails.first.or_(error).first).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    if error.count() and not thumbnails.count():
        pytest.fail(f"the app showed an error instead of results: {error.first.inner_text()}")
    expect(thumbnails).to_have_count(count, timeout=GENERATION_TIMEOUT_MS)
    return [image.get_attribute("alt") or "" for image in thumbnails.locator("img").all()]


def fetch_image(page: Page, image: Locator) -> np.ndarray:
    """The pixels of an <img> shown on the page, fetched from its URL as the browser would."""
    response = page.request.get(image.get_attribute("src"))
    assert response.ok, f"{response.status} for {response.url}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def is_seed_caption(caption: str) -> bool:
    return re.fullmatch(r"seed \d+", caption) is not None


# --- journeys -----------------------------------------------------------------------------------


def test_sketch_draw_with_the_mouse_and_generate(page):
    panel = open_tab(page, "Sketch")
    panel.get_by_role("button", name="Brush", exact=True).click()
    draw_stroke(page, panel.locator("canvas").first)
    expect(panel.get_by_role("button", name="Undo")).to_be_enabled()  # the stroke landed

    panel.get_by_role("button", name="Generate", exact=True).click()

    captions = wait_for_gallery(page, panel, 2)
    assert captions[0] == "Control map" and is_seed_caption(captions[1]), captions
    control_map = fetch_image(page, gallery(panel).first.locator("img"))
    assert len(np.unique(control_map.reshape(-1, 3), axis=0)) > 1, "the map shows no strokes"


def test_canny_example_then_generate(page):
    panel = open_tab(page, "Canny")
    # The device and dtype, decided after the page answered, are filled in when it loads.
    expect(panel.get_by_text(re.compile(r"Running on cpu, (float32|bfloat16)\."))).to_be_visible()
    pick_canny_example(page, panel)

    generate = panel.get_by_role("button", name="Generate", exact=True)
    generate.click()

    captions = wait_for_gallery(page, panel, 2)
    assert captions[0] == "Control map" and is_seed_caption(captions[1]), captions
    expect(generate).to_be_enabled()  # the run's end gives the buttons back
    seed = int(captions[1].split()[1])
    panel.get_by_role("button", name=re.compile("^Advanced")).click()
    expect(panel.get_by_role("spinbutton", name="Seed")).to_have_value(str(seed))


def test_fast_mode_sets_the_sampler_and_generates(page):
    """Fast mode is a visible preset: Advanced shows what it chose (LCM, 6 steps, CFG 1); the run
    names the few-step LoRA in its recipe; choosing another sampler switches it off."""
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)
    fast = panel.get_by_role("checkbox", name="Fast mode (4–8 steps)")
    fast.check()
    panel.get_by_role("button", name=re.compile("^Advanced")).click()
    expect(panel.get_by_role("spinbutton", name="Steps")).to_have_value("6")
    expect(panel.get_by_role("spinbutton", name="Guidance scale (CFG)")).to_have_value("1")
    expect(panel.get_by_role("combobox", name="Sampler")).to_have_value("LCM")

    panel.get_by_role("button", name="Generate", exact=True).click()
    captions = wait_for_gallery(page, panel, 2)
    assert captions[0] == "Control map" and is_seed_caption(captions[1]), captions
    panel.get_by_role("button", name=re.compile("^Recipe")).click()
    expect(panel.get_by_text("tiny:few-step-lora")).to_have_count(1)

    sampler = panel.get_by_role("combobox", name="Sampler")
    sampler.click()
    page.get_by_role("option", name="UniPC", exact=True).click()
    expect(fast).not_to_be_checked()  # and the tab's own steps and CFG are back
    expect(panel.get_by_role("spinbutton", name="Steps")).to_have_value("8")
    expect(panel.get_by_role("spinbutton", name="Guidance scale (CFG)")).to_have_value("7.5")


def test_compare_then_drag_the_slider(page):
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)

    panel.get_by_role("button", name="Compare with plain SD").click()

    captions = wait_for_gallery(page, panel, 3)
    assert captions == ["Control map", "plain SD (no ControlNet)", "ControlNet (Canny)"]
    handle = panel.get_by_test_id("slider")
    expect(handle).to_be_visible()
    expect(panel.get_by_test_id("imageslider-image")).to_have_count(2)
    top_image = panel.get_by_test_id("imageslider-image").last

    def position() -> tuple[float, float]:
        """(handle x on the page, left clip of the top image in %)."""
        box = handle.bounding_box()
        clip = top_image.evaluate("image => getComputedStyle(image).clipPath")
        left = re.search(r"inset\(\S+ \S+ \S+ ([\d.]+)%\)", clip)
        assert left, f"unexpected clip-path {clip!r}"
        return box["x"] + box["width"] / 2, float(left.group(1))

    handle.scroll_into_view_if_needed()
    x_before, clip_before = position()
    wrap = handle.locator("xpath=..").bounding_box()
    handle_box = handle.bounding_box()
    page.mouse.move(x_before, handle_box["y"] + handle_box["height"] / 2)
    page.mouse.down()
    page.mouse.move(wrap["x"] + wrap["width"] * 0.2, handle_box["y"] + 20, steps=8)
    page.mouse.up()

    x_after, clip_after = position()
    assert x_after < x_before - wrap["width"] * 0.2, (x_before, x_after)
    assert clip_after < clip_before - 20, (clip_before, clip_after)


def test_sweep_gives_one_image_per_value(page):
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)
    panel.get_by_role("textbox", name="Sweep values").fill("0, 0.5, 1")

    panel.get_by_role("button", name="Sweep", exact=True).click()

    captions = wait_for_gallery(page, panel, 4)
    assert captions == ["Control map", "strength 0", "strength 0.5", "strength 1"]


def test_recipe_png_from_the_gallery_refills_the_tab(page, tmp_path):
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)
    panel.get_by_role("button", name="Generate", exact=True).click()
    captions = wait_for_gallery(page, panel, 2)
    seed = int(captions[1].split()[1])

    # Save the image as a user would: open it in the gallery, press Download.
    gallery(panel).nth(1).click()
    with page.expect_download() as download:
        panel.get_by_role("button", name="Download", exact=True).click()
    recipe_png = tmp_path / download.value.suggested_filename
    download.value.save_as(recipe_png)
    assert recipe_png.suffix == ".png"

    # Change what the recipe will put back.
    panel.get_by_role("textbox", name="Prompt", exact=True).fill("something else entirely")
    panel.get_by_role("button", name=re.compile("^Advanced")).click()
    seed_box = panel.get_by_role("spinbutton", name="Seed")
    seed_box.fill("1")
    randomize = panel.get_by_role("checkbox", name="Randomize seed")
    randomize.check()

    panel.get_by_role("button", name=re.compile("^Recipe:")).click()
    recipe_section = panel.locator(".gr-accordion").filter(has_text="Load a recipe")
    with page.expect_file_chooser() as chooser:
        recipe_section.get_by_role("button", name=re.compile("upload", re.IGNORECASE)).click()
    chooser.value.set_files(recipe_png)

    expect(page.get_by_test_id("toast-body").filter(has_text="Recipe loaded")).to_contain_text(
        f"seed {seed}"
    )
    expect(seed_box).to_have_value(str(seed))
    expect(randomize).not_to_be_checked()
    expect(panel.get_by_role("textbox", name="Prompt", exact=True)).to_have_value(CANNY_EXAMPLE)


def test_segmentation_painting_becomes_the_map(page):
    from controlnet_core.preprocessors.segmentation import class_color

    panel = open_tab(page, "Segmentation")
    panel.get_by_role("button", name="Brush", exact=True).click()
    # The brush paints the "mountain" class on a "sky" background: two strokes make a region.
    draw_stroke(page, panel.locator("canvas").first, span=0.15, rows=2)
    panel.get_by_role("button", name="Use painting as map").click()

    expect(panel.get_by_role("combobox", name="Preprocessor")).to_have_value(re.compile("^None"))
    panel.get_by_role("button", name="Preview map").click()

    assert wait_for_gallery(page, panel, 1) == ["Control map"]
    colours = {
        tuple(c)
        for c in np.unique(fetch_image(page, gallery(panel).locator("img")).reshape(-1, 3), axis=0)
    }
    assert class_color("sky") in colours and class_color("mountain") in colours, sorted(colours)


def test_error_popup_shows_user_html_as_text(page):
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)
    panel.get_by_role("textbox", name="Sweep values").fill(PHISHING)

    panel.get_by_role("button", name="Sweep", exact=True).click()

    toast = page.get_by_test_id("toast-body").filter(has_text="Sweep values")
    expect(toast).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(toast).to_contain_text('<a href="https://example.invalid">')
    expect(toast.locator("a")).to_have_count(0)


def test_phone_width_canny_generate(phone_page):
    page = phone_page
    panel = open_tab(page, "Canny")
    generate = panel.get_by_role("button", name="Generate", exact=True)
    expect(generate).to_be_visible()
    box = generate.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box

    pick_canny_example(page, panel)
    generate.click()

    captions = wait_for_gallery(page, panel, 2)
    assert captions[0] == "Control map" and is_seed_caption(captions[1]), captions


def test_phone_width_a_run_shows_its_results_with_a_stop_beside_them(phone_page):
    """On a phone the results come after every control: a run scrolls them into view as it
    starts, so the image is seen forming, with a Stop above them that ends the run; its
    previews then read "stopped at step …"."""
    page = phone_page
    panel = open_tab(page, "Canny")
    pick_canny_example(page, panel)
    panel.get_by_text("Advanced", exact=True).click()
    steps = panel.get_by_role("spinbutton", name="Steps")
    steps.fill("50")  # long enough (seconds) to be stopped: the server's most steps, largest size
    steps.press("Enter")
    resolution = panel.get_by_role("spinbutton", name="number input for Resolution (short side)")
    resolution.fill("768")
    resolution.press("Enter")
    generate = panel.get_by_role("button", name="Generate", exact=True)
    generate.click()
    stop_by_results = panel.locator(".cn-results-col button.cn-stop")
    expect(stop_by_results).to_be_visible()
    expect(stop_by_results).to_be_in_viewport()
    expect(panel.locator(".cn-results-col")).to_be_in_viewport()
    results = panel.locator(".cn-results-col")
    expect(results.get_by_text("forming… step").first).to_be_visible(timeout=60_000)
    stop_by_results.click()
    expect(stop_by_results).to_be_hidden()
    expect(generate).to_be_enabled()
    # The stopped run's previews say so, not "forming…" as if it went on.
    expect(results.get_by_text("stopped at step").first).to_be_visible()
    expect(results.get_by_text("forming… step")).to_have_count(0)
