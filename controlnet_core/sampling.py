"""One batched denoising loop for every generation: single images, batches, comparisons, sweeps.

A call renders several *variants* in one pass. Each variant has its own seed and its own per-ControlNet
(strength, start, end); they share the prompt, the sampler and the control images. The UNet runs once
per step on all variants together; each ControlNet runs only on the variants for which it is active at
that step (a plain-SD variant, strength 0 or outside its start/end window, skips it entirely). The math
is that of diffusers' `StableDiffusionControlNetPipeline`, so a variant equals the image that pipeline
(or `StableDiffusionPipeline`, for a plain variant) gives for the same seed and settings.

Control modes follow the sd-webui-controlnet extension: "balanced" is the plain pipeline;
"prompt" ("My prompt is more important") scales the ControlNet's residuals per block by
0.825^(N-1-i), from 0.825^12 ≈ 0.1 at the shallowest SD1.5 block to 1 at the middle block;
"controlnet" ("ControlNet is more important") uses the same soft weights and applies the ControlNet to
the conditional half of classifier-free guidance only, so CFG amplifies the control.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from controlnet_core.compiled import Compiled, eager
from controlnet_core.errors import shown
from controlnet_core.inside import ResidualProbe
from controlnet_core.offload import Offloader
from controlnet_core.request import CONTROL_MODES
from controlnet_core.timeline import LivePreview, Timeline

SOFT_WEIGHT_BASE = 0.825
_ENCODE_LOCK = threading.Lock()

StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class UnitSettings:
    """How strongly, and during which fraction of the steps, one ControlNet acts."""

    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


@dataclass(frozen=True)
class Variant:
    """One image of the batch: its seed and one `UnitSettings` per ControlNet."""

    seed: int
    units: tuple[UnitSettings, ...]


@dataclass(frozen=True)
class ControlUnit:
    """A ControlNet and its control map (already at the output size).

    `control_type`: for a union ControlNet (diffusers' `ControlNetUnionModel`), which kind of map
    this is (see `modalities.UNION_CONTROL_TYPES`). Units that share one union model run as one
    call that reads all their maps, as diffusers' union pipeline runs several control images.
    """

    model: torch.nn.Module
    image: Image.Image
    control_type: int | None = None

    def __post_init__(self) -> None:
        if (self.control_type is None) == is_union(self.model):
            raise ValueError("a union ControlNet needs a control_type, and only a union one")


def is_union(model) -> bool:
    """Whether `model` is a union ControlNet (one model for several kinds of map), compiled or
    not; by its class: a union model's config loaded into a plain ControlNet still names its
    control types."""
    from diffusers import ControlNetUnionModel

    return isinstance(eager(model), ControlNetUnionModel)


def control_keep(step: int, total: int, start: float, end: float) -> float:
    """1.0 when the ControlNet acts at `step` of `total`, as diffusers decides it, else 0.0."""
    return 1.0 - float(step / total < start or (step + 1) / total > end)


def soft_weights(count: int) -> list[float]:
    """Per-residual weights of the soft control modes: 0.825^(count-1-i), 1 for the middle block."""
    return [SOFT_WEIGHT_BASE ** float(count - 1 - i) for i in range(count)]


def _accepts(function: Callable, name: str) -> bool:
    return name in inspect.signature(function).parameters


@torch.inference_mode()
def sample(
    pipe,
    units: Sequence[ControlUnit],
    variants: Sequence[Variant],
    *,
    prompt: str,
    negative_prompt: str = "",
    steps: int = 20,
    guidance_scale: float = 7.5,
    width: int,
    height: int,
    scheduler_factory: Callable[[], object],
    guess_mode: bool = False,
    control_mode: str = "balanced",
    on_step: StepCallback | None = None,
    probe: ResidualProbe | None = None,
    timeline: Timeline | None = None,
    preview: LivePreview | None = None,
    offload: Offloader | None = None,
) -> tuple[np.ndarray, list[bool]]:
    """Denoise all `variants` in one batched pass; float images in [0, 1] (B, H, W, 3) + NSFW flags.

    `pipe` is an SD1.5 or SDXL pipeline object (its unet, vae, text encoder(s) and image processors
    are used; SDXL's added conditions are made as its diffusers pipelines make them).
    A `probe` records what the ControlNets add inside the UNet for one variant (see `inside`); a
    `timeline` the predicted final latents of every variant at a few steps, a `preview` shows them
    while the run goes on (see `timeline`). With an `offload`, the models wait in CPU memory and
    each stage (text encoding, denoising, decoding) moves its own to the device (see `offload`).
    """
    if control_mode not in CONTROL_MODES:
        raise ValueError(
            f"control_mode must be one of {list(CONTROL_MODES)}; got {shown(control_mode)}"
        )
    if not variants:
        raise ValueError("variants must hold at least one variant")
    for variant in variants:
        if len(variant.units) != len(units):
            raise ValueError("every variant needs one UnitSettings per ControlNet")
    unet = pipe.unet
    device = offload.device if offload is not None else unet.device
    batch = len(variants)
    do_cfg = guidance_scale > 1.0 and unet.config.time_cond_proj_dim is None
    if units:
        # Shuffle-type ControlNets pool their conditions globally and always run as in guess mode.
        guess_mode = guess_mode or bool(
            getattr(units[0].model.config, "global_pool_conditions", False)
        )
    cond_only = do_cfg and (guess_mode or control_mode == "controlnet")

    _stage(offload, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
    text, added = _encode(pipe, prompt, negative_prompt, batch, do_cfg, width, height, device)
    _stage(offload, unet, *(unit.model for unit in units))

    control_images = [
        _prepare_control_image(pipe, unit.image, width, height, device, unit.model.dtype)
        for unit in units
    ]

    schedulers, latents, step_kwargs = _start_variants(
        pipe, variants, scheduler_factory, steps, width, height, device
    )
    timesteps = schedulers[0].timesteps

    total = len(timesteps)
    for index, t in enumerate(timesteps):
        scaled = torch.cat(
            [s.scale_model_input(latents[b : b + 1], t) for b, s in enumerate(schedulers)]
        )
        model_input = torch.cat([scaled, scaled]) if do_cfg else scaled
        down, mid = _control_residuals(
            units,
            control_images,
            variants,
            scaled,
            text,
            added,
            t,
            index,
            total,
            do_cfg=do_cfg,
            cond_only=cond_only,
            guess_mode=guess_mode,
            soft=control_mode != "balanced",
        )
        watched = probe is not None and probe.wants(index, total)
        row = (batch if do_cfg else 0) + (probe.variant if probe is not None else 0)
        # A watched step runs the model itself: hooks and compiled graphs do not mix.
        call = eager(unet) if watched else unet
        with probe.watching(call, row, watched) if watched else nullcontext():
            noise = call(
                model_input,
                t,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        if watched:
            probe.record(index, row, down, mid)
        if do_cfg:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        if timeline is not None and timeline.wants(index, total):
            timeline.record(index, scaled, noise, schedulers[0], t)
        if preview is not None and preview.wants(index, total):
            preview.record(index, total, scaled, noise, schedulers[0], t)
        latents = _step_variants(schedulers, noise, t, latents, step_kwargs)
        if on_step is not None:
            on_step(index, total)

    _stage(offload, pipe.vae, getattr(pipe, "safety_checker", None))
    return _decode(pipe, latents, text.dtype)


def _stage(offload: Offloader | None, *models) -> None:
    """With an `offload`, move the next stage's `models` onto the device (see `offload`)."""
    if offload is not None:
        offload.use(*models)


def _step_variants(schedulers, noise, t, latents, step_kwargs) -> torch.Tensor:
    """Each variant's latents one step on, by its own scheduler (its own state and generator)."""
    return torch.cat(
        [
            s.step(noise[b : b + 1], t, latents[b : b + 1], **step_kwargs[b], return_dict=False)[0]
            for b, s in enumerate(schedulers)
        ]
    )


def is_sdxl(unet) -> bool:
    """Whether `unet` is SDXL-shaped: it takes pooled text embeddings and size ids ("text_time")."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def _encode(
    pipe, prompt: str, negative_prompt: str, batch: int, do_cfg: bool, width, height, device
):
    """The text conditioning of every UNet row: the token embeddings (negative rows first when
    guidance is on) and, for SDXL, its added conditions (pooled text embeddings and the size/crop
    ids: original and target size the output's, no crop), as diffusers' SDXL pipelines make them."""
    # Requests share the base pipeline, and its tokenizer is not safe to call from two threads at
    # once (two concurrent runs gave one of them another prompt's embedding about 1 time in 4).
    with _ENCODE_LOCK:
        encoded = pipe.encode_prompt(
            prompt,
            device=device,
            num_images_per_prompt=batch,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=negative_prompt or None,
        )
    if not is_sdxl(pipe.unet):
        prompt_embeds, negative_embeds = encoded
        return (torch.cat([negative_embeds, prompt_embeds]) if do_cfg else prompt_embeds), None
    prompt_embeds, negative_embeds, pooled, negative_pooled = encoded
    # (original height, width, crop top, left, target height, width), as diffusers'
    # `_get_add_time_ids` lists them (made here: that reads the UNet's layers, which a compiled
    # UNet does not expose).
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=prompt_embeds.dtype)
    time_ids = time_ids.to(device)
    if do_cfg:
        prompt_embeds = torch.cat([negative_embeds, prompt_embeds])
        pooled = torch.cat([negative_pooled, pooled])
    return prompt_embeds, {"text_embeds": pooled, "time_ids": time_ids.repeat(len(pooled), 1)}


def _decode(pipe, latents: torch.Tensor, dtype: torch.dtype) -> tuple[np.ndarray, list[bool]]:
    """The final latents through the full VAE (and the safety checker, when the pipe has one)."""
    vae = pipe.vae
    if is_sdxl(pipe.unet) and vae.dtype == torch.float16 and vae.config.force_upcast:
        # SDXL's VAE overflows in float16 (models.keep_vae_float32 keeps it in float32, unless
        # it is one fine-tuned for float16); diffusers upcasts it around the decode, which would
        # change a VAE others share.
        raise ValueError("SDXL's VAE overflows in float16: keep it in float32 (or bfloat16)")
    # The VAE may run in another dtype than the UNet (SDXL's stays float32 where float16 overflows).
    latents = latents.to(vae.dtype)
    decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    nsfw: list[bool] = [False] * len(latents)
    if getattr(pipe, "safety_checker", None) is not None:
        decoded, flags = pipe.run_safety_checker(decoded, latents.device, dtype)
        nsfw = [bool(f) for f in (flags or nsfw)]
    # As diffusers does: a blocked image (zeroed by the checker) stays black, not mid-grey.
    images = pipe.image_processor.postprocess(
        decoded, output_type="np", do_denormalize=[not flag for flag in nsfw]
    )
    return np.asarray(images, dtype=np.float32), nsfw


def _start_variants(pipe, variants, scheduler_factory, steps: int, width: int, height: int, device):
    """Each variant's own scheduler, its initial noise (from its seed, on a CPU generator) and the
    keyword arguments its scheduler's `step` takes (its generator, eta 0 where accepted)."""
    unet = pipe.unet
    schedulers = [scheduler_factory() for _ in variants]
    for scheduler in schedulers:
        scheduler.set_timesteps(steps, device=device)
    generators = [torch.Generator().manual_seed(v.seed) for v in variants]
    latent_shape = (
        1,
        unet.config.in_channels,
        height // pipe.vae_scale_factor,
        width // pipe.vae_scale_factor,
    )
    latents = torch.cat(
        [
            _randn(latent_shape, g, device, unet.dtype) * s.init_noise_sigma
            for g, s in zip(generators, schedulers, strict=True)
        ]
    )
    step_kwargs = [
        {"generator": g} if _accepts(s.step, "generator") else {}
        for g, s in zip(generators, schedulers, strict=True)
    ]
    if _accepts(schedulers[0].step, "eta"):
        for kwargs in step_kwargs:
            kwargs["eta"] = 0.0
    return schedulers, latents, step_kwargs


def _randn(
    shape, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Noise is drawn on the CPU generator and moved, so a seed gives the same image on every device.
    return torch.randn(shape, generator=generator, device="cpu", dtype=dtype).to(device)


def _prepare_control_image(pipe, image, width, height, device, dtype) -> torch.Tensor:
    processor = getattr(pipe, "control_image_processor", None)
    if processor is None:
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(
            vae_scale_factor=pipe.vae_scale_factor, do_convert_rgb=True, do_normalize=False
        )
    tensor = processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
    return tensor.to(device=device, dtype=dtype)


def _control_calls(units: Sequence[ControlUnit]) -> list[list[int]]:
    """The units' indices grouped into ControlNet calls: one per unit, except that the units of one
    union model make one call together (it fuses their maps before its encoder)."""
    calls: list[list[int]] = []
    union_call: dict[int, list[int]] = {}
    for k, unit in enumerate(units):
        if unit.control_type is None:
            calls.append([k])
        elif id(unit.model) in union_call:
            union_call[id(unit.model)].append(k)
        else:
            union_call[id(unit.model)] = [k]
            calls.append(union_call[id(unit.model)])
    return calls


def _control_residuals(
    units: Sequence[ControlUnit],
    control_images: Sequence[torch.Tensor],
    variants: Sequence[Variant],
    scaled: torch.Tensor,
    text: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
    t,
    index: int,
    total: int,
    *,
    do_cfg: bool,
    cond_only: bool,
    guess_mode: bool,
    soft: bool,
):
    """Summed ControlNet residuals for the UNet batch, or (None, None) when no ControlNet acts.

    A ControlNet's residuals are linear in its strength, so one call serves variants of different
    strengths, each row scaled after. A union model reading several maps is not: it weighs each
    map inside by its strength (as diffusers' union pipeline does), so it runs once per distinct
    set of strengths. A variant whose every strength is 0 at this step skips the call (diffusers'
    union pipeline would still add the model's output for the latents alone).
    """
    batch = len(variants)
    rows = 2 * batch if do_cfg else batch
    summed: list[torch.Tensor] | None = None  # the down residuals, then the mid one
    for call in _control_calls(units):
        groups, after = _strength_groups(call, variants, index, total)
        for inside, active in groups.items():
            if do_cfg and not cond_only:
                target_rows = active + [batch + b for b in active]
            elif do_cfg:
                target_rows = [batch + b for b in active]
            else:
                target_rows = active
            down, mid = _call_controlnet(
                [units[k] for k in call],
                [control_images[k] for k in call],
                list(inside),
                scaled[[r % batch for r in target_rows]],
                text[target_rows],
                {name: value[target_rows] for name, value in added.items()} if added else None,
                t,
                guess_mode,
            )
            factor = torch.tensor(
                [after[r % batch] for r in target_rows], device=mid.device, dtype=mid.dtype
            ).view(-1, 1, 1, 1)
            weights = soft_weights(len(down) + 1) if soft else [1.0] * (len(down) + 1)
            placed = []
            for residual, weight in zip([*down, mid], weights, strict=True):
                value = residual * factor if weight == 1.0 else residual * factor * weight
                full = residual.new_zeros((rows, *residual.shape[1:]))
                full[target_rows] = value
                placed.append(full)
            summed = (
                placed if summed is None else [a + b for a, b in zip(summed, placed, strict=True)]
            )
    if summed is None:
        return None, None
    return summed[:-1], summed[-1]


def _strength_groups(call: list[int], variants: Sequence[Variant], index: int, total: int):
    """({strengths passed into the call: the variants run with them}, each variant's factor for
    the call's output) for the units `call` at step `index`: variants whose every strength is 0
    (or whose window is closed) run no call. One unit's output is linear in its strength, so one
    call at strength 1 serves every variant, scaled after; a union model reading several maps
    weighs them inside, so each distinct set of strengths is a call of its own."""
    strengths = [
        tuple(
            v.units[k].conditioning_scale
            * control_keep(index, total, v.units[k].guidance_start, v.units[k].guidance_end)
            for k in call
        )
        for v in variants
    ]
    if len(call) == 1:
        active = [b for b, s in enumerate(strengths) if s[0] != 0.0]
        return ({(1.0,): active} if active else {}), [s[0] for s in strengths]
    groups: dict[tuple[float, ...], list[int]] = {}
    for b, s in enumerate(strengths):
        if any(s):
            groups.setdefault(s, []).append(b)
    return groups, [1.0] * len(variants)


def _call_controlnet(units, images, strengths, sample_in, embeds, added, t, guess_mode):
    """One ControlNet call on the rows given; a union model reads all `images`, each weighed by
    its strength inside (with one map it scales its output, and strength 1 is passed)."""
    model = units[0].model
    rows = len(sample_in)
    extra: dict = {}
    if units[0].control_type is not None:
        types: list = [unit.control_type for unit in units]
        control_type = torch.zeros(model.config.num_control_type, dtype=embeds.dtype)
        control_type[types] = 1
        scale: object = list(strengths) if len(units) > 1 else 1.0
        if isinstance(model, Compiled):
            # As tensors, a compiled graph takes them as inputs: as Python numbers it would be
            # specialised on each control type and strength, compiling anew for every one. A type
            # is a 1-element index, not a 0-d one: the model indexes its task embeddings with it,
            # and a 0-d index is read back as a number, which Inductor cannot compile (it then
            # falls back to compiling the model piecewise, again at every image size).
            types = [torch.tensor([number], device=embeds.device) for number in types]
            if len(units) > 1:
                scale = [torch.tensor(value, device=embeds.device) for value in strengths]
        extra = {
            "control_type": control_type.to(embeds.device).expand(rows, -1),
            "control_type_idx": types,
        }
        cond: object = [image.expand(rows, -1, -1, -1) for image in images]
    else:
        cond = images[0].expand(rows, -1, -1, -1)
        scale = 1.0
    return model(
        sample_in,
        t,
        encoder_hidden_states=embeds,
        controlnet_cond=cond,
        conditioning_scale=scale,
        guess_mode=guess_mode,
        added_cond_kwargs=added,
        return_dict=False,
        **extra,
    )
