"""Colour binding for the toy ControlNet: supervise the UNet decoder's cross-attention.

Under control, the toy model used to give each shape one of the prompt's colours at random: on
the noisy steps where colours are decided (t = 800), the UNet decoder's cross-attention at a
shape's cells picked that shape's own kind word ("star" in "a red star and a blue circle") over
the other shapes' kind words only about as often as chance, and the ControlNet did not change
that. The text encoder is causal, so the state at "star" already carries "red": attending to the
right kind word is what gives a shape its colour.

The training data knows every shape's area (the region maps), so the ControlNet stage adds a
small cross-entropy: in each latent cell that a shape covers, the decoder's attention over the
prompt's kind words should pick that shape's word. Its gradient reaches the ControlNet through
the residuals it adds to the decoder's inputs (and the unlocked decoder itself), so the
ControlNet learns to tell the decoder which outline is which shape. Nothing changes at inference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from controlnet_core.toy.data import REGION_COLORS, RESOLUTION, SHAPES


class AttentionProbsProcessor:
    """Cross-attention processor that also records its attention probabilities.

    The same computation as diffusers' ``AttnProcessor`` for the toy UNet's attention layers
    (3-d inputs, no norms, no mask, no residual); ``store[name]`` gets the probabilities as
    (batch, heads, queries, tokens), with their autograd graph.
    """

    def __init__(self, store: dict[str, torch.Tensor], name: str):
        self.store = store
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **_):
        if encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("AttentionProbsProcessor handles unmasked cross-attention on tokens")
        if attn.residual_connection:
            raise ValueError("AttentionProbsProcessor does not handle residual connections")
        batch, queries, _ = hidden_states.shape
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        self.store[self.name] = probs.view(batch, attn.heads, queries, -1)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def record_decoder_attention(unet) -> tuple[dict[str, torch.Tensor], dict]:
    """Make the UNet's up-block cross-attention layers record their probabilities.

    Returns ``(store, previous)``: ``store`` fills on every forward pass; pass ``previous`` to
    ``unet.set_attn_processor`` to undo.
    """
    previous = dict(unet.attn_processors)
    store: dict[str, torch.Tensor] = {}
    processors = {}
    for name, proc in previous.items():
        recorded = name.startswith("up_blocks.") and ".attn2." in name
        processors[name] = AttentionProbsProcessor(store, name) if recorded else proc
    if not any(isinstance(p, AttentionProbsProcessor) for p in processors.values()):
        raise ValueError("the UNet has no cross-attention in its up blocks")
    unet.set_attn_processor(processors)
    return store, previous


def kind_cells(regions: np.ndarray, size: int) -> np.ndarray:
    """Region maps (N, 64, 64, 3) -> (N, size * size) int8: the index in ``SHAPES`` of the kind
    that covers at least half of each cell of a ``size``×``size`` grid, or -1."""
    if regions.ndim != 4 or regions.shape[1:] != (RESOLUTION, RESOLUTION, 3):
        raise ValueError(
            f"expected region maps (N, {RESOLUTION}, {RESOLUTION}, 3), got {regions.shape}"
        )
    if RESOLUTION % size:
        raise ValueError(f"grid size {size} does not divide {RESOLUTION}")
    out = np.empty((len(regions), size * size), np.int8)
    f = RESOLUTION // size
    for start in range(0, len(regions), 512):
        chunk = regions[start : start + 512].astype(np.int16)
        cover = np.stack(
            [
                (np.abs(chunk - np.array(REGION_COLORS[kind], np.int16)).sum(-1) < 30)
                for kind in SHAPES
            ],
            1,
        ).astype(np.float32)
        cover = cover.reshape(len(chunk), len(SHAPES), size, f, size, f).mean((3, 5))
        best = np.where(cover.max(1) >= 0.5, cover.argmax(1), -1)
        out[start : start + len(chunk)] = best.reshape(len(chunk), -1)
    return out


def kind_word_positions(tokenizer, input_ids: torch.Tensor) -> torch.Tensor:
    """Token ids (N, T) -> (N, len(SHAPES)) long: where each kind word first occurs, or -1."""
    positions = torch.full((input_ids.shape[0], len(SHAPES)), -1, dtype=torch.long)
    for k, kind in enumerate(SHAPES):
        (token,) = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(kind))
        hit = input_ids == token
        has = hit.any(1)
        positions[has, k] = hit[has].float().argmax(1)
    return positions


def binding_loss(
    probs: torch.Tensor, kinds: torch.Tensor, positions: torch.Tensor, use: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Cross-entropy of each shape cell's attention over the prompt's kind words.

    ``probs`` (B, heads, Q, T) attention probabilities (averaged over heads here); ``kinds`` (B, Q)
    the kind index per cell (-1: background); ``positions`` (B, 4) kind-word positions (-1:
    absent); ``use`` (B,) bool, samples to supervise. Only cells whose kind the prompt names, in
    prompts that name two or more shapes, count. Returns (loss, accuracy); (0, nan) when no cell
    counts.
    """
    mean = probs.float().mean(1)
    batch, queries, _ = mean.shape
    present = positions >= 0
    gathered = mean.gather(2, positions.clamp(min=0).unsqueeze(1).expand(batch, queries, -1))
    logits = torch.log(gathered + 1e-6).masked_fill(~present.unsqueeze(1), -1e9)
    valid = (kinds >= 0) & use.unsqueeze(1) & (present.sum(1, keepdim=True) >= 2)
    valid &= present.gather(1, kinds.long().clamp(min=0))
    if not valid.any():
        return probs.sum() * 0.0, float("nan")
    target = kinds.long()[valid]
    picked = logits[valid]
    loss = F.cross_entropy(picked, target)
    accuracy = (picked.argmax(1) == target).float().mean().item()
    return loss, accuracy
