"""SDXL on tiny SDXL-shaped models built from configs: the batched sampler's added conditions
(pooled text embeddings, size ids) made as diffusers' SDXL pipelines make them, and an SDXL base
with its ControlNet loaded from local folders through the same code as real weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLControlNetUnionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from controlnet_core import Engine, GenerationRequest, Settings, get_modality
from controlnet_core.modalities import UNION_CONTROL_TYPES as UNION_TYPES
from controlnet_core.sampling import ControlUnit, UnitSettings, Variant, is_sdxl
from controlnet_core.tiny import (
    randomize_control_outputs,
    tiny_sdxl_pipeline,
    tiny_union_controlnet,
)
from tests.tiny_sdxl import NEGATIVE, PROMPT, SEED, SIZE, STEPS, run


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
    images = run(
        pipe,
        [ControlUnit(controlnet, control)],
        [Variant(SEED, (UnitSettings(0.0),)), Variant(SEED, (UnitSettings(1.0),))],
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
    units = [ControlUnit(controlnet, Image.fromarray(square_image))]

    def sweep_of(scales):  # soft weights, counted from the SDXL ControlNet's outputs
        variants = [Variant(SEED, (UnitSettings(scale),)) for scale in scales]
        return run(pipe, units, variants, control_mode="prompt")

    sweep = sweep_of([0.0, 0.5, 1.0])
    for index, scale in enumerate([0.0, 0.5, 1.0]):
        np.testing.assert_allclose(sweep[index], sweep_of([scale])[0], atol=1e-4)


@pytest.fixture(scope="module")
def saved_sdxl(tmp_path_factory, models):
    """The tiny SDXL pipeline and its canny ControlNet saved as a user keeps real ones."""
    pipe, controlnet = models
    root = tmp_path_factory.mktemp("sdxl")
    pipe.save_pretrained(root / "sdxl-base")
    controlnet.save_pretrained(root / "controlnets" / "controlnet-canny-sdxl-1.0")
    union = tiny_union_controlnet(pipe.unet, seed=3)
    union.save_pretrained(root / "controlnets" / "controlnet-union-sdxl-1.0")
    return root


def sdxl_engine(root, **overrides) -> Engine:
    """An engine on the saved tiny SDXL base and its ControlNets (`overrides`: other settings)."""
    settings = {
        "backend": "real",
        "base_model": str(root / "sdxl-base"),
        "controlnet_dir": str(root / "controlnets"),
        "device": "cpu",
        "dtype": "float32",
    }
    return Engine(Settings(**{**settings, **overrides}))


def request_for(modality: str, **fields) -> GenerationRequest:
    """A request on the saved SDXL weights: the upload is the map, STEPS steps at SIZE²."""
    options = {"preprocessor": "none", "prompt": PROMPT, "steps": STEPS, "resolution": SIZE}
    return GenerationRequest(modality=modality, **{**options, **fields})


def reference_image(root, pipeline, controlnet, *, scheduler=None, lora=None, vae=None, **call):
    """The image diffusers' own `pipeline` makes on the saved SDXL weights (seed 3, STEPS steps,
    SIZE², UniPC unless `scheduler`), with `lora` fused and `vae` in place when given."""
    from diffusers import UniPCMultistepScheduler

    extra = {"vae": vae} if vae is not None else {}
    reference = pipeline.from_pretrained(root / "sdxl-base", controlnet=controlnet, **extra)
    scheduler = scheduler or UniPCMultistepScheduler
    reference.scheduler = scheduler.from_config(reference.scheduler.config)
    if lora is not None:
        reference.load_lora_weights(str(lora))
        reference.fuse_lora(lora_scale=1.0)
    reference.set_progress_bar_config(disable=True)
    return reference(
        PROMPT,
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
        **call,
    ).images[0]


def canny_controlnet(root) -> ControlNetModel:
    return ControlNetModel.from_pretrained(root / "controlnets" / "controlnet-canny-sdxl-1.0")


def test_an_sdxl_base_runs_its_controlnet_as_diffusers_does(saved_sdxl, square_image):
    """`--base-model <SDXL folder>`: its family is read from its config before anything loads, the
    Canny tab loads the SDXL canny ControlNet (from --controlnet-dir, by its hub name), and the image
    equals diffusers' StableDiffusionXLControlNetPipeline on the same weights."""

    engine = sdxl_engine(saved_sdxl)
    assert engine.family == "sdxl" and engine.has_few_step()
    assert engine.has_controlnet("canny") and engine.has_controlnet("depth")
    assert engine.has_controlnet("scribble") and not engine.has_controlnet("shuffle")
    request = request_for("canny", seed=3)
    result = engine.generate(request, square_image)
    assert result.recipe["family"] == "sdxl"
    assert result.recipe["controlnet_model"] == "diffusers/controlnet-canny-sdxl-1.0"

    expected = reference_image(
        saved_sdxl,
        StableDiffusionXLControlNetPipeline,
        canny_controlnet(saved_sdxl),
        negative_prompt=request.negative_prompt or None,
        image=Image.fromarray(square_image),
        guidance_scale=request.guidance_scale,
    )
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3


def test_a_tab_without_an_sdxl_controlnet_says_which_have_one(saved_sdxl, square_image):
    from controlnet_core import WeightsUnavailableError
    from demos.texts import backend_note

    engine = sdxl_engine(saved_sdxl)
    note = backend_note(engine, "shuffle", hardware=False)
    assert "no SDXL ControlNet for Content shuffle. The closest is an IP-Adapter" in note
    assert "reads this map as its “thick line” type" in backend_note(engine, "scribble", False)
    with pytest.raises(WeightsUnavailableError) as caught:
        engine.generate(GenerationRequest(modality="shuffle", prompt=PROMPT), square_image)
    message = str(caught.value)
    assert "no SDXL ControlNet for Content shuffle" in message
    assert "Canny, Scribble, Sketch" in message and "Anime lineart." in message


def test_only_sdxl_keeps_its_vae_in_float32(models):
    """SDXL's VAE overflows in float16 and stays float32; SD1.5's stays as loaded (its config's
    force_upcast is diffusers' default, not a need)."""
    from controlnet_core.models import keep_vae_float32
    from controlnet_core.tiny import tiny_pipeline

    sd15 = tiny_pipeline()
    sd15.vae.to(torch.float16)
    assert sd15.vae.config.force_upcast
    keep_vae_float32(sd15, "sd15")
    assert sd15.vae.dtype == torch.float16
    sdxl = tiny_sdxl_pipeline()
    sdxl.vae.to(torch.float16)
    keep_vae_float32(sdxl, "sdxl")
    assert sdxl.vae.dtype == torch.float32


def test_a_recipe_from_the_other_family_is_refused_by_name(saved_sdxl, saved_models, square_image):
    """An SDXL run's recipe on an SD1.5 server, and the other way round: a clear message, not a
    resolution error or another image."""
    from controlnet_core import ModelFamilyError

    sdxl = sdxl_engine(saved_sdxl)
    request = GenerationRequest(modality="canny", prompt=PROMPT, steps=2, resolution=SIZE)
    recipe = sdxl.generate(request, square_image).recipe
    sdxl.check_recipe_family(recipe)  # its own: fine
    sd15 = Engine(Settings(backend="real", base_model=str(saved_models / "sd15")))
    with pytest.raises(ModelFamilyError, match="made with an SDXL base model; this server runs"):
        sd15.recipe_request(recipe)  # what every tab's and Combine's recipe load calls
    assert sdxl.recipe_request(recipe).resolution == SIZE
    with pytest.raises(
        ModelFamilyError, match="Stable Diffusion 1.x base model; this server runs SDXL"
    ):
        sdxl.check_recipe_family({**recipe, "family": "sd15"})
    Engine(Settings(backend="tiny")).check_recipe_family(recipe)  # offline backends: no claim


def test_guess_mode_gives_the_controlnet_its_conditional_rows_as_diffusers_does(
    models, square_image
):
    """Guess mode runs the ControlNet on the conditional half only: its added conditions are that
    half's rows (diffusers takes `.chunk(2)[1]`); the image equals diffusers' in guess mode."""
    pipe, controlnet = models
    control = Image.fromarray(square_image)
    images = run(
        pipe,
        [ControlUnit(controlnet, control)],
        [Variant(SEED, (UnitSettings(1.0),))],
        guess_mode=True,
    )
    controlled = StableDiffusionXLControlNetPipeline.from_pipe(pipe, controlnet=controlnet)
    controlled.set_progress_bar_config(disable=True)
    expected = controlled(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=control,
        num_inference_steps=STEPS,
        guidance_scale=7.5,  # SDXL's pipelines default to 5; the sampler's default is 7.5
        height=SIZE,
        width=SIZE,
        guess_mode=True,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
    ).images[0]
    assert np.abs(images[0] - expected).max() <= 1e-3


def test_the_union_controlnet_serves_its_tabs_loaded_once(saved_sdxl, square_image):
    """Scribble and Human pose on an SDXL base load xinsir's union ControlNet (from
    --controlnet-dir, by its hub name) once for both, each tab's map read as its control type; an
    image equals diffusers' union pipeline with that control type."""
    from diffusers import ControlNetUnionModel

    from controlnet_core.modalities import SDXL_UNION_ID, UNION_CONTROL_TYPES

    engine = sdxl_engine(saved_sdxl)
    request = request_for("scribble", seed=3)
    result = engine.generate(request, square_image)
    assert result.recipe["controlnet_model"] == SDXL_UNION_ID
    pose = engine.generate(replace(request, modality="pose"), square_image)
    assert engine.manager.loads[f"controlnet:{SDXL_UNION_ID}"] == 1
    assert np.abs(pose.arrays[0] - result.arrays[0]).mean() > 1e-3  # another control type

    expected = reference_image(
        saved_sdxl,
        StableDiffusionXLControlNetUnionPipeline,
        ControlNetUnionModel.from_pretrained(
            saved_sdxl / "controlnets" / "controlnet-union-sdxl-1.0"
        ),
        negative_prompt=request.negative_prompt or None,
        control_image=[Image.fromarray(square_image)],
        control_mode=[UNION_CONTROL_TYPES["thick line"]],
        guidance_scale=request.guidance_scale,
    )
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3


def test_combine_feeds_several_maps_to_the_one_union_model(saved_sdxl, square_image):
    """Combine on SDXL: Canny (its own SDXL ControlNet) + Scribble + Human pose (both the union
    model, one call for both maps); a comparison's plain half skips them all."""
    from controlnet_core import ControlSpec

    engine = sdxl_engine(saved_sdxl)
    union = engine.manager.controlnet(get_modality("scribble")).model
    calls = []
    hook = union.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((args[0], kwargs)), with_kwargs=True
    )
    request = GenerationRequest(
        modality="canny",
        preprocessor="none",
        prompt=PROMPT,
        steps=STEPS,
        resolution=SIZE,
        extra_controls=(
            ControlSpec("scribble", "none", conditioning_scale=0.8),
            ControlSpec("pose", "none", conditioning_scale=0.5),
        ),
    )
    try:
        result = engine.compare(request, square_image, extra_images=[square_image, square_image])
    finally:
        hook.remove()
    assert len(calls) == STEPS
    rows, options = calls[0]
    assert options["control_type_idx"] == [2, 0] and options["conditioning_scale"] == [0.8, 0.5]
    assert len(rows) == 2  # the controlled half's rows only (with CFG: 2 rows)
    assert np.abs(result.arrays[0] - result.arrays[1]).mean() > 1e-3


def test_tabs_sharing_the_union_model_get_one_object_even_if_it_is_evicted_meanwhile(
    saved_sdxl, square_image
):
    """Scribble and Human pose in one Combine run share the union model. A request looks each
    model up once: another request evicting it between two look-ups (here: every look-up
    empties the cache) must not give the second map a second copy, which would run as a call
    of its own instead of one call for both maps."""
    from controlnet_core import ControlSpec
    from controlnet_core.modalities import SDXL_UNION_ID

    engine = sdxl_engine(saved_sdxl)
    manager = engine.manager
    look_up = manager.controlnet

    def evicted_after(modality, status=None, keep=()):
        loaded = look_up(modality, status, keep)
        with manager._cache_lock:
            manager._controlnets.clear()
        return loaded

    manager.controlnet = evicted_after
    request = request_for(
        "canny",
        extra_controls=(
            ControlSpec("scribble", "none", conditioning_scale=0.8),
            ControlSpec("pose", "none", conditioning_scale=0.5),
        ),
    )
    engine.generate(request, square_image, extra_images=[square_image, square_image])
    assert manager.loads[f"controlnet:{SDXL_UNION_ID}"] == 1


def test_sdxl_sizes_are_its_trained_buckets_capped_by_its_own_limit(saved_sdxl):
    """On SDXL `resolution` is the side of a square of the output's area and the aspect snaps to
    SDXL's trained buckets (a short side of 1024 on a 4:3 photo would ask 1.4× its pixels); the
    cap is --max-resolution-sdxl, not SD1.5's --max-resolution."""
    from controlnet_core.images import SDXL_BUCKETS, sdxl_size

    photo = np.zeros((480, 640, 3), dtype=np.uint8)  # 4:3 landscape
    engine = Engine(
        Settings(
            backend="real",
            base_model=str(saved_sdxl / "sdxl-base"),
            max_resolution=512,
            max_resolution_sdxl=1024,
        )
    )
    assert engine.resolution_range() == (64, 1024)
    assert engine.control_map("canny", photo, "none", resolution=1024).shape == (896, 1152, 3)
    assert engine.output_size(480, 640, 1024) == (896, 1152)  # portrait swaps
    assert engine.output_size(3000, 1000, 1024) == (1536, 640)  # the widest bucket
    assert engine.output_size(200, 150, 128) == (160, 128)  # small sizes keep their aspect too
    for width, height in SDXL_BUCKETS:
        assert sdxl_size(width, height, 1024) == (width, height)
        area = np.prod(sdxl_size(width, height, 768))
        assert abs(area / 768**2 - 1) < 0.12
    sd15 = Engine(Settings(backend="tiny", max_resolution=512, max_resolution_sdxl=1024))
    assert sd15.resolution_range() == (64, 512)
    assert sd15.output_size(640, 480, 512) == (704, 512)  # SD1.5: the short side


def test_a_vae_of_its_own_replaces_the_base_models_and_is_named_in_the_recipe(
    saved_sdxl, square_image, tmp_path
):
    """--vae (as madebyollin/sdxl-vae-fp16-fix is used): the base loads with that VAE, the image
    is decoded by it (equal to diffusers' pipeline given that VAE), the recipe names it; a VAE
    whose config says it need not upcast (force_upcast false) stays float16 on SDXL."""
    from diffusers import AutoencoderKL

    from controlnet_core.models import keep_vae_float32
    from controlnet_core.tiny import _tiny_vae

    vae = _tiny_vae(seed=7, sample_size=128)
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(tmp_path / "sdxl-vae-fp16-fix")
    engine = sdxl_engine(saved_sdxl, vae=str(tmp_path / "sdxl-vae-fp16-fix"))
    request = request_for("canny", seed=3)
    result = engine.generate(request, square_image)
    assert result.recipe["vae"] == "sdxl-vae-fp16-fix"
    own = sdxl_engine(saved_sdxl).generate(request, square_image)
    assert np.abs(result.arrays[0] - own.arrays[0]).mean() > 1e-3  # another decoder

    expected = reference_image(
        saved_sdxl,
        StableDiffusionXLControlNetPipeline,
        canny_controlnet(saved_sdxl),
        vae=AutoencoderKL.from_pretrained(tmp_path / "sdxl-vae-fp16-fix"),
        image=Image.fromarray(square_image),
        guidance_scale=request.guidance_scale,
    )
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3

    pipe = tiny_sdxl_pipeline()
    pipe.vae = AutoencoderKL.from_pretrained(tmp_path / "sdxl-vae-fp16-fix", dtype=torch.float16)
    keep_vae_float32(pipe, "sdxl")
    assert pipe.vae.dtype == torch.float16


def test_a_missing_vae_is_named_with_what_to_do(saved_sdxl, square_image, tmp_path):
    from controlnet_core import WeightsUnavailableError

    engine = Engine(
        Settings(
            backend="real",
            base_model=str(saved_sdxl / "sdxl-base"),
            vae=str(tmp_path / "no-such-vae"),
        )
    )
    with pytest.raises(WeightsUnavailableError) as caught:
        engine.generate(GenerationRequest(modality="canny", prompt=PROMPT), square_image)
    message = str(caught.value)
    assert "The VAE weights 'no-such-vae' could not be loaded" in message and "--vae" in message
    assert str(tmp_path) not in message  # no server paths


def test_an_sdxl_single_file_loads_as_its_folder_does(saved_sdxl, models, square_image, tmp_path):
    """An SDXL checkpoint as A1111 and ComfyUI keep it (one .safetensors, generative-models'
    layout): its family is read from its keys before loading, it loads offline with
    --base-model-config, and gives the images its diffusers folder gives."""
    from controlnet_core.families import base_family
    from tests.ldm_checkpoint import save_sdxl_checkpoint

    path = save_sdxl_checkpoint(models[0], tmp_path / "tiny-sdxl.safetensors")
    assert base_family(str(path)) == "sdxl"
    engine = Engine(
        Settings(
            backend="real",
            base_model=str(path),
            base_model_config=str(saved_sdxl / "sdxl-base"),
            controlnet_dir=str(saved_sdxl / "controlnets"),
            device="cpu",
            dtype="float32",
        )
    )
    assert engine.family == "sdxl"
    request = request_for("scribble", seed=3)
    single = engine.generate(request, square_image)
    assert single.recipe["base_model"] == path.name and single.recipe["family"] == "sdxl"
    folder = sdxl_engine(saved_sdxl).generate(request, square_image)
    np.testing.assert_allclose(single.arrays, folder.arrays, atol=1e-5)


def test_fast_mode_on_sdxl_fuses_its_lora_as_diffusers_does(saved_sdxl, models, square_image):
    """Fast mode with an SDXL base: the LCM sampler on a UNet copy with SDXL's few-step LoRA fused
    in (kohya layout, alpha ≠ rank, as LCM-LoRA ships) equals diffusers' SDXL ControlNet pipeline
    after `load_lora_weights` + `fuse_lora` with the LCM scheduler; the recipe names the LoRA."""
    from diffusers import LCMScheduler

    from controlnet_core.tiny import save_tiny_few_step_lora

    lora = save_tiny_few_step_lora(models[0].unet, saved_sdxl / "lcm-lora-sdxl", seed=4)
    engine = sdxl_engine(saved_sdxl, few_step_lora=str(lora))
    request = request_for("canny", guidance_scale=1.0, scheduler="LCM", seed=3)
    result = engine.generate(request, square_image)
    assert result.recipe["few_step_lora"] == lora.name

    expected = reference_image(
        saved_sdxl,
        StableDiffusionXLControlNetPipeline,
        canny_controlnet(saved_sdxl),
        scheduler=LCMScheduler,
        lora=lora,
        image=Image.fromarray(square_image),
        guidance_scale=1.0,
    )
    assert np.abs(result.arrays[0] - expected).max() <= 1e-3
    plain = sdxl_engine(saved_sdxl).generate(replace(request, scheduler="Euler"), square_image)
    assert np.abs(plain.arrays[0] - result.arrays[0]).mean() > 1e-3


def test_offload_on_sdxl_moves_both_text_encoders_then_the_unet_with_its_controlnets(
    saved_sdxl, square_image
):
    """--offload with an SDXL base and Combine (Canny + two maps of the union model): the stages
    are both text encoders, then the UNet with the request's ControlNets, then the VAE; the
    images are those of a run without offload."""
    from controlnet_core import ControlSpec

    request = request_for(
        "canny", extra_controls=(ControlSpec("scribble", "none"), ControlSpec("pose", "none"))
    )
    images = [square_image, square_image]
    expected = sdxl_engine(saved_sdxl).generate(request, square_image, extra_images=images)
    engine = sdxl_engine(saved_sdxl, offload=True)
    result = engine.generate(request, square_image, extra_images=images)
    np.testing.assert_array_equal(result.arrays, expected.arrays)
    assert list(engine.manager.offloader.stages) == [
        ("CLIPTextModel", "CLIPTextModelWithProjection"),
        ("UNet2DConditionModel", "ControlNetModel", "ControlNetUnionModel"),  # the union once
        ("AutoencoderKL",),
    ]


def test_sdxl_controlnets_kept_as_single_files_load_as_their_folders_do(
    saved_sdxl, models, square_image, tmp_path
):
    """--controlnet-dir holding SDXL ControlNets as one .safetensors each, as A1111 and ComfyUI
    keep them (diffusers' keys): the canny one, and the union one with ProMax's 8 control types,
    whose sizes are read from its weights; Combine gives the images the folders give."""
    from safetensors.torch import save_file

    from controlnet_core import ControlSpec

    def save(model, name):
        weights = {key: value.contiguous() for key, value in model.state_dict().items()}
        save_file(weights, tmp_path / f"{name}.safetensors")

    promax = tiny_union_controlnet(models[0].unet, seed=5, control_types=8)
    promax.save_pretrained(tmp_path / "folders" / "controlnet-union-sdxl-1.0")
    save(promax, "controlnet-union-sdxl-1.0")
    save(canny_controlnet(saved_sdxl), "controlnet-canny-sdxl-1.0")
    (tmp_path / "folders" / "controlnet-canny-sdxl-1.0").symlink_to(
        saved_sdxl / "controlnets" / "controlnet-canny-sdxl-1.0"
    )
    request = request_for("canny", extra_controls=(ControlSpec("scribble", "none"),))
    files = sdxl_engine(saved_sdxl, controlnet_dir=str(tmp_path))
    result = files.generate(request, square_image, extra_images=[square_image])
    union = files.manager.controlnet(get_modality("scribble")).model
    assert union.config.num_control_type == 8
    folders = sdxl_engine(saved_sdxl, controlnet_dir=str(tmp_path / "folders"))
    expected = folders.generate(request, square_image, extra_images=[square_image])
    np.testing.assert_allclose(result.arrays, expected.arrays, atol=1e-5)


def test_the_automatic_vae_is_the_fp16_fix_for_sdxl_in_float16_only(saved_sdxl):
    """--vae auto (the default): an SDXL base in float16 decodes with madebyollin's fp16-fix VAE;
    SD1.5, or SDXL in bfloat16/float32, keeps its own; without the hub it falls back to SDXL's own
    VAE in float32 (a named --vae that cannot load is an error instead)."""
    from controlnet_core import WeightsUnavailableError
    from controlnet_core.models import ModelManager
    from controlnet_core.settings import SDXL_FP16_VAE

    def manager(dtype, **settings) -> ModelManager:
        made = ModelManager(
            Settings(backend="real", base_model=str(saved_sdxl / "sdxl-base"), **settings)
        )
        made._hardware = (torch.device("cpu"), dtype)  # as a GPU would choose, without one
        return made

    assert manager(torch.float16)._vae_source(sdxl=True) == SDXL_FP16_VAE
    assert manager(torch.float16)._vae_source(sdxl=False) is None
    assert manager(torch.bfloat16)._vae_source(sdxl=True) is None
    assert manager(torch.float16, vae="base")._vae_source(sdxl=True) is None
    offline = manager(torch.float16)
    base = offline.base()  # the hub is unreachable in tests: SDXL's own VAE, in float32
    assert offline.vae_id is None and base.vae.dtype == torch.float32
    assert base.unet.dtype == torch.float16
    named = manager(torch.float16, vae="someone/missing-vae")
    with pytest.raises(WeightsUnavailableError, match="'someone/missing-vae' could not be loaded"):
        named.base()


def test_an_sdxl_recipe_regenerates_its_image(saved_sdxl, square_image):
    """A Combine run on SDXL (Canny + the union model's Human pose, at an SDXL bucket size) made
    again from its recipe gives the same image, bit for bit."""
    from controlnet_core import ControlSpec

    engine = sdxl_engine(saved_sdxl)
    photo = np.full((48, 64, 3), 255, dtype=np.uint8)
    photo[12:36, 16:48] = 0
    request = request_for(
        "canny",
        resolution=128,
        seed=11,
        extra_controls=(ControlSpec("pose", "none", conditioning_scale=0.6),),
    )
    first = engine.generate(request, photo, extra_images=[square_image])
    assert (first.recipe["width"], first.recipe["height"]) == (160, 128)  # 4:3, multiples of 32
    again = engine.generate(engine.recipe_request(first.recipe), photo, extra_images=[square_image])
    np.testing.assert_array_equal(again.arrays, first.arrays)


def test_a_controlnet_in_another_kinds_place_runs_as_what_it_is(
    saved_sdxl, models, square_image, tmp_path
):
    """Union weights saved under the Canny model's name run as a union model reading Canny's map
    as "thin line"; a plain SDXL ControlNet saved under the union model's name runs as a plain
    one; neither ends in a shape error. The loading messages name models, not the server's
    folders."""
    import json

    from controlnet_core.sampling import is_union

    union = tiny_union_controlnet(models[0].unet, seed=3)
    union.save_pretrained(tmp_path / "controlnet-canny-sdxl-1.0")
    config = tmp_path / "controlnet-canny-sdxl-1.0" / "config.json"
    # As xinsir's own code names the class: still a union model (it has control types).
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "Other"}))
    canny_controlnet(saved_sdxl).save_pretrained(tmp_path / "controlnet-union-sdxl-1.0")
    engine = sdxl_engine(saved_sdxl, controlnet_dir=str(tmp_path))
    messages: list[str] = []
    request = request_for("canny")
    engine.generate(request, square_image, progress=lambda _, text: messages.append(text))
    model = engine.manager.controlnet(get_modality("canny")).model
    assert is_union(model)
    types = []
    hook = model.register_forward_hook(
        lambda module, args, kwargs, out: types.append(kwargs["control_type_idx"]),
        with_kwargs=True,
    )
    try:
        engine.generate(request, square_image)
    finally:
        hook.remove()
    assert types[0] == [UNION_TYPES["thin line"]]
    scribble = replace(request, modality="scribble")
    engine.generate(scribble, square_image, progress=lambda _, text: messages.append(text))
    assert not is_union(engine.manager.controlnet(get_modality("scribble")).model)
    loading = [text for text in messages if text.startswith("Loading")]
    assert "Loading ControlNet controlnet-canny-sdxl-1.0 (first use only)…" in loading
    assert all(str(tmp_path) not in text and str(saved_sdxl) not in text for text in messages)
