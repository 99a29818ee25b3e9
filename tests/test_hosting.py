"""What a public server needs: cancelled work stops, inputs and disk stay bounded, error text is safe."""

from __future__ import annotations

import inspect
import json
import os
import threading
import time

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app import build_app
from controlnet_core import Engine, GenerationCancelled, GenerationRequest
from controlnet_core.errors import shown
from controlnet_core.images import ImageTooLargeError, open_image
from controlnet_core.recipes import read_recipe
from controlnet_core.settings import Settings
from controlnet_core.storage import PREFIX, ServerFolder, remove_orphans
from demos.hosting import MAX_MESSAGE_CHARS, page_text, user_errors
from tests.conftest import endpoint_args, free_port


def bomb_png(path, side: int = 13000) -> str:
    """A 1-bit PNG that is ~20 KB on disk and `side`² pixels once decoded."""
    Image.new("1", (side, side), 1).save(path)
    return str(path)


# --- error text -------------------------------------------------------------------------------


def test_shown_values_are_short_and_hold_no_addresses():
    assert len(shown("x" * 100_000)) < 80
    assert shown(object()) == "<object>"
    assert shown(np.zeros(3)) == "<ndarray>"
    assert shown("UniPC") == "'UniPC'"
    assert len(shown(list(range(20_000)))) < 40


def test_page_text_is_escaped_and_capped():
    text = page_text('<a href="https://example.invalid">Session expired</a>')
    assert "<" not in text and "&lt;a href=" in text
    assert len(page_text("é" * 100_000)) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "error",
    [
        gr.Error("Sweep values: '<img src=x>' is not a number"),
        ValueError("scheduler must be one of [...]; got '<form><input></form>'"),
    ],
)
def test_handler_errors_reach_the_page_escaped(error):
    @user_errors
    def handler():
        raise error

    with pytest.raises(gr.Error) as caught:
        handler()
    assert "<" not in caught.value.message and "&lt;" in caught.value.message


def test_unexpected_errors_name_their_type_only():
    @user_errors
    def handler():
        raise RuntimeError("/srv/app/secret/path.py at 0x7f00deadbeef")

    with pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.message == "Generation failed: RuntimeError"


def test_a_huge_recipe_is_refused_with_a_short_message():
    from controlnet_core import request_from_recipe

    recipe = {"format": "controlnet-demo-recipe/1", "modality": "canny"}
    recipe["extra_controls"] = [{"modality": "canny"}] * 20_000
    with pytest.raises(ValueError) as caught:
        request_from_recipe(recipe)
    assert "20000" in str(caught.value) and len(str(caught.value)) < 200


@pytest.fixture(scope="module")
def served_canny(serve_app, tmp_path_factory):
    client, _, _ = serve_app(["canny"], combine=False)
    folder = tmp_path_factory.mktemp("files")
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(folder / "gray.png")
    (folder / "notes.png").write_text("not an image")
    return client, folder


def _canny_error(client, image, **overrides) -> str:
    args = endpoint_args(
        client, "/canny", image=handle_file(str(image)), steps=2, resolution=64, **overrides
    )
    with pytest.raises(Exception) as caught:
        client.predict(*args, api_name="/canny")
    return str(caught.value)


def test_gradio_input_checks_are_escaped_and_name_the_input(served_canny):
    client, folder = served_canny
    message = _canny_error(
        client, folder / "gray.png", scheduler='<a href="https://x.invalid">Session expired</a>'
    )
    assert message.startswith("Sampler: ") and "<a" not in message and "&lt;a href=" in message


def test_an_unreadable_upload_names_no_server_path(served_canny):
    client, folder = served_canny
    message = _canny_error(client, folder / "notes.png")
    assert message == (
        "Input image: this is not an image that can be read (PNG, JPEG, WebP, BMP, TIFF…)."
    )


# --- bounded inputs ---------------------------------------------------------------------------


def test_pixel_bombs_are_refused_from_the_header(tmp_path):
    path = bomb_png(tmp_path / "bomb.png")
    assert os.path.getsize(path) < 100_000
    with pytest.raises(ImageTooLargeError, match="13000x13000"):
        open_image(path, max_pixels=25_000_000)
    image = open_image(path, max_pixels=200_000_000)  # under the limit: opened, not decoded yet
    assert image.size == (13000, 13000) and image.tile  # tiles left to decode: not loaded


def test_an_upload_the_server_would_refuse_is_named_and_removed_at_once(tmp_path):
    """The input image's upload handler (a tab's and a Combine unit's) reads the header only: an
    image over the pixel limit, or no image, is taken out of the box with a warning; a good one
    stays as it is."""
    import warnings

    import gradio as gr

    import app
    from controlnet_core import Engine

    with gr.Blocks() as demo:
        app.build_app(Engine(Settings(backend="toy")), ["canny"], lab=False)
    checks = {
        demo.blocks[target].label: dependency.fn
        for dependency in demo.fns.values()
        for target, event in dependency.targets
        if event == "upload" and isinstance(demo.blocks[target], gr.Image)
    }
    assert set(checks) == {"Input image", "Image or control map"}
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48)).save(good)
    (tmp_path / "notes.png").write_text("shopping list")
    for check in checks.values():
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            assert check(bomb_png(tmp_path / "bomb.png")) is None
            assert check(str(tmp_path / "notes.png")) is None
        said = [str(w.message) for w in shown if w.category is not Image.DecompressionBombWarning]
        assert "13000x13000" in said[0] and "not an image" in said[1] and len(said) == 2
        assert check(str(good)) == gr.update()


def test_files_over_the_byte_limit_are_refused_unread(tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), np.uint8)).save(path)
    with pytest.raises(ImageTooLargeError, match="MB"):
        open_image(str(path), max_pixels=25_000_000, max_bytes=100_000)


def test_unreadable_files_are_named_without_their_path(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError) as caught:
        open_image(str(path), max_pixels=25_000_000)
    assert str(tmp_path) not in str(caught.value)


def test_photos_are_turned_upright_from_exif(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90° clockwise
    Image.fromarray(array).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = open_image(str(tmp_path / "photo.jpg"), max_pixels=10_000)
    assert image.size == (20, 40)
    assert np.asarray(image)[:10].mean() > 200 and np.asarray(image)[-10:].mean() < 50


def test_engine_refuses_bombs_before_decoding(tmp_path):
    engine = Engine(Settings(backend="tiny"))
    path = bomb_png(tmp_path / "bomb.png", side=6000)
    limit = engine.settings.max_image_pixels
    assert limit < 6000 * 6000
    with pytest.raises(ImageTooLargeError):
        engine.control_map("canny", path, resolution=64)


def test_a_bomb_recipe_png_is_a_clear_error(tmp_path):
    path = bomb_png(tmp_path / "bomb.png", side=20000)  # past Pillow's own bomb limit
    with pytest.raises(ValueError, match="could not be read"):
        read_recipe(path)


# --- cancellation -----------------------------------------------------------------------------


def test_a_raising_progress_callback_stops_the_denoising_loop(tiny_engine, square_image):
    steps_seen = []

    def progress(fraction: float, text: str) -> None:
        if text.startswith("Denoising"):
            steps_seen.append(text)
            if len(steps_seen) == 3:
                raise GenerationCancelled(text)

    request = GenerationRequest(modality="canny", steps=20, resolution=64)
    with pytest.raises(GenerationCancelled):
        tiny_engine.generate(request, square_image, progress=progress)
    assert len(steps_seen) == 3


class StepCounter:
    """Counts UNet calls of the served engine (one per denoising step)."""

    def __init__(self, engine: Engine) -> None:
        self.calls = 0
        self._stepped = threading.Condition()
        engine.manager.base().unet.register_forward_hook(self._hook)

    def _hook(self, *_):
        with self._stepped:
            self.calls += 1
            self._stepped.notify_all()

    def wait_for(self, calls: int, limit: float = 30.0) -> None:
        """Return as soon as `calls` steps have run (fails after `limit` seconds)."""
        with self._stepped:
            ran = self._stepped.wait_for(lambda: self.calls >= calls, limit)
        assert ran, "the job never started denoising"

    def settle(self, quiet: float = 1.0, limit: float = 20.0) -> None:
        """Return once no step ran for `quiet` seconds (fails after `limit`)."""
        deadline = time.monotonic() + limit
        with self._stepped:
            while self._stepped.wait(quiet):  # woken by a step: not quiet yet
                assert time.monotonic() < deadline, f"steps still running after {limit} s"


@pytest.fixture(scope="module")
def slow_server(serve_app, tmp_path_factory):
    """A served app whose generations take seconds (512 px, many steps) on the tiny backend."""
    client, demo, engine = serve_app(
        ["canny"], Settings(backend="tiny", max_steps=100), combine=False
    )
    image = tmp_path_factory.mktemp("inputs") / "square.png"
    square = np.full((512, 512, 3), 255, np.uint8)
    square[128:384, 128:384] = 0
    Image.fromarray(square).save(image)
    engine.generate(GenerationRequest(modality="canny", steps=1, resolution=64), square)
    return client, engine, handle_file(str(image)), demo


def _long_job(client, image):
    args = endpoint_args(
        client, "/canny", image=image, steps=100, resolution=512, randomize_seed=False, seed=1
    )
    return client.submit(*args, api_name="/canny")


def test_cancelling_a_job_stops_its_denoising_loop(slow_server):
    client, engine, image, _ = slow_server
    counter = StepCounter(engine)
    for _round in range(2):  # a second cancelled job must not pile up on the first
        before = counter.calls
        job = _long_job(client, image)
        counter.wait_for(before + 2)
        job.cancel()
        cancelled_at = counter.calls
        counter.settle()
        # Stopped within a step or two of the cancel, far from the 100 steps asked for.
        assert counter.calls - cancelled_at <= 3
        assert counter.calls - before < 50
    # CPU is idle afterwards: no thread keeps computing.
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.3
    # The worker takes the next job.
    args = endpoint_args(
        client, "/canny", image=image, steps=2, resolution=64, randomize_seed=False
    )
    gallery, *_ = client.predict(*args, api_name="/canny")
    assert len(gallery) == 2


def test_a_closed_browser_tab_stops_its_job(slow_server):
    """When a tab's event stream drops, gradio's queue marks its running events dead (as
    `Queue.clean_events` does for the session); the generation stops at the next step."""
    client, engine, image, demo = slow_server
    counter = StepCounter(engine)
    other = Client(client.src, verbose=False)
    before = counter.calls
    job = _long_job(other, image)
    counter.wait_for(before + 2)
    for events in list(demo._queue.active_jobs):
        for event in events or ():
            if event.session_hash == other.session_hash:
                event.alive = False
    stopped_at = counter.calls
    counter.settle()
    assert counter.calls - stopped_at <= 3 and counter.calls - before < 50
    job.cancel()


# --- bounded disk -----------------------------------------------------------------------------


def test_server_folder_sweeps_old_files_and_goes_at_close(tmp_path):
    folder = ServerFolder(tmp_path)
    example = folder.path / "c0ffee" / "example.png"  # cached while the app was built
    example.parent.mkdir()
    example.write_bytes(b"x")
    assert folder.keep_present() == 1
    old = folder.path / "outputs" / "a" / "old.png"
    new = folder.path / "outputs" / "b" / "new.png"
    for path in (old, new):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    past = time.time() - 7200
    for path in (old, example):
        os.utime(path, (past, past))
    os.utime(old.parent, (past, past))
    fresh = folder.path / "outputs" / "just-made"  # a result's folder before its files are written
    fresh.mkdir()
    assert folder.sweep(max_age=3600) == 1
    assert not old.exists() and new.exists() and example.exists() and fresh.exists()
    assert folder.sweep(max_age=3600, now=time.time() + 7200) == 1  # `new`, an age later
    assert not old.parent.exists() and not fresh.exists() and example.exists()
    folder.close()
    assert not folder.path.exists()


def test_sweeper_thread_runs_on_its_own(tmp_path, monkeypatch):
    folder = ServerFolder(tmp_path)
    stale = folder.path / "stale.png"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 100, time.time() - 100))
    done = threading.Event()
    sweep = folder.sweep

    def sweep_and_tell(*args, **kwargs):
        deleted = sweep(*args, **kwargs)
        if not stale.exists():
            done.set()
        return deleted

    monkeypatch.setattr(folder, "sweep", sweep_and_tell)  # what the sweeper thread calls
    folder.start_sweeper(interval=0.05, max_age=10)
    swept = done.wait(timeout=5)
    folder.close()
    assert swept


def test_folders_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f"{PREFIX}999999999"
    alive = tmp_path / f"{PREFIX}{os.getpid()}"
    other = tmp_path / "someone-elses"
    for folder in (dead, alive, other):
        folder.mkdir()
    assert remove_orphans(tmp_path) == [dead]
    assert alive.exists() and other.exists()


def test_outputs_are_stored_once(serve_app, tmp_path, monkeypatch):
    """Result PNGs are written into gradio's cache folder, so gradio serves them without a copy."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    client, _, _ = serve_app(["canny"], combine=False)
    source = tmp_path.parent / "square.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(source)
    args = endpoint_args(
        client, "/canny", image=handle_file(str(source)), steps=2, resolution=64, num_images=2
    )
    client.predict(*args, api_name="/canny")
    pngs = list(tmp_path.rglob("*.png"))
    outputs = sorted(p for p in pngs if "outputs" in p.parts)
    # One map + two images, once each; no copy of them elsewhere in the cache.
    assert len(outputs) == 3
    assert not [p for p in pngs if p not in outputs and ("seed" in p.name or "map" in p.name)]
    images = [p for p in outputs if "seed" in p.name]
    recipe = json.loads(Image.open(images[-1]).info["controlnet_recipe"])
    assert recipe["modality"] == "canny" and recipe["num_images"] == 2


# --- ZeroGPU --------------------------------------------------------------------------------


def test_gpu_duration_follows_the_work(monkeypatch):
    import spaces

    from demos import builder

    assert builder.gpu_seconds(20, 1, 512) < builder.gpu_seconds(50, 4, 768)
    assert builder.gpu_seconds(100, 8, 1024, variants=8) == builder.MAX_GPU_SECONDS
    assert builder.gpu_seconds(None, "x", 512) == 60  # the handler refuses it; ask the default
    held = {}

    def fake_gpu(fn, duration=None):  # records what ZeroGPU would be asked for
        def call(*args, **kwargs):
            held["seconds"] = duration(*args, **kwargs)
            return fn(*args, **kwargs)

        def stream(*args, **kwargs):  # as spaces.GPU wraps a generator: a generator
            held["seconds"] = duration(*args, **kwargs)
            yield from fn(*args, **kwargs)

        return stream if inspect.isgeneratorfunction(fn) else call

    monkeypatch.setattr(spaces, "GPU", fake_gpu)
    demo = build_app(Engine(Settings(backend="tiny")), ["canny"], combine=False)
    generate = next(f for f in demo.fns.values() if f.api_name == "canny")
    names = list(inspect.signature(generate.fn).parameters)
    values = {name: None for name in names if name != "progress"}
    values.update(steps=30, num_images=2, resolution=768)
    with pytest.raises(gr.Error):  # no image: refused, after the duration was asked for
        list(generate.fn(*values.values()))
    assert held["seconds"] == builder.gpu_seconds(30, 2, 768)


def test_the_server_removes_its_folder_when_stopped(tmp_path):
    """`python app.py` writes only into <GRADIO_TEMP_DIR>/controlnet-demo-<pid>, gone after SIGTERM."""
    import signal
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--backend", "tiny", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=1)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.25)
        folder = tmp_path / f"{PREFIX}{server.pid}"
        assert folder.is_dir() and any(folder.rglob("*.png"))  # the examples, cached
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert "Traceback" not in server.stderr.read()
        assert not folder.exists()
    finally:
        server.kill()


def test_a_run_with_previews_stops_when_the_page_stops_listening():
    """`with_previews` yields each preview, then the result; when gradio stops iterating (Stop, or
    the tab closed), the run in the worker thread stops at its next step, preview or not."""
    import threading
    import time

    from controlnet_core import GenerationCancelled
    from demos.hosting import with_previews

    steps_done, reported, outcome = [], [], {}
    ended = threading.Event()

    def run(preview, progress):
        try:
            for step in range(1, 101):
                time.sleep(0.01)
                steps_done.append(step)
                if step == 1:  # one preview, then steps only (a fast machine shows few)
                    preview(step, 100, [step])
                progress(step / 100, f"step {step}")
            return "finished"
        except GenerationCancelled:
            outcome["cancelled"] = True
            raise
        finally:
            ended.set()

    stream = with_previews(
        run,
        lambda result: ("final", result),
        lambda *p: ("preview", *p),
        lambda fraction, text: reported.append(text),
    )
    assert next(stream) == ("preview", 1, 100, [1])
    stream.close()
    assert ended.wait(5) and outcome == {"cancelled": True}
    assert len(steps_done) < 10
    assert reported[:1] == ["step 1"]  # the page's progress bar saw the steps

    complete = list(with_previews(lambda preview, step: "done", lambda r: ("final", r), None))
    assert complete == [("final", "done")]


def test_a_model_family_mismatch_is_named_as_such():
    from controlnet_core import ModelFamilyError
    from demos.hosting import user_errors

    @user_errors
    def handler():
        raise ModelFamilyError("The ControlNet 'x/<b>' is for SDXL, but the base model 'y' is 1.x")

    with pytest.raises(gr.Error) as caught:
        handler()
    assert caught.value.title == "Model mismatch"
    assert "x/&lt;b&gt;" in caught.value.message and "<b>" not in caught.value.message
