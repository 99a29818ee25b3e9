"""The union ControlNet (one SDXL model for several kinds of map, told which by a control type):
the batched sampler against diffusers' `StableDiffusionXLControlNetUnionPipeline`, with one map
and with several maps fed to the one model, on tiny SDXL-shaped models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLControlNetUnionPipeline
from PIL import Image

from controlnet_core.sampling import ControlUnit, UnitSettings, Variant
from controlnet_core.tiny import tiny_sdxl_pipeline, tiny_union_controlnet
from tests.tiny_sdxl import NEGATIVE, PROMPT, SEED, SIZE, STEPS, run


@pytest.fixture(scope="module")
def models():
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, tiny_union_controlnet(pipe.unet, seed=3)


@pytest.fixture
def maps(square_image):
    lines = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    lines[::8] = 255
    return Image.fromarray(square_image), Image.fromarray(lines)


def diffusers_union(pipe, union, images, modes, **options):
    reference = StableDiffusionXLControlNetUnionPipeline.from_pipe(pipe, controlnet=union)
    reference.set_progress_bar_config(disable=True)
    return reference(
        PROMPT,
        negative_prompt=NEGATIVE,
        control_image=list(images),
        control_mode=list(modes),
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
        **options,
    ).images[0]


def test_one_map_equals_diffusers_union_pipeline_and_its_type_matters(models, maps):
    """A tab on the union model: its map read as its control type; strength, start and end as
    diffusers applies them. Another control type gives another image (the type is read)."""
    pipe, union = models
    settings = UnitSettings(0.7, 0.0, 0.67)
    images = run(
        pipe,
        [ControlUnit(union, maps[0], control_type=3)],
        [Variant(SEED, (UnitSettings(0.0),)), Variant(SEED, (settings,))],
    )
    expected = diffusers_union(
        pipe,
        union,
        [maps[0]],
        [3],
        controlnet_conditioning_scale=0.7,
        control_guidance_end=0.67,
    )
    assert np.abs(images[1] - expected).max() <= 1e-3
    assert np.abs(images[0] - expected).mean() > 1e-3  # the plain half differs: control shows
    other_type = run(
        pipe, [ControlUnit(union, maps[0], control_type=1)], [Variant(SEED, (settings,))]
    )
    assert np.abs(other_type[0] - images[1]).mean() > 1e-3


def test_several_maps_feed_one_union_call_as_diffusers_does(models, maps):
    """Combine on the union model: both maps go into one call, each weighed by its strength inside
    the model (not a sum of two runs); equal to diffusers' union pipeline with two control images,
    their strengths and their windows."""
    pipe, union = models
    calls = []
    union.register_forward_hook(lambda *_: calls.append(1))
    images = run(
        pipe,
        [
            ControlUnit(union, maps[0], control_type=3),
            ControlUnit(union, maps[1], control_type=5),
        ],
        [Variant(SEED, (UnitSettings(0.8, 0.0, 1.0), UnitSettings(0.5, 0.34, 1.0)))],
    )
    assert len(calls) == STEPS  # one call a step for both maps
    expected = diffusers_union(
        pipe,
        union,
        maps,
        [3, 5],
        controlnet_conditioning_scale=[0.8, 0.5],
        control_guidance_start=[0.0, 0.34],
        control_guidance_end=[1.0, 1.0],
    )
    assert np.abs(images[0] - expected).max() <= 1e-3


def test_a_union_sweep_and_comparison_equal_their_single_runs(models, maps):
    """Variants of different strengths share the steps; with two maps the model runs once per
    distinct pair of strengths, so each image equals its run alone, and the plain half skips it."""
    pipe, union = models
    units = [
        ControlUnit(union, maps[0], control_type=3),
        ControlUnit(union, maps[1], control_type=5),
    ]
    pairs = [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]

    def variant(pair):
        return Variant(SEED, tuple(UnitSettings(scale) for scale in pair))

    together = run(pipe, units, [variant(pair) for pair in pairs], guess_mode=True)
    for index, pair in enumerate(pairs):
        alone = run(pipe, units, [variant(pair)], guess_mode=True)[0]
        np.testing.assert_allclose(together[index], alone, atol=1e-4)
    plain = run(pipe, [], [Variant(SEED, ())], guess_mode=True)[0]
    np.testing.assert_allclose(together[0], plain, atol=1e-5)


def test_a_control_type_goes_with_a_union_model_only(models, maps):
    pipe, union = models
    with pytest.raises(ValueError, match="union ControlNet needs a control_type"):
        ControlUnit(union, maps[0])


@contextmanager
def compiled(pipe, union, backend: str) -> Iterator:
    """`pipe`'s UNet and `union` compiled with dynamo's `backend` and warmed up at SIZE², as
    `--compile` does, with dynamo's graphs counted from zero; the compiled union model."""
    from torch._dynamo.utils import counters

    from controlnet_core.compiled import Compiled, warm_up

    eager_unet = pipe.unet
    torch._dynamo.reset()
    counters.clear()
    try:
        pipe.unet = Compiled(eager_unet, backend=backend)
        model = Compiled(union, backend=backend)
        warm_up(pipe.unet, model, SIZE)
        yield model
    finally:
        pipe.unet = eager_unet
        torch._dynamo.reset()


def test_the_compiled_union_model_takes_any_control_type_and_strength_without_recompiling(
    models, maps
):
    """`--compile` on SDXL: the warm-up gives the UNet SDXL's added conditions and the union
    model one map; calls padded to a batch bucket (3 variants: 6 rows into the 8-row graph) give
    the eager images. Control types and per-map strengths go in as tensors, so another type, or
    two maps at other strengths (a sweep, a window closing mid-run), reuse the graphs compiled
    for one map and for two (dynamo's eager backend: the wrapping, not Inductor)."""
    from torch._dynamo.utils import counters

    pipe, union = models
    one = [ControlUnit(union, maps[0], control_type=3)]
    two = [*one, ControlUnit(union, maps[1], control_type=5)]
    sweep = [Variant(SEED, (UnitSettings(scale),)) for scale in (0.0, 0.5, 1.0)]

    def pairs(first: float, second: float) -> list[Variant]:
        windows = (UnitSettings(first), UnitSettings(second, 0.0, 0.67))
        return [Variant(SEED, windows), Variant(SEED, tuple(reversed(windows)))]

    expected = [run(pipe, one, sweep), run(pipe, two, pairs(0.8, 0.3))]
    with compiled(pipe, union, "eager") as model:
        one_map = [ControlUnit(model, maps[0], control_type=3)]
        got = [run(pipe, one_map, sweep)]
        graphs = counters["stats"]["unique_graphs"]
        run(pipe, [ControlUnit(model, maps[0], control_type=1)], sweep)
        assert counters["stats"]["unique_graphs"] == graphs  # another control type
        two_maps = [*one_map, ControlUnit(model, maps[1], control_type=5)]
        got.append(run(pipe, two_maps, pairs(0.8, 0.3)))
        graphs = counters["stats"]["unique_graphs"]
        run(pipe, two_maps, pairs(0.1, 0.9))
        assert counters["stats"]["unique_graphs"] == graphs  # other strengths, windows closing
    for images, reference in zip(got, expected, strict=True):
        np.testing.assert_allclose(images, reference, atol=1e-4)


def test_the_compiled_union_model_is_one_graph_and_one_more_for_every_other_size(models):
    """Traced to ATen operators as Inductor traces them (AOT autograd), the union model compiles
    whole: one graph at the warm-up's size, and with two maps one more that serves every other
    size. A control type passed as a 0-d index is read back as a number while tracing, which
    Inductor cannot compile; torch then compiles the model piecewise (12 graphs at the warm-up),
    and again at every new size."""
    from torch._dynamo.utils import counters

    pipe, union = models

    def units(model, width: int, height: int) -> list[ControlUnit]:
        box = np.full((height, width, 3), 255, dtype=np.uint8)
        box[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 0
        lines = np.zeros((height, width, 3), dtype=np.uint8)
        lines[::8] = 255
        return [
            ControlUnit(model, Image.fromarray(box), control_type=3),
            ControlUnit(model, Image.fromarray(lines), control_type=5),
        ]

    variants = [Variant(SEED, (UnitSettings(0.8), UnitSettings(0.5, 0.0, 0.67)))]
    expected = run(pipe, units(union, 96, 64), variants, width=96, height=64)
    with compiled(pipe, union, "aot_eager") as model:
        assert counters["stats"]["unique_graphs"] == 2  # the UNet's and the union model's
        got = run(pipe, units(model, 96, 64), variants, width=96, height=64)
        # Two maps at another size: the union model's graph for them, the UNet's with residuals.
        assert counters["stats"]["unique_graphs"] == 4
        for width, height in ((64, 96), (128, 96)):
            run(pipe, units(model, width, height), variants, width=width, height=height)
        assert counters["stats"]["unique_graphs"] == 4
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_plain_controlnet_with_a_union_config_warms_up_as_a_plain_one(models):
    """A plain ControlNet made from a union model's config keeps its control-type count in the
    config: the warm-up goes by the class, not the config, so it is not given a control type."""
    from diffusers import ControlNetModel

    from controlnet_core.compiled import warm_up

    pipe, union = models
    plain = ControlNetModel.from_config(union.config).eval()
    assert "num_control_type" in plain.config
    warm_up(pipe.unet, plain, SIZE)  # raised "unexpected keyword argument 'control_type'"
