"""Few-step mode: the LCM sampler with a few-step LoRA fused into a copy of the UNet.

Offline, with a seeded random LoRA in LCM-LoRA's layout on the tiny models: saved to a folder and
to a single file (the real loading path), and built in memory (the tiny backend).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionControlNetPipeline
from PIL import Image

from controlnet_core import (
    Engine,
    FieldError,
    GenerationRequest,
    Settings,
    WeightsUnavailableError,
)
from controlnet_core.modalities import get_modality
from controlnet_core.tiny import TINY_FEW_STEP_LORA_ID, save_tiny_few_step_lora, tiny_pipeline
from tests.conftest import FAST

FAST_MODE = {**FAST, "scheduler": "LCM", "steps": 4, "guidance_scale": 1.0, "seed": 7}


@pytest.fixture(scope="module")
def saved(saved_models):
    """The saved tiny models, and a tiny few-step LoRA saved as LCM-LoRA's repository holds it."""
    save_tiny_few_step_lora(tiny_pipeline().unet, saved_models / "lcm-lora")
    return saved_models


def real_engine(root, lora) -> Engine:
    return Engine(
        Settings(
            backend="real",
            base_model=str(root / "sd15"),
            controlnet_dir=str(root / "controlnets"),
            few_step_lora=str(lora),
            device="cpu",
            dtype="float32",
        )
    )


def test_the_lcm_sampler_runs_the_fused_lora_as_diffusers_does(saved, square_image):
    """Our few-step image equals diffusers' own pipeline with the LCM scheduler and the same LoRA
    loaded and fused (`load_lora_weights` + `fuse_lora`); the shared UNet is left unchanged."""
    engine = real_engine(saved, saved / "lcm-lora")
    base_unet = {k: v.clone() for k, v in engine.manager.base().unet.state_dict().items()}
    request = GenerationRequest(modality="canny", preprocessor="none", **FAST_MODE)
    result = engine.generate(request, square_image)
    assert result.recipe["scheduler"] == "LCM"
    assert result.recipe["few_step_lora"] == "lcm-lora"  # by name, not the server's path
    after = engine.manager.base().unet.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in base_unet.items())

    reference = StableDiffusionControlNetPipeline.from_pretrained(
        saved / "sd15",
        controlnet=engine.manager.controlnet(get_modality("canny")).model,
        safety_checker=None,
        requires_safety_checker=False,
    )
    reference.scheduler = LCMScheduler.from_config(reference.scheduler.config)
    reference.load_lora_weights(saved / "lcm-lora")
    reference.fuse_lora()
    reference.set_progress_bar_config(disable=True)

    def reference_image() -> np.ndarray:
        return reference(
            FAST_MODE["prompt"],
            image=Image.fromarray(square_image),
            num_inference_steps=4,
            guidance_scale=1.0,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(7),
            output_type="np",
        ).images[0]

    expected = reference_image()
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3

    # The LoRA matters: without it (the plain UNet, same sampler) the image is another one.
    reference.unfuse_lora()
    reference.unload_lora_weights()
    unfused = reference_image()
    assert np.abs(unfused - expected).mean() > 1e-3


def test_a_single_lora_file_and_the_tiny_backend_give_the_same_images(saved, square_image):
    request = GenerationRequest(modality="canny", **FAST_MODE)
    from_folder = real_engine(saved, saved / "lcm-lora").generate(request, square_image)
    from_file = real_engine(saved, saved / "lcm-lora" / "pytorch_lora_weights.safetensors")
    single = from_file.generate(request, square_image)
    tiny = Engine(Settings(backend="tiny")).generate(request, square_image)
    assert tiny.recipe["few_step_lora"] == TINY_FEW_STEP_LORA_ID
    np.testing.assert_allclose(single.arrays, from_folder.arrays, atol=1e-6)
    np.testing.assert_allclose(tiny.arrays, from_folder.arrays, atol=1e-5)
    # Other samplers run the shared UNet and name no LoRA.
    other = from_file.generate(GenerationRequest(modality="canny", **FAST), square_image)
    assert "few_step_lora" not in other.recipe
    assert from_file.manager.loads["few_step_lora"] == 1


def test_a_missing_lora_says_what_to_provide(saved, square_image):
    engine = real_engine(saved, saved / "no-such-lora")
    with pytest.raises(WeightsUnavailableError) as caught:
        engine.generate(GenerationRequest(modality="canny", **FAST_MODE), square_image)
    message = str(caught.value)
    assert "few-step LoRA" in message and "--few-step-lora" in message


def test_the_toy_model_has_no_few_step_lora(square_image):
    engine = Engine(Settings(backend="toy"))
    with pytest.raises(FieldError, match="toy model has no few-step LoRA"):
        engine.generate(GenerationRequest(modality="canny", **FAST_MODE), square_image)
