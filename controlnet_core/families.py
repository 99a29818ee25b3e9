"""Base-model families: which Stable Diffusion a model belongs to, read from its config or its
checkpoint's keys, never from its name.

A ControlNet only works with the family it was trained for: an SD1.5 ControlNet's cross-attention
reads 768-wide text embeddings, an SDXL one 2048-wide ones plus pooled embeddings and size
conditions. Mixing them ends deep in the UNet in "mat1 and mat2 shapes cannot be multiplied";
`check_controlnet_family` refuses the pair up front instead, naming both models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SD15 = "sd15"
SDXL = "sdxl"
SD2 = "sd2"
UNKNOWN = "unknown"

FAMILY_LABELS = {
    SD15: "Stable Diffusion 1.x",
    SD2: "Stable Diffusion 2.x",
    SDXL: "SDXL",
    UNKNOWN: "an unrecognised family",
}

# The families the app runs (an unrecognised one, such as the tiny test models', runs as SD1.x).
SUPPORTED_FAMILIES = (SD15, SDXL)

# Keys only a family's original (single-file) checkpoints have.
_SDXL_KEY = "conditioner.embedders.1."
_SD2_KEY = "cond_stage_model.model."


class ModelFamilyError(ValueError):
    """A base model of a family this app does not run, or a ControlNet of another family than the
    base model's. The message names the model(s), their families and what to do."""


def family_of_config(config: Mapping[str, Any]) -> str:
    """The family of a UNet's or a ControlNet's config: SDXL's carry size and pooled-text
    conditions ("text_time"), SD1.x's cross-attention reads 768-wide text, SD2's 1024-wide."""
    if config.get("addition_embed_type") == "text_time":
        return SDXL
    width = config.get("cross_attention_dim")
    if isinstance(width, (list, tuple)):
        width = width[0] if width else None
    return {768: SD15, 1024: SD2}.get(width, UNKNOWN)


def family_of_checkpoint_keys(keys: set[str] | list[str]) -> str:
    """The family of an original single-file checkpoint (A1111/ComfyUI layout) from its keys."""
    if any(key.startswith(_SDXL_KEY) for key in keys):
        return SDXL
    if any(key.startswith(_SD2_KEY) for key in keys):
        return SD2
    if any(key.startswith("model.diffusion_model.") for key in keys):
        return SD15
    return UNKNOWN


def base_family(source: str) -> str | None:
    """The family of a base model given as a local folder, a single file or a hub id in the hub
    cache, read without loading it; None when that cannot be told without downloading (a hub id not
    cached) or reading the whole file (a pickled .ckpt): the loader then finds out."""
    path = Path(source)
    if path.is_dir():
        return _family_of_config_file(path / "unet" / "config.json")
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="numpy") as checkpoint:
                    return family_of_checkpoint_keys(list(checkpoint.keys()))
            except Exception:  # not a readable checkpoint: the loader says what failed
                return None
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    try:
        cached = try_to_load_from_cache(source, "unet/config.json")
    except Exception:  # not a hub id either (a path that does not exist): the loader will say
        return None
    return _family_of_config_file(Path(cached)) if isinstance(cached, str) else None


def _family_of_config_file(path: Path) -> str | None:
    try:
        return family_of_config(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def check_base_family(source: str, family: str | None) -> None:
    """ModelFamilyError when `family` (of the base model `source`) is known and not run here
    (an unrecognised one, such as the tiny test models', is left to the loader)."""
    if family is None or family in (*SUPPORTED_FAMILIES, UNKNOWN):
        return
    name = Path(source).name if Path(source).exists() else source  # no server paths on a page
    raise ModelFamilyError(
        f"The base model '{name}' is {FAMILY_LABELS[family]}; this app runs Stable Diffusion "
        "1.x bases (SD1.5 and its fine-tunes) and SDXL. Point --base-model at one of those."
    )


def check_controlnet_family(
    controlnet_id: str, config: Mapping[str, Any], base_id: str, base: str = SD15
) -> None:
    """ModelFamilyError when the ControlNet `controlnet_id` (its `config`) is of another family
    than the base model `base_id` (of family `base`)."""
    family = family_of_config(config)
    if family in (UNKNOWN, base):
        return
    raise ModelFamilyError(
        f"The ControlNet '{controlnet_id}' is for {FAMILY_LABELS[family]}, but the base model "
        f"'{base_id}' is {FAMILY_LABELS[base]}: a ControlNet only works with the family it was "
        f"trained for. Use the {FAMILY_LABELS[base]} ControlNet of this modality."
    )


def running_family(family: str | None) -> str:
    """The family a base model runs as: SDXL, or SD1.x for everything else this app accepts."""
    return SDXL if family == SDXL else SD15
