"""Build the toy SD1.5-shaped components from the real diffusers/transformers classes.

The toy model is the same kind of object as Stable Diffusion 1.5 (CLIPTextModel with a CLIPTokenizer,
UNet2DConditionModel, UniPC scheduler, ControlNetModel.from_unet, and AutoencoderTiny, the TAESD
autoencoder class people already swap into SD1.5 pipelines), only small, so the app's pipeline code
runs it unchanged. The tokenizer is byte-level (any prompt tokenizes) plus BPE
merges that make every caption word of the synthetic data a single token.
"""

from __future__ import annotations

import json
import pathlib

import torch
from diffusers import (
    AutoencoderTiny,
    ControlNetModel,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from controlnet_core.toy.data import CAPTION_WORDS

TEXT_HIDDEN = 64
MAX_TOKENS = 77
# DDPM's linear noise schedule, not SD1.5's scaled_linear one (beta 0.00085-0.012). At 16×16
# latents the SD1.5 schedule leaves the image's mean colour visible at t=999 (averaging 256 cells
# lifts its SNR to ~1), so a model trained on it takes background and shape colours from the
# starting noise instead of the prompt. With beta_end=0.02 that SNR falls to ~0.01 and colours
# follow the text.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _bpe(word: tuple[str, ...], ranks: dict[tuple[str, str], int]) -> tuple[str, ...]:
    """CLIP's BPE loop (lowest-rank pair first), used to check the merges we write."""
    while len(word) > 1:
        pairs = [
            (ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(word, word[1:], strict=False))
        ]
        rank, _ = min(pairs)
        if rank == 1 << 30:
            break
        first, second = min(zip(word, word[1:], strict=False), key=lambda p: ranks.get(p, 1 << 30))
        merged: list[str] = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return word


def write_tokenizer_files(folder: pathlib.Path, words: list[str] | None = None) -> None:
    """Write vocab.json + merges.txt: 256 byte tokens (plain and with ``</w>``) + one token per word.

    Merges are added until CLIP's BPE turns each word into one token, so caption words map to single
    embeddings while unknown words still fall back to bytes instead of failing.
    """
    words = sorted(set(words or CAPTION_WORDS))
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = (
        ["<|startoftext|>", "<|endoftext|>"] + byte_chars + [c + "</w>" for c in byte_chars]
    )
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _round in range(50):
        changed = False
        for w in words:
            symbols = tuple(w[:-1]) + (w[-1] + "</w>",)
            seg = _bpe(symbols, ranks)
            if len(seg) > 1:
                pair = (seg[0], seg[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
        if not changed:
            break
    else:
        raise RuntimeError("could not find BPE merges that make every caption word one token")
    known = set(vocab_list)
    for a, b in merges:
        if a + b not in known:
            vocab_list.append(a + b)
            known.add(a + b)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(vocab_list)}, ensure_ascii=False)
    )
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_tokenizer(folder: pathlib.Path) -> CLIPTokenizer:
    """Write the toy tokenizer files into ``folder`` and load them as a CLIPTokenizer."""
    write_tokenizer_files(folder)
    # The direct constructor ignores vocab/merges files on transformers 5; from_pretrained reads them.
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def build_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 4,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def build_vae() -> AutoencoderTiny:
    """×4 down-sampling autoencoder: 64×64×3 images <-> 16×16×4 latents (TAESD's architecture).

    Not AutoencoderKL: its group norms normalise each image's features by that image's statistics,
    so a tiny one codes a shape's colour relative to its background (the previous toy VAE decoded
    red, orange and yellow squares on gray all as orange). With the same losses and 700 steps a KL
    autoencoder round-tripped 43 % of held-out shape colours, this norm-free one 81 %, at half the
    cost per step; after its 2500 steps, 100 %.
    """
    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(32, 32, 32),
        decoder_block_out_channels=(32, 32, 32),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
        latent_channels=4,
        scaling_factor=1.0,
    )


def build_unet() -> UNet2DConditionModel:
    """UNet on 16×16×4 latents with cross-attention to the 64-wide text embeddings.

    Attention only at 8×8 and in the middle block: at 16×16 it tripled the CPU cost per step.
    """
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(48, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_controlnet(unet: UNet2DConditionModel, attention_16: bool = False) -> ControlNetModel:
    """Trainable copy of the UNet encoder joined by zero convolutions (the paper's construction).

    Two stride-2 convolutions in the conditioning embedding bring 64-px maps to the 16-px latents.
    ``attention_16`` gives the copy's 16×16 block cross-attention too (new, randomly initialised
    layers; every other weight is copied from the UNet): there the copy can see which outline is
    which shape and tie each one to its words in the prompt.
    """
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))
    if not attention_16:
        return net
    config = dict(net.config)
    config["down_block_types"] = ("CrossAttnDownBlock2D",) + tuple(config["down_block_types"][1:])
    wide = ControlNetModel.from_config(config)
    missing, unexpected = wide.load_state_dict(net.state_dict(), strict=False)
    if unexpected or any(not key.startswith("down_blocks.0.attentions.") for key in missing):
        raise RuntimeError(f"ControlNet copy mismatch: {missing=} {unexpected=}")
    return wide


def train_scheduler(schedule: dict | None = None) -> DDPMScheduler:
    return DDPMScheduler(**(schedule or SCHEDULE), clip_sample=False)


def sample_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(**SCHEDULE)


def assemble_pipeline(vae, text_encoder, tokenizer, unet) -> StableDiffusionPipeline:
    """Put trained components into an SD1.5-shaped pipeline (UniPC, no safety checker)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
