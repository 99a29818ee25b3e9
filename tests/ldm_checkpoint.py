"""Write a diffusers `StableDiffusionPipeline` as an original LDM/CompVis single-file checkpoint.

This is the inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and
`convert_ldm_clip_checkpoint` (diffusers/loaders/single_file_utils.py), in the spirit of diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py, but with the block indices computed from
the model's own layer counts instead of SD1.5's four blocks, so tiny test models convert too. It is
strict: every parameter must map to exactly one LDM key, so a layout it does not understand fails
here instead of loading as silently missing weights later.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D part -> LDM ResBlock part (UNet).
UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}

UNET_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text and size embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# diffusers VAE mid-block Attention part -> LDM AttnBlock part. LDM's q/k/v/proj_out are 1x1 convs.
VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
VAE_CONV_ATTENTION_PARTS = (".q", ".k", ".v", ".proj_out")

VAE_TOP_LEVEL = {
    "conv_in": "conv_in",
    "conv_out": "conv_out",
    "conv_norm_out": "norm_out",
}


def unet_to_ldm(
    state_dict: dict[str, torch.Tensor], layers_per_block: int
) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel parameters -> LDM `openaimodel.UNetModel` names (no prefix).

    LDM numbers input blocks flat: 0 is conv_in, then per down block `layers_per_block` (resnet,
    attention) pairs and one downsampler (none after the last block). Output blocks hold
    `layers_per_block + 1` (resnet, attention) pairs per up block; the upsampler sits in the last
    pair's slot 2 when the block has attentions, else in slot 1.
    """
    if not isinstance(layers_per_block, int):
        raise ValueError(f"layers_per_block must be an int, got {layers_per_block!r}")
    stride = layers_per_block + 1
    up_blocks_with_attention = {
        int(m.group(1)) for k in state_dict if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))
    }

    def resnet(rest: str) -> str:
        part, _, tail = rest.partition(".")
        if part not in UNET_RESNET_PARTS:
            raise KeyError(part)
        return f"{UNET_RESNET_PARTS[part]}.{tail}"

    def convert(key: str) -> str:
        name, _, param = key.rpartition(".")
        if name in UNET_TOP_LEVEL:
            return f"{UNET_TOP_LEVEL[name]}.{param}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = int(m[1]), int(m[2]), m[3]
            return f"input_blocks.{1 + block * stride + layer}.0.{resnet(rest)}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            block, layer, rest = int(m[1]), int(m[2]), m[3]
            return f"input_blocks.{1 + block * stride + layer}.1.{rest}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            return f"input_blocks.{(int(m[1]) + 1) * stride}.0.op.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            return f"middle_block.1.{m[1]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = int(m[1]), int(m[2]), m[3]
            return f"output_blocks.{block * stride + layer}.0.{resnet(rest)}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            block, layer, rest = int(m[1]), int(m[2]), m[3]
            return f"output_blocks.{block * stride + layer}.1.{rest}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            slot = 2 if block in up_blocks_with_attention else 1
            return f"output_blocks.{block * stride + layers_per_block}.{slot}.conv.{m[2]}"
        raise KeyError(key)

    return _rename_all(state_dict, convert, "UNet")


def vae_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AutoencoderKL parameters -> LDM `AutoencoderKL` names (no prefix).

    LDM numbers the decoder's up blocks from the lowest resolution's opposite end (diffusers'
    up_blocks.0 is LDM's up.{N-1}); its mid-block attention uses 1x1 convolutions, so the linear
    q/k/v/out weights gain two trailing unit dimensions.
    """
    num_up_blocks = 1 + max(
        int(m.group(1)) for k in state_dict if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))
    )

    def resnet(rest: str) -> str:
        return re.sub(r"^conv_shortcut\.", "nin_shortcut.", rest)

    def convert(key: str) -> str:
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            return key
        coder, _, inner = key.partition(".")
        if coder not in ("encoder", "decoder"):
            raise KeyError(key)
        name, _, param = inner.rpartition(".")
        if name in VAE_TOP_LEVEL:
            return f"{coder}.{VAE_TOP_LEVEL[name]}.{param}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", inner):
            return f"{coder}.down.{m[1]}.block.{m[2]}.{resnet(m[3])}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", inner):
            return f"{coder}.down.{m[1]}.downsample.conv.{m[2]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", inner):
            return f"{coder}.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}.{resnet(m[3])}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", inner):
            return f"{coder}.up.{num_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", inner):
            return f"{coder}.mid.block_{int(m[1]) + 1}.{resnet(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", inner):
            return f"{coder}.mid.attn_1.{VAE_ATTENTION_PARTS[m[1]]}.{m[2]}"
        raise KeyError(key)

    converted = _rename_all(state_dict, convert, "VAE")
    for key, value in converted.items():
        layer, _, param = key.rpartition(".")
        if ".mid.attn_1." in key and param == "weight" and layer.endswith(VAE_CONV_ATTENTION_PARTS):
            converted[key] = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv
    return converted


def clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel parameters -> the names under LDM's `FrozenCLIPEmbedder.transformer`.

    LDM stores the transformers model as is, so its names are transformers' with the `text_model.`
    wrapper that transformers 5.6+ no longer has on CLIPTextModel (diffusers strips it when loading).
    """
    return {
        key if key.startswith("text_model.") else f"text_model.{key}": value
        for key, value in state_dict.items()
    }


# SDXL (generative-models' layout): its two text encoders are the conditioner's embedders.
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# transformers' CLIP layer part -> OpenCLIP's (q/k/v are one in_proj there).
OPEN_CLIP_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
OPEN_CLIP_TOP_LEVEL = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection parameters -> OpenCLIP's text tower names (SDXL's second text
    encoder): q/k/v concatenated into `attn.in_proj_*`, the projection transposed."""
    converted: dict[str, torch.Tensor] = {}
    in_proj: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key in OPEN_CLIP_TOP_LEVEL:
            converted[OPEN_CLIP_TOP_LEVEL[key]] = value
        elif key == "text_projection.weight":
            converted["text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(
            r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(\w+)", key
        ):
            in_proj.setdefault(f"transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2]] = (
                value
            )
        elif m := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            if m[2] not in OPEN_CLIP_LAYER_PARTS:
                raise ValueError(f"text encoder parameter {key!r} has no known OpenCLIP name")
            converted[f"transformer.resblocks.{m[1]}.{OPEN_CLIP_LAYER_PARTS[m[2]]}.{m[3]}"] = value
        else:
            raise ValueError(f"text encoder parameter {key!r} has no known OpenCLIP name")
    for key, parts in in_proj.items():
        converted[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return converted


def sdxl_state_dict(pipe) -> dict[str, torch.Tensor]:
    """An SDXL pipeline's UNet, VAE and both text encoders as one generative-models single file."""
    parts = {
        UNET_PREFIX: unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config.layers_per_block),
        VAE_PREFIX: vae_to_ldm(pipe.vae.state_dict()),
        SDXL_CLIP_PREFIX: clip_to_ldm(pipe.text_encoder.state_dict()),
        SDXL_OPEN_CLIP_PREFIX: open_clip_to_ldm(pipe.text_encoder_2.state_dict()),
    }
    return {
        prefix + key: value.detach().to("cpu").contiguous()
        for prefix, state in parts.items()
        for key, value in state.items()
    }


def save_sdxl_checkpoint(pipe, path: str | Path) -> Path:
    """Write an SDXL pipeline as the single .safetensors file A1111 and ComfyUI load."""
    return _save(sdxl_state_dict(pipe), Path(path), ".ckpt", lambda state: {"state_dict": state})


CONTROLNET_PREFIX = "control_model."


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """A diffusers ControlNetModel as the original ControlNet 1.1 single file (`control_model.*`).

    The encoder copy is named like the UNet's input and middle blocks; the condition encoder is
    `input_hint_block` (convolutions at even indices, SiLU between), the zero convolutions are
    `zero_convs.i.0` and `middle_block_out.0`.
    """
    state_dict = controlnet.state_dict()
    blocks = len(controlnet.controlnet_cond_embedding.blocks)
    extra: dict[str, torch.Tensor] = {}
    encoder: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name, _, param = key.rpartition(".")
        if name == "controlnet_cond_embedding.conv_in":
            extra[f"input_hint_block.0.{param}"] = value
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", name):
            extra[f"input_hint_block.{2 * (int(m[1]) + 1)}.{param}"] = value
        elif name == "controlnet_cond_embedding.conv_out":
            extra[f"input_hint_block.{2 * (blocks + 1)}.{param}"] = value
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", name):
            extra[f"zero_convs.{m[1]}.0.{param}"] = value
        elif name == "controlnet_mid_block":
            extra[f"middle_block_out.0.{param}"] = value
        else:
            encoder[key] = value
    converted = {**unet_to_ldm(encoder, controlnet.config.layers_per_block), **extra}
    return {
        CONTROLNET_PREFIX + key: value.detach().to("cpu").contiguous()
        for key, value in converted.items()
    }


def save_ldm_controlnet(controlnet, path: str | Path) -> Path:
    """Write `controlnet` as an original single-file ControlNet (.safetensors or .pth)."""
    # The ControlNet 1.1 .pth files hold the bare state dict.
    return _save(controlnet_to_ldm(controlnet), Path(path), ".pth", lambda state: state)


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The pipeline's UNet, VAE and text encoder as one LDM/CompVis-layout state dict."""
    layers_per_block = pipe.unet.config.layers_per_block
    parts = {
        UNET_PREFIX: unet_to_ldm(pipe.unet.state_dict(), layers_per_block),
        VAE_PREFIX: vae_to_ldm(pipe.vae.state_dict()),
        CLIP_PREFIX: clip_to_ldm(pipe.text_encoder.state_dict()),
    }
    return {
        prefix + key: value.detach().to("cpu").contiguous()
        for prefix, state in parts.items()
        for key, value in state.items()
    }


def save_ldm_checkpoint(pipe, path: str | Path) -> Path:
    """Write `pipe` as an original-layout single-file checkpoint at `path`.

    `.safetensors` (the usual format), or `.ckpt`: a pickled `{"state_dict": ...}` as the original
    training code wrote it.
    """
    return _save(ldm_state_dict(pipe), Path(path), ".ckpt", lambda state: {"state_dict": state})


def _save(state_dict, path: Path, pickled_suffix: str, wrap) -> Path:
    """`state_dict` as .safetensors, or pickled as `wrap(state_dict)` under `pickled_suffix`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, str(path))
    elif path.suffix == pickled_suffix:
        torch.save(wrap(state_dict), path)
    else:
        raise ValueError(f"path must end with .safetensors or {pickled_suffix}, got {path.name!r}")
    return path


def _rename_all(state_dict, convert, what: str) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        try:
            new_key = convert(key)
        except KeyError:
            raise ValueError(f"{what} parameter {key!r} has no known LDM name") from None
        if new_key in converted:
            raise ValueError(f"{what} parameters collide on LDM name {new_key!r}")
        converted[new_key] = value
    return converted
