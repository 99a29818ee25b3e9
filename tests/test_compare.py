"""Seed-locked comparison, sweeps, control modes, multi-ControlNet and recipes (tiny backend)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    MultiControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from PIL import Image

from controlnet_core import ControlSpec, Engine, GenerationRequest, request_from_recipe
from controlnet_core.modalities import get_modality
from controlnet_core.models import make_scheduler
from controlnet_core.recipes import (
    RECIPE_FORMAT,
    a1111_parameters,
    read_recipe,
    recipe_for_image,
    save_png,
)
from controlnet_core.sampling import soft_weights
from controlnet_core.settings import Settings
from tests.conftest import FAST

# The comparisons with diffusers' pipelines below run these exact settings.
SETTINGS = {**FAST, "steps": 4, "negative_prompt": "blurry", "seed": 3}


def request(**overrides) -> GenerationRequest:
    return GenerationRequest(**{"modality": "canny", **SETTINGS, **overrides})


def diffusers_images(engine: Engine, image: np.ndarray, scheduler: str = "UniPC", **settings):
    """(plain SD, ControlNet) images from the two diffusers pipelines on the engine's components."""
    base = engine.manager.base()
    control = engine.control_map("canny", image, resolution=64)
    controlnet = engine.manager.controlnet(get_modality("canny")).model
    common = {
        "prompt": SETTINGS["prompt"],
        "negative_prompt": SETTINGS["negative_prompt"],
        "num_inference_steps": SETTINGS["steps"],
        "height": 64,
        "width": 64,
        "output_type": "np",
    }
    plain = StableDiffusionPipeline.from_pipe(
        base, scheduler=make_scheduler(scheduler, base.scheduler.config)
    )
    plain.set_progress_bar_config(disable=True)
    controlled = StableDiffusionControlNetPipeline.from_pipe(
        base, controlnet=controlnet, scheduler=make_scheduler(scheduler, base.scheduler.config)
    )
    controlled.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(SETTINGS["seed"])
    plain_image = plain(**common, generator=generator).images[0]
    generator = torch.Generator().manual_seed(SETTINGS["seed"])
    controlled_image = controlled(
        **common, image=Image.fromarray(control), generator=generator, **settings
    ).images[0]
    return plain_image, controlled_image


@pytest.mark.parametrize("scheduler", ["UniPC", "Euler a"])
def test_comparison_halves_equal_the_two_diffusers_pipelines(tiny_engine, square_image, scheduler):
    result = tiny_engine.compare(request(scheduler=scheduler), square_image)
    plain, controlled = diffusers_images(tiny_engine, square_image, scheduler)
    assert result.labels[0].startswith("plain SD")
    assert np.abs(result.arrays[0] - plain).max() <= 1e-3
    assert np.abs(result.arrays[1] - controlled).max() <= 1e-3
    assert np.abs(plain - controlled).mean() > 1e-3  # the comparison shows a real difference
    assert result.recipe["kind"] == "compare"


def test_comparison_with_window_and_guess_mode_matches_diffusers(tiny_engine, square_image):
    settings = {
        "controlnet_conditioning_scale": 0.8,
        "control_guidance_start": 0.25,
        "control_guidance_end": 0.75,
        "guess_mode": True,
    }
    result = tiny_engine.compare(
        request(conditioning_scale=0.8, guidance_start=0.25, guidance_end=0.75, guess_mode=True),
        square_image,
    )
    plain, controlled = diffusers_images(tiny_engine, square_image, **settings)
    assert np.abs(result.arrays[0] - plain).max() <= 1e-3
    assert np.abs(result.arrays[1] - controlled).max() <= 1e-3


def test_strength_sweep_matches_single_runs_and_zero_is_plain(tiny_engine, square_image):
    values = [0.0, 0.5, 1.0, 1.5]
    sweep = tiny_engine.sweep(request(), square_image, "strength", values)
    assert sweep.labels == ["strength 0", "strength 0.5", "strength 1", "strength 1.5"]
    plain = tiny_engine.compare(request(), square_image).arrays[0]
    assert np.abs(sweep.arrays[0] - plain).max() <= 1e-5
    for value, array in zip(values[1:], sweep.arrays[1:], strict=True):
        single = tiny_engine.generate(request(conditioning_scale=value), square_image).arrays[0]
        assert np.abs(array - single).max() <= 1e-4
    distances = [np.abs(a - plain).mean() for a in sweep.arrays]
    assert distances == sorted(distances)  # more strength, further from plain SD


def test_window_sweeps(tiny_engine, square_image):
    starts = tiny_engine.sweep(request(), square_image, "start", [0.0, 0.5])
    full = tiny_engine.generate(request(), square_image).arrays[0]
    assert np.abs(starts.arrays[0] - full).max() <= 1e-4
    late = tiny_engine.generate(request(guidance_start=0.5), square_image).arrays[0]
    assert np.abs(starts.arrays[1] - late).max() <= 1e-4
    ends = tiny_engine.sweep(request(), square_image, "end", [0.5, 1.0])
    assert ends.labels == ["end 0.5", "end 1"]
    with pytest.raises(ValueError, match="sweep start 1 must be less than the end"):
        tiny_engine.sweep(request(), square_image, "start", [1.0])
    with pytest.raises(ValueError, match="sweep kind must be one of"):
        tiny_engine.sweep(request(), square_image, "cfg", [1.0])
    with pytest.raises(ValueError, match="a sweep takes 1 to 8 values"):
        tiny_engine.sweep(request(), square_image, "strength", [0.1] * 9)


def test_soft_weights_follow_the_extension():
    weights = soft_weights(13)
    assert weights[-1] == 1.0 and weights[0] == pytest.approx(0.825**12)
    assert all(a < b for a, b in zip(weights, weights[1:], strict=False))


def test_control_modes_move_the_result_the_expected_way(tiny_engine, square_image):
    plain = tiny_engine.compare(request(), square_image).arrays[0]

    def distance(mode: str) -> float:
        image = tiny_engine.generate(request(control_mode=mode), square_image).arrays[0]
        return float(np.abs(image - plain).mean())

    balanced, prompt, controlnet = distance("balanced"), distance("prompt"), distance("controlnet")
    # "My prompt is more important" is closer to plain SD than balanced.
    assert prompt < balanced
    # "ControlNet is more important" lets CFG amplify the control: further than the prompt mode.
    assert controlnet > prompt
    assert len({round(balanced, 6), round(prompt, 6), round(controlnet, 6)}) == 3
    with pytest.raises(ValueError, match="control_mode must be one of"):
        tiny_engine.generate(request(control_mode="loud"), square_image)


def test_multi_controlnet_matches_diffusers(tiny_engine, square_image):
    drawing = 255 - square_image
    extra = ControlSpec(modality="scribble", conditioning_scale=0.6, guidance_end=0.5)
    result = tiny_engine.generate(
        request(extra_controls=(extra,)), square_image, extra_images=[drawing]
    )
    base = tiny_engine.manager.base()
    nets = [tiny_engine.manager.controlnet(get_modality(m)).model for m in ("canny", "scribble")]
    maps = [
        Image.fromarray(tiny_engine.control_map("canny", square_image, resolution=64)),
        Image.fromarray(tiny_engine.control_map("scribble", drawing, resolution=64)),
    ]
    pipe = StableDiffusionControlNetPipeline.from_pipe(
        base,
        controlnet=MultiControlNetModel(nets),
        scheduler=make_scheduler("UniPC", base.scheduler.config),
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=SETTINGS["prompt"],
        negative_prompt=SETTINGS["negative_prompt"],
        image=maps,
        num_inference_steps=SETTINGS["steps"],
        controlnet_conditioning_scale=[1.0, 0.6],
        control_guidance_start=[0.0, 0.0],
        control_guidance_end=[1.0, 0.5],
        generator=torch.Generator().manual_seed(SETTINGS["seed"]),
        output_type="np",
    ).images[0]
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3
    assert result.recipe["extra_controls"][0]["modality"] == "scribble"
    assert result.recipe["extra_controls"][0]["controlnet_model"] == "tiny:controlnet-scribble"
    assert len(result.extra_maps) == 1
    with pytest.raises(ValueError, match="one image per extra control"):
        tiny_engine.generate(request(extra_controls=(extra,)), square_image)
    with pytest.raises(ValueError, match=r"extra_controls\[0\].conditioning_scale must be between"):
        bad = ControlSpec(modality="scribble", conditioning_scale=3)
        tiny_engine.generate(request(extra_controls=(bad,)), square_image, extra_images=[drawing])


def test_recipe_round_trip_reproduces_a_bit_identical_image(tmp_path, square_image):
    engine = Engine(Settings(backend="tiny"))
    first = engine.generate(
        request(seed=21, num_images=2, control_mode="prompt", scheduler="Euler a"), square_image
    )
    path = save_png(first.images[1], recipe_for_image(first.recipe, 1), tmp_path / "out.png")
    with Image.open(path) as png:
        assert "Seed: 22" in png.info["parameters"]
        assert png.info["parameters"].startswith("a red square\nNegative prompt: blurry\n")
    recipe = read_recipe(path)
    assert recipe["image_index"] == 1 and recipe["image_seed"] == 22
    again = Engine(Settings(backend="tiny")).generate(request_from_recipe(recipe), square_image)
    assert np.array_equal(
        np.asarray(again.images[recipe["image_index"]]), np.asarray(first.images[1])
    )
    # JSON recipes load the same way.
    import json

    (tmp_path / "recipe.json").write_text(json.dumps(first.recipe))
    assert request_from_recipe(read_recipe(tmp_path / "recipe.json")).seed == 21


def test_bad_recipes_are_rejected_clearly(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="carries no recipe"):
        read_recipe(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_recipe("{nope")
    (tmp_path / "notes.png").write_text("shopping list")  # a text file, named as a PNG
    with pytest.raises(ValueError, match="neither a PNG generated here nor a JSON recipe"):
        read_recipe(tmp_path / "notes.png")
    (tmp_path / "broken.json").write_text('{"format": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_recipe(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="not a recipe of this app"):
        read_recipe({"prompt": "x"})
    with pytest.raises(ValueError, match="nested too deeply"):
        read_recipe("[" * 100_000)


def test_a_json_recipe_saved_with_a_byte_order_mark_loads(tmp_path):
    import json

    recipe = {"format": RECIPE_FORMAT, "modality": "canny", "seed": 3}
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(recipe).encode())
    assert read_recipe(tmp_path / "bom.json") == recipe
    assert read_recipe("\ufeff" + json.dumps(recipe)) == recipe


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"modality": None}, "names no modality"),
        ({"modality": "x-ray"}, "recipe field modality must be one of"),
        ({"modality": {"id": "canny"}}, "recipe field modality must be one of"),
        ({"preprocessor_params": [1, 2]}, "parameters must map names to values; got list"),
        ({"preprocessor_params": "abc"}, "parameters must map names to values; got str"),
        ({"extra_controls": "abc"}, "extra_controls must be a list of controls; got str"),
        ({"extra_controls": [1]}, r"extra_controls\[0\] must be an object"),
        ({"extra_controls": [{"strength": 1}]}, r"extra_controls\[0\].modality is missing"),
        ({"extra_controls": [{"modality": "dept"}]}, r"extra_controls\[0\].modality must be"),
        ({"guess_mode": "perhaps"}, "guess_mode must be true or false"),
    ],
)
def test_badly_shaped_recipe_fields_are_named(tiny_engine, fields, message):
    recipe = {"format": RECIPE_FORMAT, "modality": "canny", **fields}
    with pytest.raises(ValueError, match=message):
        tiny_engine.validate(request_from_recipe(read_recipe(recipe)))


def test_a1111_text_lists_every_controlnet():
    recipe = {
        "prompt": "p",
        "steps": 20,
        "scheduler": "UniPC",
        "guidance_scale": 7.5,
        "seeds": [5],
        "width": 512,
        "height": 512,
        "base_model": "m",
        "preprocessor": "canny",
        "controlnet_model": "c",
        "conditioning_scale": 1.0,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": "controlnet",
        "extra_controls": [{"preprocessor": "none", "controlnet_model": "d"}],
    }
    text = a1111_parameters(recipe)
    assert "Seed: 5" in text and "Size: 512x512" in text
    assert 'ControlNet 0: "Module: canny, Model: c' in text and "ControlNet 1:" in text
    assert "Control Mode: ControlNet is more important" in text


@pytest.mark.parametrize("kind", ["compare", "sweep"])
def test_one_image_of_a_comparison_or_sweep_made_alone_from_its_recipe(
    tiny_engine, square_image, kind
):
    """What the README promises: the recipe of one image of a comparison or sweep, generated alone,
    gives that image within 1/255 per pixel (a batch of one sums in another order than a batch of
    several); a generate recipe regenerated as it was gives the identical image (test above)."""
    base = request(seed=8, guidance_start=0.0, guidance_end=1.0)
    if kind == "compare":
        batched = tiny_engine.compare(base, square_image)
    else:
        batched = tiny_engine.sweep(base, square_image, "strength", [0.0, 0.5, 1.5])
    for index, image in enumerate(batched.images):
        recipe = recipe_for_image(batched.recipe, index)
        assert recipe["kind"] == "generate" and recipe["num_images"] == 1
        alone = tiny_engine.generate(request_from_recipe(recipe), square_image)
        difference = np.abs(
            np.asarray(alone.images[0], np.int16) - np.asarray(image, np.int16)
        ).max()
        assert difference <= 1, (index, difference)
    if kind == "sweep":  # the strength of each image is in its own recipe
        strengths = [recipe_for_image(batched.recipe, i)["conditioning_scale"] for i in range(3)]
        assert strengths == [0.0, 0.5, 1.5]
