"""The app on the tiny backend, through its API endpoints, as a script or a user would call it."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app import build_app
from controlnet_core import Engine
from controlnet_core.settings import Settings
from tests.conftest import FAST, endpoint_args, free_port


@pytest.fixture(scope="module")
def served(serve_app, tmp_path_factory):
    client, _, _ = serve_app(["canny", "scribble", "sketch"])
    folder = tmp_path_factory.mktemp("inputs")
    square = np.full((96, 96, 3), 255, np.uint8)
    square[24:72, 24:72] = 0
    Image.fromarray(square).save(folder / "square.png")
    return client, folder / "square.png"


# Two images from seed 5 (their captions are "seed 5" and "seed 6"), in two steps.
SETTINGS = {**FAST, "steps": 2, "randomize_seed": False, "seed": 5, "num_images": 2}


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("endpoint", ["/canny", "/scribble"])
def test_upload_endpoints_return_map_then_images_and_recipe(served, endpoint):
    client, square = served
    gallery, recipe, seed, _ = client.predict(
        *endpoint_args(client, endpoint, image=handle_file(str(square)), **SETTINGS),
        api_name=endpoint,
    )
    assert [item["caption"] for item in gallery] == ["Control map", "seed 5", "seed 6"]
    control = _load(gallery[0]["image"])
    images = [_load(item["image"]) for item in gallery[1:]]
    # 64-px outputs are shown upscaled 4x (nearest) so they are not postage stamps.
    assert control.shape == (256, 256, 3) and all(i.shape == (256, 256, 3) for i in images)
    assert set(np.unique(control)) != {0}
    assert recipe["modality"] == endpoint[1:] and recipe["seeds"] == [5, 6] and seed == 5


def test_sketch_endpoint_takes_a_canvas(served, tmp_path):
    client, _ = served
    canvas = np.zeros((128, 128, 4), np.uint8)  # transparent layer with one black stroke
    canvas[60:68, 10:118] = (0, 0, 0, 255)
    Image.fromarray(canvas, "RGBA").save(tmp_path / "canvas.png")
    value = {
        "background": None,
        "layers": [],
        "composite": handle_file(str(tmp_path / "canvas.png")),
    }
    gallery, recipe, _, _ = client.predict(
        *endpoint_args(client, "/sketch", image=value, **SETTINGS), api_name="/sketch"
    )
    control = _load(gallery[0]["image"])[..., 0]
    assert recipe["preprocessor"] == "sketch_canvas"
    assert control[control.shape[0] // 2].max() == 255 and control[:40].max() == 0


def test_empty_canvas_gives_a_clear_error(served):
    client, _ = served
    value = {"background": None, "layers": [], "composite": None}
    with pytest.raises(Exception, match="canvas is empty"):
        client.predict(
            *endpoint_args(client, "/sketch", image=value, **SETTINGS), api_name="/sketch"
        )


def test_preview_map_endpoint_runs_only_the_preprocessor(served):
    client, square = served
    args = endpoint_args(client, "/canny_map", image=handle_file(str(square)))
    gallery = client.predict(*args, api_name="/canny_map")
    assert len(gallery) == 1 and gallery[0]["caption"] == "Control map"


def test_invalid_input_is_a_message_not_a_traceback(served):
    client, square = served
    args = endpoint_args(
        client, "/canny", image=handle_file(str(square)), **{**SETTINGS, "resolution": 100}
    )
    with pytest.raises(Exception, match=r"Resolution \(short side\): must be a multiple of 64"):
        client.predict(*args, api_name="/canny")
    with pytest.raises(Exception, match="Upload an image first"):
        client.predict(*endpoint_args(client, "/canny", image=None, **SETTINGS), api_name="/canny")


def test_missing_weights_message_reaches_the_page(serve_app):
    settings = Settings(backend="real", base_model="nobody/no-such-model", device="cpu")
    client, _, _ = serve_app(["canny"], settings)
    image = np.full((64, 64, 3), 200, np.uint8)
    path = f"{__import__('tempfile').mkdtemp()}/gray.png"
    Image.fromarray(image).save(path)
    with pytest.raises(Exception, match="could not be loaded") as caught:
        client.predict(
            *endpoint_args(client, "/canny", image=handle_file(path), **SETTINGS),
            api_name="/canny",
        )
    assert "Traceback" not in str(caught.value)
    # The app keeps running: the next request is answered (with the same clear message).
    with pytest.raises(Exception, match="--backend toy"):
        client.predict(
            *endpoint_args(client, "/canny", image=handle_file(path), **SETTINGS),
            api_name="/canny",
        )


def test_compare_endpoint_returns_plain_and_controlled_with_recipes(served):
    client, square = served
    gallery, recipe, _, slider = client.predict(
        *endpoint_args(client, "/canny_compare", image=handle_file(str(square)), **SETTINGS),
        api_name="/canny_compare",
    )
    assert [item["caption"] for item in gallery] == [
        "Control map",
        "plain SD (no ControlNet)",
        "ControlNet (Canny)",
    ]
    assert recipe["kind"] == "compare" and recipe["seeds"] == [5, 5]
    plain, controlled = (_load(item["image"]) for item in gallery[1:])
    assert np.abs(plain.astype(int) - controlled.astype(int)).mean() > 0.5
    assert slider["visible"] is True and len(slider["value"]) == 2
    # Each PNG carries the recipe that makes it alone: the plain one records strength 0.
    from controlnet_core.recipes import read_recipe

    assert read_recipe(gallery[1]["image"])["conditioning_scale"] == 0.0
    assert read_recipe(gallery[2]["image"])["conditioning_scale"] == 1.0


def test_sweep_endpoint_labels_each_value(served):
    client, square = served
    args = endpoint_args(
        client,
        "/canny_sweep",
        image=handle_file(str(square)),
        **SETTINGS,
        sweep_parameter="strength",
        sweep_values="0, 1",
    )
    gallery, recipe, _, _ = client.predict(*args, api_name="/canny_sweep")
    assert [item["caption"] for item in gallery] == ["Control map", "strength 0", "strength 1"]
    assert recipe["sweep"] == {"parameter": "strength", "values": [0.0, 1.0]}
    bad = endpoint_args(
        client, "/canny_sweep", image=handle_file(str(square)), **SETTINGS, sweep_values="0, lots"
    )
    with pytest.raises(Exception, match="'lots' is not"):
        client.predict(*bad, api_name="/canny_sweep")


def test_load_recipe_refills_the_tab(served):
    client, square = served
    gallery, *_ = client.predict(
        *endpoint_args(
            client, "/canny", image=handle_file(str(square)), **{**SETTINGS, "seed": 77}
        ),
        api_name="/canny",
    )
    values = client.predict(handle_file(gallery[1]["image"]), api_name="/canny_load_recipe")
    values = [v["value"] if isinstance(v, dict) and "value" in v else v for v in values]
    assert values[0] == "a red square"  # prompt
    assert values[10] == 77 and values[11] is False  # seed, randomize off
    with pytest.raises(Exception, match="carries no recipe"):
        client.predict(handle_file(gallery[0]["image"]), api_name="/canny_load_recipe")


def combine_args(client: Client, square, **overrides):
    """Arguments for /combine: Canny and Scribble (strength 0.5) on `square`, unit 3 empty."""
    image = handle_file(str(square))
    values = {
        "unit1_image": image,
        "unit1_preprocessor": "canny",
        "unit2_modality": "scribble",
        "unit2_image": image,
        "unit2_preprocessor": "scribble_threshold",
        "unit2_strength": 0.5,
        "unit3_image": None,
        "prompt": "a red square",
        "steps": 2,
        "resolution": 64,
        "randomize_seed": False,
        **overrides,
    }
    return endpoint_args(client, "/combine", unit1_modality="canny", **values)


def test_combine_endpoint_runs_two_controlnets(served):
    client, square = served
    args = combine_args(client, square, seed=4)
    gallery, recipe, seed, _ = client.predict(*args, api_name="/combine")
    assert [item["caption"] for item in gallery] == [
        "Control map (Canny)",
        "Control map 2 (Scribble)",
        "seed 4",
    ]
    assert recipe["modality"] == "canny" and seed == 4
    assert [c["modality"] for c in recipe["extra_controls"]] == ["scribble"]
    assert recipe["extra_controls"][0]["conditioning_scale"] == 0.5
    gallery, *_ = client.predict(*args, api_name="/combine_compare")
    assert [item["caption"] for item in gallery][2:] == [
        "plain SD (no ControlNet)",
        "ControlNet (Canny + Scribble)",
    ]
    args[1] = None  # unit 1 without an image
    with pytest.raises(Exception, match="ControlNet 1 needs an image"):
        client.predict(*args, api_name="/combine")


def test_every_registry_modality_has_a_tab_and_endpoint():
    from controlnet_core.modalities import MODALITIES

    demo = build_app(Engine(Settings(backend="tiny")))
    names = {d.api_name for d in demo.fns.values() if d.api_name}
    for modality_id in MODALITIES:
        for suffix in ("", "_map", "_compare", "_sweep"):
            assert f"{modality_id}{suffix}" in names


def test_a_bad_setting_stops_the_app_with_a_one_line_error(monkeypatch):
    from app import main

    with pytest.raises(SystemExit, match="app.py: error: dtype float16 needs a GPU"):
        main(["--backend", "tiny", "--device", "cpu", "--dtype", "float16"])
    monkeypatch.setenv("CONTROLNET_PORT", "eighty")
    with pytest.raises(SystemExit, match="app.py: error: CONTROLNET_PORT"):
        main(["--backend", "tiny"])


def test_preview_endpoint_names_its_parameters_and_checks_sizes(served):
    client, square = served
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = [p["parameter_name"] for p in info["/canny_map"]["parameters"]]
    assert names[:4] == ["image", "preprocessor", "detect_resolution", "resolution"]
    assert "canny_low_threshold" in names
    args = endpoint_args(client, "/canny_map", image=handle_file(str(square)), resolution=100)
    with pytest.raises(Exception, match=r"Resolution \(short side\): must be a multiple of 64"):
        client.predict(*args, api_name="/canny_map")


def test_sixteen_bit_uploads_reach_the_core_unclipped(served, tmp_path):
    client, _ = served
    ramp = np.linspace(0, 65535, 128 * 128).reshape(128, 128).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    args = endpoint_args(
        client,
        "/canny_map",
        image=handle_file(str(tmp_path / "ramp16.png")),
        preprocessor="none",  # the map is the upload itself
        resolution=128,
    )
    gallery = client.predict(*args, api_name="/canny_map")
    shown = _load(gallery[0]["image"]).astype(float)
    assert abs(shown.mean() - 127.5) < 2  # gradio's own RGB conversion clipped it to ≈ 254


def test_text_flags_and_seeds_near_the_maximum(served):
    client, square = served
    args = endpoint_args(
        client,
        "/canny",
        image=handle_file(str(square)),
        **{**SETTINGS, "seed": 2**32 - 1, "randomize_seed": "false"},
    )
    gallery, recipe, seed, _ = client.predict(*args, api_name="/canny")
    assert seed == 2**32 - 1 and recipe["seeds"] == [2**32 - 1, 0]
    assert [item["caption"] for item in gallery[1:]] == ["seed 4294967295", "seed 0"]


def test_recipes_go_to_the_right_tab(served):
    client, square = served
    args = combine_args(client, square, seed=9)
    gallery, recipe, _, _ = client.predict(*args, api_name="/combine")
    combined = handle_file(gallery[2]["image"])
    with pytest.raises(Exception, match=r"combines 2 ControlNets \(Canny \+ Scribble\)"):
        client.predict(combined, api_name="/canny_load_recipe")
    values = client.predict(combined, api_name="/combine_load_recipe")
    values = [v["value"] if isinstance(v, dict) and "value" in v else v for v in values]
    # Units: modality, image, preprocessor, strength, start, end (x3), then the common settings.
    assert values[0] == "canny" and values[6] == "scribble" and values[8] == "scribble_threshold"
    assert values[9] == 0.5
    assert values[13] is None  # unit 3's image is cleared: it must not join the next run
    prompt, _, mode, guess, steps, _, seed, randomize, resolution, _ = values[18:]
    assert (prompt, mode, guess, steps, seed, randomize, resolution) == (
        "a red square",
        "balanced",
        False,
        2,
        9,
        False,
        64,
    )
    # Generating again from the refilled settings gives the same image.
    refilled = [
        arg if isinstance(value, dict) else value for arg, value in zip(args, values, strict=True)
    ]
    refilled[1] = refilled[7] = handle_file(str(square))
    again, recipe_again, _, _ = client.predict(*refilled, api_name="/combine")
    assert recipe_again["extra_controls"] == recipe["extra_controls"]
    assert np.array_equal(_load(again[2]["image"]), _load(gallery[2]["image"]))
    # A single-modality recipe loads in its own tab, not another's.
    single, *_ = client.predict(
        *endpoint_args(client, "/canny", image=handle_file(str(square)), **SETTINGS),
        api_name="/canny",
    )
    with pytest.raises(Exception, match="This recipe is for the Canny tab"):
        client.predict(handle_file(single[1]["image"]), api_name="/scribble_load_recipe")


def test_combine_errors_name_the_unit(served):
    client, square = served
    args = combine_args(
        client,
        square,
        unit2_image=None,
        unit3_modality="scribble",
        unit3_image=handle_file(str(square)),
        unit3_preprocessor="scribble_threshold",
        unit3_start=0.9,
        unit3_end=0.1,
    )
    with pytest.raises(Exception, match=r"ControlNet 3 · Start: must be less than the end"):
        client.predict(*args, api_name="/combine")


def test_combine_names_shared_fields_and_refuses_four_controlnets(served, tmp_path):
    import json

    client, square = served
    args = combine_args(client, square, unit2_image=None, resolution=100)
    with pytest.raises(Exception, match=r"^Resolution \(short side\): must be a multiple of 64"):
        client.predict(*args, api_name="/combine")
    recipe = {
        "format": "controlnet-demo-suite/recipe-v1",
        "modality": "canny",
        "extra_controls": [{"modality": "canny", "guidance_start": 2}] * 3,
    }
    (tmp_path / "four.json").write_text(json.dumps(recipe))
    with pytest.raises(Exception, match="has 4 ControlNets; the Combine tab holds 3"):
        client.predict(handle_file(str(tmp_path / "four.json")), api_name="/combine_load_recipe")


def test_an_api_call_may_send_no_prompt(served):
    client, square = served
    args = endpoint_args(
        client, "/canny", image=handle_file(str(square)), **{**SETTINGS, "prompt": None}
    )
    gallery, recipe, _, _ = client.predict(*args, api_name="/canny")
    assert recipe["prompt"] == "" and len(gallery) == 3


def test_a_tab_runs_alone_with_the_apps_look(tmp_path):
    """`python demos/<tab>.py` serves that tab with the app's theme, CSS and keyboard script."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    port = free_port()
    env = {**__import__("os").environ, "GRADIO_TEMP_DIR": str(tmp_path)}
    server = subprocess.Popen(
        [sys.executable, "demos/canny.py", "--backend", "tiny", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as reply:
                    config = json.loads(reply.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.5)
        assert ".cn-results" in config["css"] and "cn-generate" in config["head"]
        assert config["theme"] == "soft"
        assert any(d.get("api_name") == "canny" for d in config["dependencies"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_page_is_built_without_importing_torch():
    """torch takes seconds to import: the page does not wait for it (the first generation or the
    warm-up after the server answers imports it)."""
    import subprocess
    import sys

    code = (
        "import sys, app\n"
        "from controlnet_core import Engine, Settings\n"
        "for backend in ('toy', 'tiny', 'real'):\n"
        "    app.build_app(Engine(Settings(backend=backend)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "engine = Engine(Settings(backend='toy'))\n"
        "engine.warm_up()\n"
        "assert 'torch' in sys.modules and engine.manager.hardware_known\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_inside_endpoint_traces_one_generation(served):
    """`/canny_inside`: a heat map per injection point and one bar per block; at strength 0 every
    bar is exactly 0, and the tab's generate endpoint keeps its four outputs."""
    client, square = served
    args = endpoint_args(client, "/canny_inside", image=handle_file(str(square)), **SETTINGS)
    heats, bars = client.predict(*args, api_name="/canny_inside")
    rows = bars["data"]
    assert len(heats) == len(rows) >= 2
    # Each heat map's caption opens with its bar's label, then the block's name in diffusers.
    for heat, row in zip(heats, rows, strict=True):
        assert heat["caption"].startswith(f"{row[0]} (")
    assert heats[0]["caption"].startswith("00 in (conv_in) · ")
    assert f"{len(rows) - 1:02d} mid (mid_block) · " in heats[-1]["caption"]
    assert all(row[1] > 0 for row in rows)
    off = endpoint_args(
        client,
        "/canny_inside",
        image=handle_file(str(square)),
        **{**SETTINGS, "conditioning_scale": 0.0, "inside_step": "first"},
    )
    _, bars = client.predict(*off, api_name="/canny_inside")
    assert all(row[1] == 0 for row in bars["data"])


def test_timeline_endpoint_shows_both_rows_step_by_step(served):
    client, square = served
    args = endpoint_args(client, "/canny_timeline", image=handle_file(str(square)), **SETTINGS)
    strip, note = client.predict(*args, api_name="/canny_timeline")
    captions = [item["caption"] for item in strip]
    steps = SETTINGS["steps"]
    assert captions[0] == f"plain SD · step 1/{steps}"
    assert captions[-1] == f"ControlNet · step {steps}/{steps}"
    assert len(captions) == 2 * min(6, steps) and "linear latent→RGB map" in note


def test_combine_inside_traces_the_summed_residuals(served):
    client, square = served
    args = combine_args(client, square)
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in info["/combine_inside"]["parameters"]][-1] == (
        "inside_step"
    )
    heats, bars = client.predict(*args, "mean", api_name="/combine_inside")
    assert len(heats) == len(bars["data"]) >= 2 and all(row[1] > 0 for row in bars["data"])
    off = combine_args(client, square, unit1_strength=0.0, unit2_image=None)
    _, bars = client.predict(*off, "first", api_name="/combine_inside")
    assert all(row[1] == 0 for row in bars["data"])


def test_a_run_streams_the_images_forming_then_the_result(serve_app, tmp_path):
    """Through the API: a generation yields previews (the gallery only, captioned with the step)
    before its result; `predict` still returns the result alone."""
    client, _, engine = serve_app(["canny"], combine=False)
    engine.preview_interval = 0.0  # every step: the tiny backend is too quick for the clock
    square = np.full((96, 96, 3), 255, np.uint8)
    square[24:72, 24:72] = 0
    Image.fromarray(square).save(tmp_path / "square.png")
    args = endpoint_args(
        client,
        "/canny",
        image=handle_file(str(tmp_path / "square.png")),
        **{**SETTINGS, "steps": 4},
    )
    job = client.submit(*args, api_name="/canny")
    job.result(timeout=120)
    outputs = job.outputs()
    previews, final = outputs[:-1], outputs[-1]
    captions = [[item["caption"] for item in output[0]] for output in previews]
    assert captions == [[f"forming… step {s} of 4"] * 2 for s in (1, 2, 3)]
    assert all(_load(output[0][0]["image"]).shape == (256, 256, 3) for output in previews)
    assert [item["caption"] for item in final[0]] == ["Control map", "seed 5", "seed 6"]
    assert final[2] == 5
