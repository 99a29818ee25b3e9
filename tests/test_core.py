"""The engine on the tiny backend: shapes, determinism, ControlNet semantics, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline
from PIL import Image

from controlnet_core import Engine, GenerationRequest
from controlnet_core.settings import Settings
from controlnet_core.tiny import tiny_components
from tests.conftest import FAST


def make(engine: Engine, image: np.ndarray, **overrides):
    settings = {"modality": "canny", **FAST, **overrides}
    return engine.generate(GenerationRequest(**settings), image)


def test_shapes_and_control_map(tiny_engine, square_image):
    result = make(tiny_engine, square_image, num_images=2)
    assert result.arrays.shape == (2, 64, 64, 3)
    assert result.arrays.dtype == np.float32
    assert result.arrays.min() >= 0.0 and result.arrays.max() <= 1.0
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    control = np.asarray(result.control_map)
    assert control.shape == (64, 64, 3)
    # Canny of a filled square: edges on its border, nothing in its interior or far outside.
    assert control[16:48, 14:19].max() >= 200
    assert control[24:40, 24:40].max() == 0
    assert control[:8, :8].max() == 0


def test_non_square_input_keeps_aspect_ratio(tiny_engine):
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    image[30:70, 50:150] = 0
    result = make(tiny_engine, image)
    assert result.images[0].size == (128, 64)
    assert result.recipe["width"] == 128 and result.recipe["height"] == 64


def test_same_seed_identical_other_seed_different(tiny_engine, square_image):
    first = make(tiny_engine, square_image, seed=7)
    again = make(tiny_engine, square_image, seed=7)
    other = make(tiny_engine, square_image, seed=8)
    assert np.array_equal(first.arrays, again.arrays)
    assert np.abs(first.arrays - other.arrays).mean() > 1e-3


def test_each_image_of_a_batch_is_reproducible_from_its_own_seed(tiny_engine, square_image):
    batch = make(tiny_engine, square_image, seed=100, num_images=2)
    single = make(tiny_engine, square_image, seed=101)
    assert batch.recipe["seeds"] == [100, 101]
    np.testing.assert_allclose(batch.arrays[1], single.arrays[0], atol=1e-5)


def _plain_sd(prompt: str, seed: int, steps: int, size: int, negative: str = "") -> np.ndarray:
    pipe = StableDiffusionPipeline(**tiny_components(0), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(
        prompt,
        negative_prompt=negative or None,
        num_inference_steps=steps,
        height=size,
        width=size,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    return output.images[0]


def test_conditioning_scale_zero_equals_plain_stable_diffusion(tiny_engine, square_image):
    controlled = make(tiny_engine, square_image, seed=3, conditioning_scale=0.0)
    plain = _plain_sd("a red square", seed=3, steps=3, size=64)
    assert np.abs(controlled.arrays[0] - plain).max() <= 1e-6


def test_controlnet_with_nonzero_outputs_changes_the_image(tiny_engine, square_image):
    plain = make(tiny_engine, square_image, seed=3, conditioning_scale=0.0)
    full = make(tiny_engine, square_image, seed=3, conditioning_scale=1.0)
    half = make(tiny_engine, square_image, seed=3, conditioning_scale=0.5)
    distance_full = np.abs(full.arrays - plain.arrays).mean()
    distance_half = np.abs(half.arrays - plain.arrays).mean()
    assert distance_full > 1e-3
    # More strength moves the image further from plain SD.
    assert distance_full > distance_half > 0


def test_fresh_controlnet_is_zero_initialised_and_changes_nothing(square_image):
    """The paper's zero convolutions: a ControlNet cloned from the UNet starts as plain SD."""
    components = tiny_components(0)
    controlnet = ControlNetModel.from_unet(components["unet"])
    pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in components.items() if k != "image_encoder"},
        controlnet=controlnet,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    controlled = pipe(
        "a red square",
        image=Image.fromarray(square_image),
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images[0]
    plain = _plain_sd("a red square", seed=3, steps=3, size=64)
    assert np.abs(controlled - plain).max() <= 1e-6


def test_guidance_window_limits_control(tiny_engine, square_image):
    plain = make(tiny_engine, square_image, seed=4, conditioning_scale=0.0)
    full = make(tiny_engine, square_image, seed=4)
    late = make(tiny_engine, square_image, seed=4, guidance_start=0.5, guidance_end=1.0)
    assert 0 < np.abs(late.arrays - plain.arrays).mean() < np.abs(full.arrays - plain.arrays).mean()


def test_guess_mode_and_empty_prompt_run(tiny_engine, square_image):
    result = make(tiny_engine, square_image, prompt="", guess_mode=True)
    normal = make(tiny_engine, square_image, prompt="")
    assert result.recipe["guess_mode"] is True
    assert not np.array_equal(result.arrays, normal.arrays)


def test_recipe_records_every_setting(tiny_engine, square_image):
    result = make(tiny_engine, square_image, seed=11, negative_prompt="blurry", scheduler="DDIM")
    recipe = result.recipe
    for key, value in {
        "modality": "canny",
        "prompt": "a red square",
        "negative_prompt": "blurry",
        "preprocessor": "canny",
        "preprocessor_params": {"low_threshold": 100, "high_threshold": 200},
        "conditioning_scale": 1.0,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "steps": 3,
        "guidance_scale": 7.5,
        "seed": 11,
        "scheduler": "DDIM",
        "backend": "tiny",
        "base_model": "tiny:sd15-shaped",
        "controlnet_model": "tiny:controlnet-canny",
    }.items():
        assert recipe[key] == value, key
    assert recipe["versions"]["diffusers"] == __import__("diffusers").__version__
    assert set(recipe["versions"]) >= {"torch", "diffusers", "transformers", "python", "opencv"}
    assert recipe["versions"]["pillow"] == __import__("PIL").__version__
    assert recipe["safety_checker"] is False  # the tiny backend has none


@pytest.mark.parametrize(
    "scheduler", ["UniPC", "DPM++ 2M", "DPM++ 2M Karras", "Euler a", "Euler", "DDIM"]
)
def test_every_scheduler_runs(tiny_engine, square_image, scheduler):
    result = make(tiny_engine, square_image, scheduler=scheduler)
    assert np.isfinite(result.arrays).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conditioning_scale": 2.5}, "conditioning_scale must be between 0 and 2"),
        ({"conditioning_scale": -0.1}, "conditioning_scale must be between 0 and 2"),
        ({"guidance_start": 1.2}, "guidance_start must be between 0 and 1"),
        ({"guidance_end": -1}, "guidance_end must be between 0 and 1"),
        ({"guidance_start": 0.6, "guidance_end": 0.4}, "guidance_start must be less than the end"),
        ({"steps": 0}, "steps must be between 1 and 50"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"guidance_scale": 31}, "guidance_scale must be between 0 and 30"),
        ({"seed": -1}, "seed must be between 0 and 4294967295"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
        ({"num_images": 0}, "num_images must be between 1 and 4"),
        ({"num_images": 5}, "num_images must be between 1 and 4"),
        ({"resolution": 100}, "resolution must be a multiple of 64"),
        ({"resolution": 1024}, "resolution must be between 64 and 768"),
        ({"resolution": float("nan")}, "resolution must be between"),
        ({"modality": "x-ray"}, "modality must be one of: canny"),
        ({"preprocessor": "scribble_threshold"}, "preprocessor must be one of"),
        (
            {"preprocessor_params": {"low_threshold": 300}},
            "'low_threshold' must be between 1 and 255",
        ),
        ({"preprocessor_params": {"sigma": 1}}, "has no parameter"),
        ({"scheduler": "PLMS"}, "scheduler must be one of"),
        ({"prompt": None}, "prompt must be text"),
        ({"prompt": "x" * 2001}, "prompt must be at most 2000 characters"),
        ({"detect_resolution": 10}, "detect_resolution must be between 64 and 2048"),
    ],
)
def test_invalid_arguments_name_the_argument_and_range(
    tiny_engine, square_image, overrides, message
):
    with pytest.raises(ValueError, match=message):
        make(tiny_engine, square_image, **overrides)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "image is required"),
        ("not an image", "image file could not be read"),  # text is taken for a path
        (b"not an image", "image must be a PIL image or a numpy array"),
        (np.zeros((4, 4, 3), np.uint8), "image is too small"),
        (np.zeros((64, 64, 5), np.uint8), "image must be HxW, HxWx3 or HxWx4"),
    ],
)
def test_invalid_images_are_rejected(tiny_engine, image, message):
    with pytest.raises(ValueError, match=message):
        tiny_engine.generate(GenerationRequest(modality="canny", **FAST), image)


def test_canny_thresholds_must_be_ordered(tiny_engine, square_image):
    with pytest.raises(ValueError, match="low_threshold .* must not exceed high_threshold"):
        make(
            tiny_engine,
            square_image,
            preprocessor_params={"low_threshold": 200, "high_threshold": 100},
        )


def test_control_maps_are_cached_across_prompts(square_image):
    engine = Engine(Settings(backend="tiny"))
    make(engine, square_image, prompt="one")
    make(engine, square_image, prompt="two", seed=5)
    assert engine.preprocessor_runs == 1
    make(engine, square_image, preprocessor_params={"low_threshold": 50})
    assert engine.preprocessor_runs == 2


def test_settings_caps_limit_requests(square_image):
    engine = Engine(Settings(backend="tiny", max_images=2, max_resolution=128, max_steps=5))
    with pytest.raises(ValueError, match="num_images must be between 1 and 2"):
        make(engine, square_image, num_images=3)
    with pytest.raises(ValueError, match="resolution must be between 64 and 128"):
        make(engine, square_image, resolution=192)
    with pytest.raises(ValueError, match="steps must be between 1 and 5"):
        make(engine, square_image, steps=6)


def test_scribble_and_sketch_maps_are_white_strokes_on_black(tiny_engine):
    drawing = np.full((64, 64, 3), 255, dtype=np.uint8)
    drawing[30:34, 8:56] = 0  # a dark horizontal stroke on a white page
    for modality in ("scribble", "sketch"):
        result = make(tiny_engine, drawing, modality=modality)
        control = np.asarray(result.control_map)[..., 0]
        assert control[31:33, 10:54].min() == 255, modality
        assert control[:20].max() == 0 and control[45:].max() == 0, modality
    # White-on-black input keeps its polarity with "auto".
    inverted = 255 - drawing
    control = np.asarray(make(tiny_engine, inverted, modality="scribble").control_map)[..., 0]
    assert control[31:33, 10:54].min() == 255 and control[:20].max() == 0


def test_large_photos_are_scaled_down_for_detection(tiny_engine):
    photo = np.full((900, 1200, 3), 255, dtype=np.uint8)
    photo[200:700, 300:900] = 0
    control = tiny_engine.control_map("canny", photo, detect_resolution=256, resolution=64)
    assert control.shape == (64, 64, 3)  # 4:3 at a 64-px short side rounds to 64x64 (centre crop)
    assert control.max() >= 200 and control[28:36, 36:44].max() == 0


def test_sixteen_bit_cmyk_and_float_images_are_converted_not_clipped(tmp_path):
    from controlnet_core.images import to_rgb_array

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "depth16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # what a 16-bit depth map opens as
        converted = to_rgb_array(image)
    assert converted.dtype == np.uint8 and converted.shape == (64, 64, 3)
    assert converted[0, 0, 0] == 0 and converted[-1, -1, 0] == 255
    assert abs(converted.mean() - 127.5) < 1  # a ramp stays a ramp (clipping gave ≈ 254.5)
    assert np.array_equal(to_rgb_array(ramp), converted)
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no magenta/yellow ink: red
    assert to_rgb_array(cmyk)[0, 0].tolist() == [255, 0, 0]
    floats = np.full((16, 16), 0.5, np.float32)
    assert to_rgb_array(floats)[0, 0].tolist() == [128, 128, 128]
    truncated = tmp_path / "truncated.png"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with Image.open(truncated) as image, pytest.raises(ValueError, match="could not read"):
        to_rgb_array(image)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False)]
    + [("no", False), ("yes", True), (np.bool_(True), True)],
)
def test_flags_parse_words_and_reject_anything_else(value, expected):
    from controlnet_core import parse_flag

    assert parse_flag("guess_mode", value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 0.5])
def test_flags_reject_other_values(value):
    from controlnet_core import parse_flag

    with pytest.raises(ValueError, match="guess_mode must be true or false"):
        parse_flag("guess_mode", value)


def test_guess_mode_false_as_text_is_false(tiny_engine, square_image):
    result = make(tiny_engine, square_image, guess_mode="false")
    assert result.recipe["guess_mode"] is False


def test_seeds_of_a_batch_wrap_past_the_largest_seed(tiny_engine, square_image):
    from controlnet_core import MAX_SEED

    result = make(tiny_engine, square_image, seed=MAX_SEED, num_images=2, steps=1)
    assert result.recipe["seeds"] == [MAX_SEED, 0]
    again = make(tiny_engine, square_image, seed=0, steps=1)
    # Within float precision: another batch size may sum in another order.
    assert np.abs(result.arrays[1] - again.arrays[0]).max() < 1e-3


def test_preview_maps_check_their_sizes_like_generation(tiny_engine, square_image):
    with pytest.raises(ValueError, match="resolution must be a multiple of 64"):
        tiny_engine.control_map("canny", square_image, resolution=100)
    with pytest.raises(ValueError, match="detect_resolution must be between 64 and 2048"):
        tiny_engine.control_map("canny", square_image, detect_resolution=5000)


def test_errors_of_an_extra_control_image_name_it(tiny_engine, square_image):
    from controlnet_core import ControlSpec

    request = GenerationRequest(
        modality="canny", **FAST, extra_controls=(ControlSpec(modality="scribble"),)
    )
    with pytest.raises(ValueError, match=r"extra_images\[0\]: image is too small"):
        tiny_engine.generate(request, square_image, extra_images=[np.zeros((4, 4, 3), np.uint8)])


def test_images_blocked_by_the_safety_checker_are_black(square_image):
    engine = Engine(Settings(backend="tiny"))
    base = engine.manager.base()
    base.safety_checker = object()  # a stand-in with the real checker's contract:
    base.run_safety_checker = lambda images, device, dtype: (
        torch.zeros_like(images),
        [True] * len(images),
    )
    result = make(engine, square_image, steps=1)
    assert result.nsfw == [True] and result.arrays.max() == 0.0


def test_segmentation_maps_keep_only_palette_colours_when_resized(tiny_engine):
    from controlnet_core.preprocessors.segmentation import ADE20K_PALETTE

    painted = np.zeros((300, 400, 3), np.uint8)
    painted[:] = ADE20K_PALETTE[2]  # sky
    painted[150:, :] = ADE20K_PALETTE[9]  # grass
    painted[100:250, 150:200] = ADE20K_PALETTE[4]  # tree
    palette = {tuple(c) for c in ADE20K_PALETTE.tolist()}
    for preprocessor in ("seg_palette_snap", "none"):
        control = tiny_engine.control_map("seg", painted, preprocessor, resolution=512)
        assert control.shape[:2] == (512, 704)
        colours = {tuple(c) for c in np.unique(control.reshape(-1, 3), axis=0).tolist()}
        assert colours <= palette and len(colours) == 3


def test_transparent_maps_keep_their_background_and_photos_go_over_white(tiny_engine):
    line = np.zeros((128, 128, 4), np.uint8)  # a white line on a fully transparent black
    line[60:68, :, :] = 255
    image = Image.fromarray(line, "RGBA")
    as_map = tiny_engine.control_map("canny", image, "none", resolution=128)
    assert as_map.mean() < 20  # the map's own black background (over white it was all 255)
    from controlnet_core.images import to_rgb_array

    # What a detector sees: the picture as shown on screen.
    assert to_rgb_array(image).mean() == 255


def test_sixteen_bit_big_endian_and_transparent_gray_images():
    from controlnet_core.images import to_rgb_array

    dark = np.full((16, 16), 199 * 257, dtype=">u2")  # big-endian 16-bit, darker than 8-bit 255
    assert to_rgb_array(dark)[0, 0, 0] == 199
    gray = Image.fromarray(np.full((16, 16), 40, np.uint8), "L")
    gray.info["transparency"] = 40  # every pixel is the transparent grey
    assert to_rgb_array(gray)[0, 0].tolist() == [255, 255, 255]


def test_control_map_defaults_fit_a_lower_resolution_cap(square_image):
    engine = Engine(Settings(backend="tiny", max_resolution=384))
    assert engine.control_map("canny", square_image).shape[:2] == (384, 384)
