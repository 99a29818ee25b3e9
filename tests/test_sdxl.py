"""The batched sampler on SDXL-shaped models (tiny, built from configs): its added conditions
(pooled text embeddings, size ids) made as diffusers' SDXL pipelines make them. Not yet reachable
from the app, which refuses SDXL bases (controlnet_core.families)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from controlnet_core.sampling import ControlUnit, UnitSettings, Variant, is_sdxl, sample
from controlnet_core.tiny import randomize_control_outputs, tiny_sdxl_pipeline

PROMPT, NEGATIVE, STEPS, SIZE, SEED = "a red square", "blurry", 3, 64, 5


@pytest.fixture(scope="module")
def models():
    pipe = tiny_sdxl_pipeline()
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(pipe.unet)
    randomize_control_outputs(controlnet, seed=2)
    controlnet.eval().requires_grad_(False)
    return pipe, controlnet


def test_a_comparison_equals_diffusers_sdxl_pipelines(models, square_image):
    pipe, controlnet = models
    assert is_sdxl(pipe.unet)
    control = Image.fromarray(square_image)
    config = pipe.scheduler.config
    images, _ = sample(
        pipe,
        [ControlUnit(controlnet, control)],
        [Variant(SEED, (UnitSettings(0.0),)), Variant(SEED, (UnitSettings(1.0),))],
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        steps=STEPS,
        guidance_scale=7.5,
        width=SIZE,
        height=SIZE,
        scheduler_factory=lambda: type(pipe.scheduler).from_config(config),
    )
    common = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "num_inference_steps": STEPS,
        "guidance_scale": 7.5,
        "height": SIZE,
        "width": SIZE,
        "output_type": "np",
    }
    plain = StableDiffusionXLPipeline.from_pipe(pipe)
    plain.set_progress_bar_config(disable=True)
    expected_plain = plain(**common, generator=torch.Generator().manual_seed(SEED)).images[0]
    controlled = StableDiffusionXLControlNetPipeline.from_pipe(pipe, controlnet=controlnet)
    controlled.set_progress_bar_config(disable=True)
    expected_controlled = controlled(
        **common, image=control, generator=torch.Generator().manual_seed(SEED)
    ).images[0]
    assert np.abs(images[0] - expected_plain).max() <= 1e-3
    assert np.abs(images[1] - expected_controlled).max() <= 1e-3
    assert np.abs(expected_plain - expected_controlled).mean() > 1e-3  # control shows


def test_a_sweep_entry_equals_its_single_run(models, square_image):
    pipe, controlnet = models
    config = pipe.scheduler.config
    units = [ControlUnit(controlnet, Image.fromarray(square_image))]

    def run(scales):
        images, _ = sample(
            pipe,
            units,
            [Variant(SEED, (UnitSettings(scale),)) for scale in scales],
            prompt=PROMPT,
            steps=STEPS,
            width=SIZE,
            height=SIZE,
            scheduler_factory=lambda: type(pipe.scheduler).from_config(config),
            control_mode="prompt",  # soft weights, counted from the SDXL ControlNet's outputs
        )
        return images

    sweep = run([0.0, 0.5, 1.0])
    for index, scale in enumerate([0.0, 0.5, 1.0]):
        np.testing.assert_allclose(sweep[index], run([scale])[0], atol=1e-4)
