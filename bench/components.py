"""Models for the benchmarks: the tiny backend, or the full-size SD1.5 architecture with random weights.

Nothing is downloaded: the full-size models are built from SD1.5's published configs
(stable-diffusion-v1-5 unet/vae/text_encoder config.json), so they cost exactly what the real weights
cost to run. Random weights make the images noise, which does not matter for timing. The ControlNet is
`ControlNetModel.from_unet(unet)` with non-zero output convolutions, as in `controlnet_core.tiny`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from controlnet_core.tiny import (
    frozen_components,
    randomize_control_outputs,
    tiny_components,
    tiny_tokenizer,
)

ARCHES = ("tiny", "sd15")

# stable-diffusion-v1-5/unet/config.json (the fields that shape the network).
SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
}

# stable-diffusion-v1-5/vae/config.json.
SD15_VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}

# CLIP ViT-L/14's text tower (stable-diffusion-v1-5/text_encoder/config.json). The special-token ids
# are those of the byte-level tokenizer used here (its ids are all < 49408, the real vocabulary size).
SD15_TEXT_CONFIG = {
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-5,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}


def sd15_components(seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Full-size SD1.5 components with seeded random weights (fp32, on `device`).

    The weights are initialised directly on `device` (a GPU initialises 1 B parameters in a second; 2
    CPU cores take tens of seconds).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        torch.manual_seed(seed)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    return frozen_components(unet, vae, text_encoder, tokenizer)


def build(arch: str, device: str | torch.device, dtype: torch.dtype, seed: int = 0):
    """(components, controlnet) for `arch` ("tiny" or "sd15"), on `device` in `dtype`."""
    from diffusers import ControlNetModel

    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {list(ARCHES)}; got {arch!r}")
    components = tiny_components(seed) if arch == "tiny" else sd15_components(seed, device)
    unet = components["unet"]
    controlnet = ControlNetModel.from_unet(unet)
    randomize_control_outputs(controlnet, seed=seed + 1)
    controlnet.eval().requires_grad_(False)
    for name in ("unet", "vae", "text_encoder"):
        components[name] = _to(components[name], device, dtype)
    return components, _to(controlnet, device, dtype)


def _to(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    # diffusers warns on every `.to(dtype=...)`, even a no-op one: cast only when the dtype changes.
    module = module.to(device)
    return module if module.dtype == dtype else module.to(dtype)


def base_pipeline(components: dict):
    """A `StableDiffusionPipeline` over `components` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**components, requires_safety_checker=False)


def control_image(size: int, seed: int = 0) -> Image.Image:
    """A canny-like control map: white line segments on black, `size`×`size` (content is irrelevant)."""
    rng = np.random.default_rng(seed)
    array = np.zeros((size, size, 3), dtype=np.uint8)
    for _ in range(12):
        x0, y0, x1, y1 = rng.integers(0, size, 4)
        steps = max(abs(int(x1) - int(x0)), abs(int(y1) - int(y0)), 1)
        xs = np.linspace(x0, x1, steps + 1).round().astype(int)
        ys = np.linspace(y0, y1, steps + 1).round().astype(int)
        array[ys, xs] = 255
    return Image.fromarray(array)
