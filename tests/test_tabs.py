"""Every modality's tab answers on its named endpoint, offline, on the tiny backend (gradio_client)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from app import build_app
from controlnet_core import Engine
from controlnet_core.modalities import INPUT_CANVAS, MODALITIES
from controlnet_core.preprocessors import PREPROCESSORS
from controlnet_core.preprocessors.pose import COLORS
from controlnet_core.settings import Settings
from demos.examples import depth_scene, seg_landscape, shapes_drawing, skimage_sample
from tests.conftest import endpoint_args


def offline_preprocessor(modality_id: str) -> str:
    """The first preprocessor of the modality that needs no weights (at worst "none")."""
    return next(
        p for p in MODALITIES[modality_id].preprocessors if PREPROCESSORS[p].weights is None
    )


# An input that makes sense for each tab's offline preprocessor.
INPUTS = {
    "pose": lambda: skimage_sample("astronaut.png"),
    "depth": depth_scene,
    "normal": depth_scene,
    "seg": seg_landscape,
}


def recipe_of(outputs) -> dict:
    return next(o for o in outputs if isinstance(o, dict) and "modality" in o)


@pytest.fixture(scope="module")
def client(serve_app):
    client, _, _ = serve_app()
    return client


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _source(modality_id: str, tmp_path):
    if MODALITIES[modality_id].input_kind == INPUT_CANVAS:
        canvas = np.zeros((128, 128, 4), np.uint8)
        canvas[60:68, 10:118] = (0, 0, 0, 255)
        Image.fromarray(canvas, "RGBA").save(tmp_path / "canvas.png")
        return {
            "background": None,
            "layers": [],
            "composite": handle_file(str(tmp_path / "canvas.png")),
        }
    path = INPUTS.get(modality_id, lambda: shapes_drawing("square_triangle"))()
    return handle_file(path)


@pytest.mark.parametrize("modality_id", list(MODALITIES))
def test_every_tab_generates_offline_map_first(client, modality_id, tmp_path):
    preprocessor = offline_preprocessor(modality_id)
    outputs = client.predict(
        *endpoint_args(
            client,
            f"/{modality_id}",
            image=_source(modality_id, tmp_path),
            prompt="a test",
            preprocessor=preprocessor,
            steps=2,
            resolution=64,
            randomize_seed=False,
            seed=7,
            num_images=2,
        ),
        api_name=f"/{modality_id}",
    )
    gallery, recipe = outputs[0], recipe_of(outputs)
    assert [item["caption"] for item in gallery] == ["Control map", "seed 7", "seed 8"]
    images = [_load(item["image"]) for item in gallery]
    # 64-px outputs are shown upscaled to at least 256 px; the map has the images' size
    assert all(image.shape == images[0].shape for image in images)
    assert min(images[0].shape[:2]) == 256
    assert images[0].max() > 0  # the map is not empty
    assert recipe["modality"] == modality_id and recipe["preprocessor"] == preprocessor
    assert recipe["controlnet_model"].endswith(MODALITIES[modality_id].controlnet_key)


@pytest.mark.parametrize("modality_id", [m for m in MODALITIES if m != "sketch"])
def test_every_tab_previews_an_uploaded_map_with_none(client, modality_id):
    gallery = client.predict(
        *endpoint_args(
            client,
            f"/{modality_id}_map",
            image=handle_file(seg_landscape()),
            preprocessor="none",
            resolution=64,
        ),
        api_name=f"/{modality_id}_map",
    )
    control = _load(gallery[0]["image"])
    expected = np.asarray(Image.open(seg_landscape()).convert("RGB").resize((256, 256)))
    # "none" passes the upload through (resized): the sky colour survives in the corner
    assert np.abs(control[5, 5].astype(int) - expected[5, 5]).max() <= 2


def test_pose_preset_endpoint_draws_a_skeleton_and_selects_none(client):
    image, preprocessor = client.predict(
        *endpoint_args(client, "/pose_preset", name="t-pose", mirror=True, scale=0.9),
        api_name="/pose_preset",
    )
    drawn = _load(image)
    assert preprocessor == "none" and drawn.shape == (512, 512, 3)
    for color in COLORS:
        assert (drawn == color).all(axis=2).any()


def test_missing_weights_point_to_the_offline_alternative_on_the_page(client):
    with pytest.raises(Exception) as caught:
        client.predict(
            *endpoint_args(
                client,
                "/softedge_map",
                image=handle_file(shapes_drawing("square_triangle")),
                preprocessor="hed",
                resolution=64,
            ),
            api_name="/softedge_map",
        )
    message = str(caught.value)
    assert "ControlNetHED.pth" in message and PREPROCESSORS["softedge_classical"].label in message


def test_seg_painting_snaps_to_ade20k_colours():
    from controlnet_core.preprocessors.segmentation import ADE20K_PALETTE, class_color
    from demos.seg import painting_to_map, solid_canvas

    canvas = solid_canvas("sky")
    canvas[300:] = class_color("grass")
    canvas[299:301] = (100, 200, 100)  # an antialiased seam between the two
    snapped = painting_to_map({"background": canvas, "layers": [], "composite": canvas})
    colors = {tuple(c) for c in snapped.reshape(-1, 3)}
    assert colors <= {tuple(c) for c in ADE20K_PALETTE.tolist()}
    assert tuple(snapped[0, 0]) == class_color("sky") and tuple(snapped[-1, -1]) == class_color(
        "grass"
    )


def test_switching_preprocessors_returns_one_update_per_output():
    """With a single output (Depth: no preprocessor has parameters) a list of one update became
    the detect-resolution slider's value and broke every button of the tab."""
    from controlnet_core.modalities import MODALITIES

    demo = build_app(Engine(Settings(backend="tiny")))
    handlers = [d for d in demo.fns.values() if getattr(d.fn, "__name__", "") == "show_params"]
    assert len(handlers) == len(MODALITIES)
    single = 0
    for handler in handlers:
        owner = handler.inputs[0]
        for _, preprocessor in owner.choices:
            result = handler.fn(preprocessor)
            if len(handler.outputs) == 1:
                single += 1
                assert isinstance(result, dict) and "visible" in result
            else:
                assert isinstance(result, list) and len(result) == len(handler.outputs)
    assert single > 0  # Depth is such a tab


def test_combine_is_among_the_first_tabs():
    demo = build_app(Engine(Settings(backend="tiny")))
    tabs = [block.id for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert tabs[:4] == ["canny", "scribble", "sketch", "combine"]


def test_flags_given_as_words_are_parsed_in_parameters_and_presets():
    from controlnet_core.preprocessors import get_preprocessor
    from demos.pose import preset_map

    spec = next(p for p in get_preprocessor("openpose").params if p.kind == "bool")
    assert spec.validate("false", "openpose") is False and spec.validate("true", "x") is True
    with pytest.raises(ValueError, match="must be true or false"):
        spec.validate("maybe", "openpose")
    plain, _ = preset_map("waving", "false", 1.0, 0.0, 0.0)
    mirrored, _ = preset_map("waving", "true", 1.0, 0.0, 0.0)
    assert np.array_equal(plain, preset_map("waving", False, 1.0, 0.0, 0.0)[0])
    assert not np.array_equal(plain, mirrored)


def test_combine_names_its_units_in_errors():
    from controlnet_core import FieldError
    from demos.combine import unit_form, unit_labels
    from demos.hosting import field_message

    units = [unit_form(number, "canny") for number in (1, 2, 3)]
    first = FieldError(("image",), "could not read the image (truncated)", name="")
    assert field_message(first, unit_labels([], units)) == (
        "ControlNet 1 · Image: could not read the image (truncated)"
    )
    window = FieldError(("guidance_start",), "must be less than the end (0.1); got 0.9")
    assert field_message(window.within("extra_controls", 1), unit_labels([2, 3], units)) == (
        "ControlNet 3 · Start: must be less than the end (0.1); got 0.9"
    )
    missing = FieldError(("extra_controls", 0, "modality"), "is missing")
    assert field_message(missing, unit_labels([2, 3], units)) == (
        "ControlNet 2 · Modality: is missing"
    )


def test_combine_offers_only_the_modalities_this_backend_runs():
    """The toy model has ControlNets for Canny and Scribble among the uploaded modalities: a
    Combine unit offers those (Depth would fail at Generate); the tiny backend runs them all."""
    from demos import combine

    def offered(backend: str) -> list[list[str]]:
        with gr.Blocks() as demo:
            combine.create_demo(Engine(Settings(backend=backend)))
        return [
            [value for _, value in block.choices]
            for block in demo.blocks.values()
            if isinstance(block, gr.Dropdown) and block.label == "Modality"
        ]

    assert offered("toy") == [["canny", "scribble"]] * combine.UNITS
    every = [value for _, value in combine._upload_modalities()]
    assert offered("tiny") == [every] * combine.UNITS and "depth" in every


def test_combine_resets_a_preprocessor_only_when_the_user_picks_a_modality():
    """A recipe sets a unit's modality and its own preprocessor; a .change handler would then
    reset that preprocessor to the modality's default in the browser."""
    from demos import combine

    with gr.Blocks() as demo:
        combine.create_demo(Engine(Settings(backend="tiny")))
    dropdowns = {
        block._id: block
        for block in demo.blocks.values()
        if isinstance(block, gr.Dropdown) and block.label == "Modality"
    }
    events = [
        event
        for dependency in demo.fns.values()
        for target, event in dependency.targets
        if target in dropdowns
    ]
    assert len(dropdowns) == combine.UNITS and events == ["input"] * combine.UNITS


def test_results_galleries_take_no_uploads():
    """The results gallery is also an input (Stop relabels its previews); gradio would make an
    input an upload area ("Drop Media Here") unless told it is not interactive."""
    import app

    with gr.Blocks() as demo:
        app.build_app(Engine(Settings(backend="toy")), ["canny", "sketch"], lab=False)
    inputs = {block._id for fn in demo.fns.values() for block in fn.inputs}
    galleries = [
        block
        for block in demo.blocks.values()
        if isinstance(block, gr.Gallery) and block._id in inputs
    ]
    assert len(galleries) == 3  # Canny's, Sketch's and Combine's results
    assert all(gallery.interactive is False for gallery in galleries)
