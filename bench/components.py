"""Models for the benchmarks: the tiny backend, or the full-size SD1.5 or SDXL architecture with
random weights.

Nothing is downloaded: the full-size models are built from the published configs
(stable-diffusion-v1-5's and stable-diffusion-xl-base-1.0's unet/vae/text_encoder config.json), so
they cost exactly what the real weights cost to run. Random weights make the images noise, which does not matter for timing. The ControlNet is
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

ARCHES = ("tiny", "sd15", "tiny-sdxl", "sdxl")
SDXL_ARCHES = ("tiny-sdxl", "sdxl")

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


# stable-diffusion-xl-base-1.0/unet/config.json (the fields that shape the network).
SDXL_UNET_CONFIG = {
    **{key: SD15_UNET_CONFIG[key] for key in ("act_fn", "in_channels", "out_channels")},
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "attention_head_dim": (5, 10, 20),
    "block_out_channels": (320, 640, 1280),
    "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": (1, 2, 10),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "use_linear_projection": True,
}

# OpenCLIP ViT-bigG/14's text tower (stable-diffusion-xl-base-1.0/text_encoder_2/config.json);
# SDXL's first text encoder is SD1.5's CLIP ViT-L/14.
SDXL_TEXT_2_CONFIG = {
    **SD15_TEXT_CONFIG,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}


def sdxl_components(seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Full-size SDXL components with seeded random weights (fp32, on `device`), scheduler
    included (SDXL's is Euler with SD1.5's training schedule)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from controlnet_core.tiny import SD15_SCHEDULER_CONFIG

    tokenizer = tiny_tokenizer()
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
        torch.manual_seed(seed)
        vae = AutoencoderKL(**{**SD15_VAE_CONFIG, "scaling_factor": 0.13025, "sample_size": 1024})
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
        torch.manual_seed(seed)
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2_CONFIG))
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer,
        "scheduler": EulerDiscreteScheduler.from_config(
            {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "leading"}
        ),
    }


def _tiny_sdxl_components(seed: int) -> dict:
    from controlnet_core.tiny import tiny_sdxl_pipeline

    return dict(tiny_sdxl_pipeline(seed).components)


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
    """(components, controlnet) for `arch` (see ARCHES), on `device` in `dtype`; SDXL's VAE stays
    float32, where float16 overflows (as the app keeps it, `models.keep_vae_float32`)."""
    from diffusers import ControlNetModel

    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {list(ARCHES)}; got {arch!r}")
    makers = {
        "tiny": lambda: tiny_components(seed),
        "sd15": lambda: sd15_components(seed, device),
        "tiny-sdxl": lambda: _tiny_sdxl_components(seed),
        "sdxl": lambda: sdxl_components(seed, device),
    }
    components = makers[arch]()
    unet = components["unet"]
    controlnet = ControlNetModel.from_unet(unet)
    randomize_control_outputs(controlnet, seed=seed + 1)
    controlnet.eval().requires_grad_(False)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in components:
            keep = name == "vae" and arch in SDXL_ARCHES and dtype == torch.float16
            components[name] = _to(components[name], device, torch.float32 if keep else dtype)
    return components, _to(controlnet, device, dtype)


def _to(module: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    # diffusers warns on every `.to(dtype=...)`, even a no-op one: cast only when the dtype changes.
    module = module.to(device)
    return module if module.dtype == dtype else module.to(dtype)


def base_pipeline(components: dict):
    """A `StableDiffusionPipeline` (no safety checker) or, for SDXL's components, a
    `StableDiffusionXLPipeline` over `components`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if "text_encoder_2" in components:
        return StableDiffusionXLPipeline(**components)
    return StableDiffusionPipeline(**components, requires_safety_checker=False)


def control_image(size: int | tuple[int, int], seed: int = 0) -> Image.Image:
    """A canny-like control map: white line segments on black, `size`×`size` or (width, height)
    (content is irrelevant)."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    array = np.zeros((height, width, 3), dtype=np.uint8)
    for _ in range(12):
        x0, x1 = rng.integers(0, width, 2)
        y0, y1 = rng.integers(0, height, 2)
        steps = max(abs(int(x1) - int(x0)), abs(int(y1) - int(y0)), 1)
        xs = np.linspace(x0, x1, steps + 1).round().astype(int)
        ys = np.linspace(y0, y1, steps + 1).round().astype(int)
        array[ys, xs] = 255
    return Image.fromarray(array)
