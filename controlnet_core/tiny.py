"""The "tiny" backend: SD1.5-shaped models with random weights, built locally from configs.

It exists to test the real code path fast and offline: the same diffusers classes, pipelines and
schedulers as SD1.5, with a few thousand times fewer parameters. Everything is seeded, so a given seed
always gives the same weights and images. The ControlNets get non-zero output convolutions (a fresh
`ControlNetModel.from_unet` is zero-initialised and would change nothing), so control visibly matters.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path

import torch

TINY_BASE_ID = "tiny:sd15-shaped"
TINY_CONTROLNET_PREFIX = "tiny:controlnet-"

# The SD1.5 scheduler config (stable-diffusion-v1-5/scheduler/scheduler_config.json).
SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "prediction_type": "epsilon",
    "trained_betas": None,
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (what CLIP's BPE vocab is made of)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def write_byte_level_tokenizer(folder: Path, words: tuple[str, ...] = ()) -> Path:
    """Write vocab.json + merges.txt of a byte-level CLIP tokenizer into `folder`.

    Every byte has a token (so any prompt tokenizes); each of `words` becomes one token through merges.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab_tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            merged = pieces[0] + pieces[1]
            if merged not in vocab_tokens:
                vocab_tokens.append(merged)
            pieces = [merged] + pieces[2:]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    lines = ["#version: 0.2", *dict.fromkeys(merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    return folder


@lru_cache(maxsize=1)
def _tokenizer_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="controlnet-tiny-tokenizer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_byte_level_tokenizer(folder)


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(_tokenizer_folder()), model_max_length=77)


# The tiny UNets' layout (SD1.5's and SDXL's add their conditioning to it): two blocks, the
# second with attention, so a ControlNet and the inside view have skips of two sizes to act on.
TINY_UNET_SHAPE = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


def tiny_components(seed: int = 0) -> dict:
    """The components of a tiny SD1.5-shaped pipeline (unet, vae, text encoder, tokenizer, scheduler).

    Seeded like diffusers' own `get_dummy_components`: `torch.manual_seed(seed)` before each model.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_SHAPE, cross_attention_dim=32, norm_num_groups=32)
    vae = _tiny_vae(seed, sample_size=64)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_tiny_text_config(len(tokenizer)))
    return frozen_components(unet, vae, text_encoder, tokenizer)


def _tiny_vae(seed: int, sample_size: int):
    """A tiny VAE that scales by 8 as SD's do (a ControlNet's condition encoder expects it)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
    )


def _tiny_text_config(vocab_size: int, **extra):
    """A 2-layer, 32-wide CLIP text config (`extra`: what the second SDXL encoder adds)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        **{
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "hidden_size": 32,
            "intermediate_size": 37,
            "layer_norm_eps": 1e-05,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": vocab_size,
            "max_position_embeddings": 77,
            **extra,
        }
    )


def frozen_components(unet, vae, text_encoder, tokenizer) -> dict:
    """`StableDiffusionPipeline` keyword arguments: the models in eval mode without gradients, a
    UniPC scheduler on SD1.5's schedule, and no safety checker."""
    from diffusers import UniPCMultistepScheduler

    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": UniPCMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def tiny_pipeline(seed: int = 0):
    """A tiny `StableDiffusionPipeline` (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**tiny_components(seed), requires_safety_checker=False)


def randomize_control_outputs(controlnet, seed: int, std: float = 0.05) -> None:
    """Give a ControlNet non-zero output ("zero") convolutions so that it changes the image."""
    generator = torch.Generator().manual_seed(seed)
    convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    convs.append(controlnet.controlnet_cond_embedding.conv_out)
    with torch.no_grad():
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * std)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * std)


def tiny_controlnet(unet, key: str):
    """A ControlNet cloned from `unet` (as the paper does) with seeded non-zero output convolutions."""
    from diffusers import ControlNetModel

    seed = zlib.crc32(key.encode())
    # from_unet draws the condition encoder's first layers from the global RNG: seed them too, so a
    # tiny ControlNet is the same whenever (and in whatever order) it is built.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet)
    randomize_control_outputs(controlnet, seed=seed)
    return controlnet.eval().requires_grad_(False)


def tiny_union_controlnet(unet, seed: int = 0, control_types: int = 6):
    """A union ControlNet (diffusers' `ControlNetUnionModel`, one model for several kinds of map)
    cloned from a tiny `unet` with seeded non-zero output layers, so that both the maps and their
    control types change the image. Built from the UNet's config: diffusers' `from_unet` sizes the
    maps' fusing transformer for SDXL's 320 channels, which a tiny UNet does not have."""
    import inspect

    from diffusers import ControlNetUnionModel

    accepted = inspect.signature(ControlNetUnionModel.__init__).parameters
    config = {key: value for key, value in unet.config.items() if key in accepted}
    width = unet.config.block_out_channels[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetUnionModel(
            **config,
            conditioning_embedding_out_channels=(8, 16, 16, 32),
            num_control_type=control_types,  # 6 as xinsir's first weights, 8 as ProMax
            num_trans_channel=width,
            num_trans_head=8,  # as xinsir's (a file's weights do not show it)
            num_proj_channel=width,
        )
    for part in ("conv_in", "time_proj", "time_embedding", "add_time_proj", "add_embedding"):
        getattr(controlnet, part).load_state_dict(getattr(unet, part).state_dict())
    controlnet.down_blocks.load_state_dict(unet.down_blocks.state_dict(), strict=False)
    controlnet.mid_block.load_state_dict(unet.mid_block.state_dict(), strict=False)
    randomize_control_outputs(controlnet, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for weight in controlnet.spatial_ch_projs.parameters():
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)
    return controlnet.eval().requires_grad_(False)


TINY_FEW_STEP_LORA_ID = "tiny:few-step-lora"

# The layers LCM-LoRA adapts in SD1.5's UNet (attention projections, feed-forwards, the
# transformer blocks' in/out projections, the resnets' convolutions and time embeddings).
FEW_STEP_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "time_emb_proj",
)


def tiny_few_step_lora(
    unet, seed: int = 0, rank: int = 4, alpha: float = 2.0
) -> dict[str, torch.Tensor]:
    """A random LoRA for `unet` in the layout LCM-LoRA ships (kohya's: `lora_unet_<module>` with
    `.lora_down`, `.lora_up` and an `.alpha` per layer, which scales it by alpha ÷ rank), seeded:
    the few-step path of the tiny backend and the tests loads and fuses it like the real one. Its
    factors are drawn non-zero (a fresh LoRA starts with `lora_up` at zero, which changes nothing).
    """
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not name.endswith(FEW_STEP_LORA_TARGETS) or not isinstance(
            module, (torch.nn.Linear, torch.nn.Conv2d)
        ):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down_shape, up_shape = (rank, module.in_features), (module.out_features, rank)
        else:
            down_shape = (rank, module.in_channels, *module.kernel_size)
            up_shape = (module.out_channels, rank, 1, 1)
        weights[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) * 0.3
        weights[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=generator) * 0.3
        weights[f"{key}.alpha"] = torch.tensor(alpha)
    return weights


def save_tiny_few_step_lora(unet, folder: Path, seed: int = 0) -> Path:
    """`tiny_few_step_lora` written as LCM-LoRA's repository holds it:
    `folder/pytorch_lora_weights.safetensors`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: value.contiguous() for name, value in tiny_few_step_lora(unet, seed).items()}
    save_file(weights, folder / "pytorch_lora_weights.safetensors")
    return folder


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny SDXL-shaped `StableDiffusionXLPipeline`: two text encoders (the second with a text
    projection, whose pooled output SDXL conditions on), a UNet with SDXL's "text_time" added
    embeddings (pooled text + size and crop ids), seeded like diffusers' own SDXL tests."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_UNET_SHAPE,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 size/crop ids × 8 + the 32-wide pooled text
        cross_attention_dim=80,  # both text encoders' states side by side (32 + 48 wide)
        norm_num_groups=1,
    )
    vae = _tiny_vae(seed, sample_size=128)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_tiny_text_config(len(tokenizer), hidden_act="gelu"))
    torch.manual_seed(seed)
    # Another width than the first encoder's, as SDXL's are (768 and 1280): single-file loading
    # tells the two apart by it.
    text_encoder_2 = CLIPTextModelWithProjection(
        _tiny_text_config(len(tokenizer), hidden_act="gelu", hidden_size=48, projection_dim=32)
    )
    scheduler = EulerDiscreteScheduler.from_config(
        {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "leading"}
    )
    for module in (unet, vae, text_encoder, text_encoder_2):
        module.eval().requires_grad_(False)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
