"""The one tab builder every modality uses.

`create_demo(modality_id, engine)` builds a tab from the modality's registry entry: the input (upload or
drawing canvas), the preprocessor choice with its parameters (rendered from their `ParamSpec`s), the
control sliders, the advanced settings and a gallery that shows the control map first. It wires two
named API endpoints: `/<modality id>` (generate) and `/<modality id>_map` (preview the control map only).
Tab modules add only what is special to them through `extra_inputs`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from controlnet_core.engine import (
    MAX_CONDITIONING_SCALE,
    MAX_SEED,
    MAX_SWEEP_VALUES,
    Engine,
    GenerationRequest,
    GenerationResult,
    control_labels,
    request_from_recipe,
)
from controlnet_core.errors import shown
from controlnet_core.modalities import INPUT_CANVAS, Modality, get_modality
from controlnet_core.models import SCHEDULERS
from controlnet_core.preprocessors import (
    MAX_DETECT_RESOLUTION,
    MIN_DETECT_RESOLUTION,
    ParamSpec,
    get_preprocessor,
)
from controlnet_core.recipes import read_recipe, recipe_for_image, save_png
from controlnet_core.sampling import CONTROL_MODES
from controlnet_core.settings import Settings, parse_flag
from demos.hosting import (
    guard_inputs,
    light_work,
    limit_canvas_input,
    output_folder,
    report,
    user_errors,
)

log = logging.getLogger(__name__)

DISPLAY_MIN_SIDE = 256
CANVAS_SIZE = (512, 512)


@dataclass
class TabInputs:
    """What a tab module may need to reach: the input component and the generate inputs."""

    modality: Modality
    source: gr.components.Component
    prompt: gr.Textbox
    preprocessor: gr.Dropdown
    gallery: gr.Gallery
    settings: Settings  # the server's limits, for the tab's own inputs and events


@dataclass
class SamplingControls:
    """The sampling settings every tab shows (see `sampling_controls`)."""

    steps: gr.Slider
    guidance_scale: gr.Slider
    seed: gr.Number
    randomize_seed: gr.Checkbox
    num_images: gr.Slider | None
    resolution: gr.Slider
    scheduler: gr.Dropdown


def sampling_controls(engine: Engine, with_num_images: bool) -> SamplingControls:
    """Steps, CFG, seed (+ randomize), number of images, resolution and sampler, in the context."""
    defaults = engine.ui_defaults()
    settings = engine.settings
    steps = limited_slider("Steps", 1, settings.max_steps, 1, defaults.steps)
    guidance_scale = gr.Slider(
        label="Guidance scale (CFG)",
        minimum=0.0,
        maximum=30.0,
        step=0.1,
        value=defaults.guidance_scale,
    )
    with gr.Row():
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED)
        randomize_seed = gr.Checkbox(label="Randomize seed", value=True)
    num_images = None
    if with_num_images:
        num_images = limited_slider("Number of images", 1, settings.max_images, 1, 1)
    resolution = limited_slider(
        "Resolution (short side)", 64, settings.max_resolution, 64, defaults.resolution
    )
    scheduler = gr.Dropdown(
        label="Sampler", choices=list(SCHEDULERS), value=_default_scheduler(settings)
    )
    return SamplingControls(
        steps, guidance_scale, seed, randomize_seed, num_images, resolution, scheduler
    )


def limited_slider(
    label: str, minimum: float, maximum: float, step: float, value: float
) -> gr.Slider | gr.Number:
    """A slider from `minimum` to the server's limit; a fixed number when the limit allows one value.

    A gradio slider needs minimum < maximum, and a server may well allow one image or 64 px only.
    """
    if maximum <= minimum:
        return gr.Number(
            label=label, value=minimum, interactive=False, info="fixed by this server's limits"
        )
    return gr.Slider(
        label=label, minimum=minimum, maximum=maximum, step=step, value=min(value, maximum)
    )


def choose_seed(seed: Any, randomize: Any) -> Any:
    """The seed to use: a fresh random one when asked, else the given one (the engine checks it)."""
    if parse_flag("randomize_seed", randomize):
        return random.randint(0, MAX_SEED)
    if seed is None:
        raise gr.Error(f"seed must be a whole number between 0 and {MAX_SEED}")
    return seed


def tab_container():
    """A `gr.Blocks` when a tab runs alone, a `gr.Column` inside the app.

    A nested `gr.Blocks` builds a whole server app of its own: with a dozen tabs that made start-up
    several seconds slower for nothing.
    """
    from gradio.context import get_blocks_context

    return gr.Column() if get_blocks_context() is not None else gr.Blocks()


MAX_GPU_SECONDS = 120


def on_gpu(
    field_names: Callable[[], Sequence[str]], variants: int = 1
) -> Callable[[Callable], Callable]:
    """Hold a GPU for the call on Hugging Face ZeroGPU Spaces; `spaces.GPU` is a no-op elsewhere.

    The duration asked for comes from the call's own `steps`, `num_images` and `resolution`
    (found by the handler's parameter names, `field_names()`) times `variants` images per seed:
    ZeroGPU queues short requests ahead of long ones and stops a call that runs past its duration.
    """

    def seconds(*values: Any, **_: Any) -> int:
        named = dict(zip(field_names(), values, strict=False))
        return gpu_seconds(
            named.get("steps"), named.get("num_images"), named.get("resolution"), variants
        )

    def wrap(fn: Callable) -> Callable:
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(fn, duration=seconds)

    return wrap


def gpu_seconds(steps: Any, images: Any, resolution: Any, variants: int = 1) -> int:
    """GPU seconds to ask for: the model load plus ~0.15 s per 512² image-step, capped.

    Unreadable values (the handler will refuse them) ask for the default.
    """
    try:
        work = float(steps) * float(images or 1) * variants * (float(resolution) / 512) ** 2
    except (TypeError, ValueError):
        return 60
    return int(min(MAX_GPU_SECONDS, 20 + 0.15 * max(work, 0.0)))


def canvas_to_image(value: Any) -> np.ndarray:
    """The drawing of a gr.Sketchpad value as RGB on white; gr.Error when nothing was drawn."""
    if isinstance(value, dict):
        composite = value.get("composite")
        layers = value.get("layers") or []
        if composite is None and layers:
            composite = layers[-1]
    else:
        composite = value
    if composite is None:
        raise gr.Error("The canvas is empty: pick the brush and draw something first.")
    array = np.asarray(composite)
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = np.rint(array[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    if array.ndim == 3 and (array.min(axis=2) < 200).sum() == 0:
        raise gr.Error("The canvas is empty: pick the brush and draw something first.")
    return array


def check_recipe_tab(request: GenerationRequest, tab: str) -> None:
    """gr.Error when a recipe belongs in another tab: its modality's, or Combine for several."""
    if request.extra_controls:
        raise gr.Error(
            f"This recipe combines {len(request.extra_controls) + 1} ControlNets "
            f"({' + '.join(control_labels(request))}); load it in the Combine tab."
        )
    if request.modality != tab:
        raise gr.Error(
            f"This recipe is for the {get_modality(request.modality).label} tab; "
            "open that tab to load it."
        )


def recipe_loaded_message(request: GenerationRequest) -> str:
    """What a loaded recipe set, for a toast (most of it sits in closed accordions)."""
    return (
        f"Recipe loaded: seed {request.seed}, {request.steps} steps, CFG {request.guidance_scale:g}, "
        f"strength {request.conditioning_scale:g}, {request.resolution} px. Recipes hold the "
        "settings, not the input image: add it, then Generate."
    )


def upscale_for_display(image: Image.Image) -> Image.Image:
    """Small outputs (toy/tiny backends) scaled up so the gallery does not show postage stamps."""
    short = min(image.size)
    if short >= DISPLAY_MIN_SIDE:
        return image
    factor = math.ceil(DISPLAY_MIN_SIDE / short)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def endpoint(fn: Callable, name: str, description: str) -> dict[str, Any]:
    """Event options that publish `fn` as API endpoint `/name`, and as the MCP tool `name` (gradio
    names tools after the function) with `description`, when the app runs with --mcp."""
    fn.__name__ = name
    return {"api_name": name, "api_description": description}


def name_parameters(fn: Callable, names: Sequence[str]) -> None:
    """Give a `*values` handler named parameters, so its API endpoint documents real names."""
    import inspect

    parameters = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names
    ]
    parameters.append(
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress())
    )
    fn.__signature__ = inspect.Signature(parameters)


DEFAULT_SWEEPS = {
    "strength": "0, 0.25, 0.5, 0.75, 1, 1.5",
    "start": "0, 0.2, 0.4, 0.6, 0.8",
    "end": "0.2, 0.4, 0.6, 0.8, 1",
}


def parse_sweep_values(text: str) -> list[float]:
    """Comma-separated numbers; gr.Error naming the bad entry otherwise."""
    values = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise gr.Error(
                f"Sweep values must be numbers separated by commas; {shown(part)} is not"
            ) from None
    if not values:
        raise gr.Error("Give at least one sweep value, e.g. 0, 0.5, 1")
    return values


def gallery_items(result: GenerationResult) -> list[tuple[str, str]]:
    """The control map(s) first, then each image, as PNG files that carry their recipe."""
    folder = output_folder()
    items = []
    maps = [result.control_map, *result.extra_maps]
    for index, control in enumerate(maps):
        path = folder / f"control_map_{index}.png"
        upscale_for_display(control).save(path)
        caption = "Control map" if index == 0 else f"Control map {index + 1}"
        if result.extra_maps:  # several ControlNets: say which map is which
            caption += f" ({result.map_labels[index]})"
        items.append((str(path), caption))
    for index, image in enumerate(result.images):
        caption = result.labels[index] if index < len(result.labels) else f"image {index + 1}"
        if index < len(result.nsfw) and result.nsfw[index]:
            caption += " (blocked by the safety checker)"
        recipe = recipe_for_image(result.recipe, index)
        if result.recipe.get("kind") in ("compare", "sweep"):
            recipe = _variant_recipe(result.recipe, index)
        path = folder / f"{index:02d}_seed{recipe['image_seed']}.png"
        save_png(upscale_for_display(image), recipe, path)
        items.append((str(path), caption))
    return items


def _variant_recipe(recipe: dict[str, Any], index: int) -> dict[str, Any]:
    """The plain recipe that reproduces image `index` of a comparison or sweep on its own."""
    single = recipe_for_image(recipe, index)
    single.update(kind="generate", seed=single["image_seed"], seeds=[single["image_seed"]])
    single.update(num_images=1, image_index=0)
    if recipe["kind"] == "compare" and index == 0:
        single["conditioning_scale"] = 0.0
        single["extra_controls"] = [
            {**spec, "conditioning_scale": 0.0} for spec in recipe.get("extra_controls", [])
        ]
    elif recipe["kind"] == "sweep":
        sweep = recipe["sweep"]
        field_name = {
            "strength": "conditioning_scale",
            "start": "guidance_start",
            "end": "guidance_end",
        }[sweep["parameter"]]
        single[field_name] = sweep["values"][index]
    single.pop("sweep", None)
    return single


def _param_component(spec: ParamSpec, visible: bool) -> gr.components.Component:
    common = {"label": spec.label, "info": spec.info or None, "visible": visible}
    if spec.kind == "bool":
        return gr.Checkbox(value=spec.default, **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=spec.default, **common)
    return gr.Slider(
        minimum=spec.minimum,
        maximum=spec.maximum,
        step=spec.step or (1 if spec.kind == "int" else 0.01),
        value=spec.default,
        **common,
    )


def _collect_params(modality: Modality) -> list[tuple[str, ParamSpec]]:
    """(preprocessor id, param spec) for every parameter of the modality's preprocessors, in order."""
    return [(pid, p) for pid in modality.preprocessors for p in get_preprocessor(pid).params]


def create_demo(
    modality_id: str,
    engine: Engine,
    extra_inputs: Callable[[TabInputs], None] | None = None,
    examples: Sequence[Sequence[Any]] | None = None,
) -> gr.Blocks:
    """The tab of one modality. `extra_inputs` may add tab-specific controls (e.g. pose presets)."""
    modality = get_modality(modality_id)
    defaults = engine.ui_defaults()
    param_specs = _collect_params(modality)
    default_pre = modality.default_preprocessor

    with tab_container() as demo:
        gr.Markdown(f"**{modality.label}** — {modality.description}")
        with gr.Row():
            with gr.Column(scale=1):
                if modality.input_kind == INPUT_CANVAS:
                    source = limit_canvas_input(
                        gr.Sketchpad(
                            label="Draw here (brush first)",
                            type="numpy",
                            canvas_size=CANVAS_SIZE,
                            brush=gr.Brush(colors=["#000000"], default_size=8, color_mode="fixed"),
                            height=420,
                        ),
                        engine.settings.max_image_pixels,
                    )
                else:
                    source = gr.Image(
                        label="Input image",
                        # The file itself: the core checks its size from the header before
                        # decoding, and converts 16-bit depth maps, CMYK and transparency
                        # properly, where gradio's RGB conversion would clip them.
                        type="filepath",
                        image_mode=None,
                        format="png",  # control maps go back in here: webp would shift colours
                        sources=["upload", "clipboard", "webcam"],
                        height=360,
                    )
                prompt = gr.Textbox(
                    label="Prompt",
                    value=defaults.prompt or modality.default_prompt,
                    lines=2,
                    max_length=2000,
                )
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary")
                    preview = gr.Button("Preview map")
                with gr.Row():
                    compare = gr.Button("Compare with plain SD")
                    sweep = gr.Button("Sweep")
                with gr.Row():
                    sweep_kind = gr.Dropdown(
                        label="Sweep parameter",
                        choices=[
                            ("strength", "strength"),
                            ("control start", "start"),
                            ("control end", "end"),
                        ],
                        value="strength",
                        scale=1,
                    )
                    sweep_values = gr.Textbox(
                        label="Sweep values",
                        value=DEFAULT_SWEEPS["strength"],
                        scale=2,
                    )
                with gr.Accordion("Control", open=True):
                    preprocessor = gr.Dropdown(
                        label="Preprocessor",
                        choices=[(get_preprocessor(p).label, p) for p in modality.preprocessors],
                        value=default_pre,
                    )
                    detect_resolution = gr.Slider(
                        label="Detect resolution (short side)",
                        minimum=MIN_DETECT_RESOLUTION,
                        maximum=min(1024, MAX_DETECT_RESOLUTION),
                        step=64,
                        value=512,
                        visible=get_preprocessor(default_pre).uses_detect_resolution,
                    )
                    param_components = [
                        _param_component(spec, visible=(pid == default_pre))
                        for pid, spec in param_specs
                    ]
                    conditioning_scale = gr.Slider(
                        label="Control strength (0 = plain SD)",
                        minimum=0.0,
                        maximum=MAX_CONDITIONING_SCALE,
                        step=0.05,
                        value=modality.default_conditioning_scale,
                    )
                    with gr.Row():
                        guidance_start = gr.Slider(
                            label="Control starts at",
                            minimum=0.0,
                            maximum=1.0,
                            step=0.01,
                            value=0.0,
                        )
                        guidance_end = gr.Slider(
                            label="Control ends at", minimum=0.0, maximum=1.0, step=0.01, value=1.0
                        )
                    guess_mode = gr.Checkbox(
                        label="Guess mode (ControlNet recognises the content; prompt optional)",
                        value=False,
                    )
                    control_mode = gr.Radio(
                        label="Control mode",
                        choices=[(label, key) for key, label in CONTROL_MODES.items()],
                        value="balanced",
                    )
                with gr.Accordion("Advanced", open=False):
                    negative_prompt = gr.Textbox(
                        label="Negative prompt",
                        value="lowres, bad anatomy, worst quality, low quality",
                        max_length=2000,
                    )
                    sampling = sampling_controls(engine, with_num_images=True)
                    steps, guidance_scale = sampling.steps, sampling.guidance_scale
                    seed, randomize_seed = sampling.seed, sampling.randomize_seed
                    num_images, resolution = sampling.num_images, sampling.resolution
                    scheduler = sampling.scheduler
            with gr.Column(scale=1):
                note = engine.backend_note(modality.id)
                if note:
                    gr.Markdown(f"*Backend: {note}*", elem_classes=["backend-note"])
                gallery = gr.Gallery(
                    label="Control map, then results",
                    format="png",
                    columns=3,
                    height=520,
                    object_fit="contain",
                )
                comparison = gr.ImageSlider(
                    label="Plain SD ⟷ ControlNet (same seed; drag the handle)",
                    format="png",
                    type="filepath",
                    visible=False,
                )
                with gr.Accordion("Recipe: every setting, model ids, versions", open=False):
                    recipe_file = gr.File(
                        label="Load a recipe (a PNG made here, or its JSON) to refill this tab",
                        file_types=[".png", ".json"],
                        type="filepath",
                    )
                    recipe = gr.JSON(label="Recipe of the last result")

        if extra_inputs is not None:
            extra_inputs(
                TabInputs(modality, source, prompt, preprocessor, gallery, engine.settings)
            )

        param_names = [spec.name for _, spec in param_specs]
        param_owners = [pid for pid, _ in param_specs]

        def read_source(value: Any) -> Any:
            if modality.input_kind == INPUT_CANVAS:
                return canvas_to_image(value)
            if value is None:
                raise gr.Error("Upload an image first (or pick an example below).")
            return value

        def params_for(chosen: str, values: Sequence[Any]) -> dict[str, Any]:
            return {
                name: value
                for name, owner, value in zip(param_names, param_owners, values, strict=True)
                if owner == chosen
            }

        def build_request(values: Sequence[Any]) -> tuple[Any, GenerationRequest]:
            (
                image,
                prompt_text,
                negative_text,
                chosen_preprocessor,
                detect_res,
                strength,
                start,
                end,
                guess,
                step_count,
                cfg,
                seed_value,
                randomize,
                count,
                res,
                sampler,
                *param_values,
                mode,
            ) = values
            array = read_source(image)
            seed_value = choose_seed(seed_value, randomize)
            request = GenerationRequest(
                modality=modality.id,
                prompt=prompt_text or "",
                negative_prompt=negative_text or "",
                preprocessor=chosen_preprocessor,
                preprocessor_params=params_for(chosen_preprocessor, param_values),
                detect_resolution=detect_res,
                conditioning_scale=strength,
                guidance_start=start,
                guidance_end=end,
                guess_mode=guess,
                steps=step_count,
                guidance_scale=cfg,
                seed=seed_value,
                num_images=count,
                resolution=res,
                scheduler=sampler,
                control_mode=mode or "balanced",
            )
            return array, request

        @user_errors
        @on_gpu(lambda: list(api_fields))
        def run_generate(*values, progress=gr.Progress()):
            array, request = build_request(values)
            result = engine.generate(request, array, progress=report(progress))
            return (
                gallery_items(result),
                result.recipe,
                result.recipe["seed"],
                gr.update(visible=False),
            )

        @user_errors
        @on_gpu(lambda: list(api_fields), variants=2)
        def run_compare(*values, progress=gr.Progress()):
            array, request = build_request(values)
            result = engine.compare(request, array, progress=report(progress))
            items = gallery_items(result)
            slider = (items[-2][0], items[-1][0])  # the same files as the gallery's two images
            return (
                items,
                result.recipe,
                result.recipe["seed"],
                gr.update(value=slider, visible=True),
            )

        @user_errors
        @on_gpu(lambda: list(api_fields), variants=MAX_SWEEP_VALUES)
        def run_sweep(*values, progress=gr.Progress()):
            *values, kind, text = values
            array, request = build_request(values)
            sweep_list = parse_sweep_values(text)
            result = engine.sweep(request, array, kind, sweep_list, progress=report(progress))
            return (
                gallery_items(result),
                result.recipe,
                result.recipe["seed"],
                gr.update(visible=False),
            )

        @user_errors
        def run_load_recipe(path):
            if not path:
                return [gr.update() for _ in recipe_targets]
            request = request_from_recipe(read_recipe(path))
            check_recipe_tab(request, modality.id)
            request = engine.validate(request)
            gr.Info(recipe_loaded_message(request))
            chosen = request.preprocessor
            values = {
                prompt: request.prompt,
                negative_prompt: request.negative_prompt,
                preprocessor: chosen,
                detect_resolution: request.detect_resolution,
                conditioning_scale: request.conditioning_scale,
                guidance_start: request.guidance_start,
                guidance_end: request.guidance_end,
                guess_mode: request.guess_mode,
                steps: request.steps,
                guidance_scale: request.guidance_scale,
                seed: request.seed,
                randomize_seed: False,
                num_images: request.num_images,
                resolution: request.resolution,
                scheduler: request.scheduler,
                control_mode: request.control_mode,
            }
            updates = [gr.update(value=values[c]) for c in recipe_targets[: len(values)]]
            for name, owner in zip(param_names, param_owners, strict=True):
                if owner == chosen and name in request.preprocessor_params:
                    updates.append(gr.update(value=request.preprocessor_params[name], visible=True))
                else:
                    updates.append(gr.update(visible=owner == chosen))
            return updates

        @user_errors
        def run_preview(image, chosen_preprocessor, detect_res, res, *param_values, progress=None):
            array = read_source(image)
            control = engine.control_map(
                modality.id,
                array,
                chosen_preprocessor,
                params_for(chosen_preprocessor, param_values),
                detect_res,
                res,
            )
            return [(upscale_for_display(Image.fromarray(control)), "Control map")]

        def show_params(chosen: str):
            spec = get_preprocessor(chosen)
            updates = [gr.update(visible=spec.uses_detect_resolution)]
            updates += [gr.update(visible=(owner == chosen)) for owner in param_owners]
            # One output (a modality whose preprocessors have no parameters) takes one update: a
            # list would become the slider's value and break every button of the tab.
            return updates[0] if len(updates) == 1 else updates

        preprocessor.change(
            show_params,
            inputs=preprocessor,
            outputs=[detect_resolution, *param_components],
            api_visibility="private",
        )
        # Endpoint parameters, in order, with the names the API shows (new ones go at the end).
        api_fields = {
            "image": source,
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "preprocessor": preprocessor,
            "detect_resolution": detect_resolution,
            "conditioning_scale": conditioning_scale,
            "guidance_start": guidance_start,
            "guidance_end": guidance_end,
            "guess_mode": guess_mode,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "randomize_seed": randomize_seed,
            "num_images": num_images,
            "resolution": resolution,
            "scheduler": scheduler,
            **{
                f"{owner}_{name}": component
                for owner, name, component in zip(
                    param_owners, param_names, param_components, strict=True
                )
            },
            "control_mode": control_mode,
        }
        generate_inputs = list(api_fields.values())
        name_parameters(run_generate, list(api_fields))
        name_parameters(run_compare, list(api_fields))
        name_parameters(run_sweep, [*api_fields, "sweep_parameter", "sweep_values"])
        outputs = [gallery, recipe, seed, comparison]
        # Progress and errors show on the gallery only: not as "Error" pills over the seed box.
        common = {"outputs": outputs, "concurrency_id": "generate", "show_progress_on": [gallery]}
        label = modality.label
        made = (
            "Returns the control map(s), then the images as PNG files that carry their recipe, "
            "the recipe as JSON and the seed used."
        )
        generate.click(
            run_generate,
            inputs=generate_inputs,
            **endpoint(
                run_generate,
                modality.id,
                f"Generate images with Stable Diffusion steered by the {label} ControlNet. `image` "
                f"is a photo (the preprocessor makes the {label} control map from it) or a "
                f"ready map (preprocessor 'none'). {made}",
            ),
            **common,
        )
        prompt.submit(run_generate, inputs=generate_inputs, api_visibility="private", **common)
        compare.click(
            run_compare,
            inputs=generate_inputs,
            **endpoint(
                run_compare,
                f"{modality.id}_compare",
                f"Plain Stable Diffusion and the {label} ControlNet for the same seed and "
                f"settings, side by side, to show what the control changes. {made}",
            ),
            **common,
        )
        sweep.click(
            run_sweep,
            inputs=[*generate_inputs, sweep_kind, sweep_values],
            **endpoint(
                run_sweep,
                f"{modality.id}_sweep",
                f"One seed rendered at several values of the {label} ControlNet's strength, start "
                f"or end (`sweep_parameter`; `sweep_values` comma-separated). {made}",
            ),
            **common,
        )
        sweep_kind.change(
            lambda kind: DEFAULT_SWEEPS[kind],
            inputs=sweep_kind,
            outputs=sweep_values,
            api_visibility="private",
        )
        # What a loaded recipe refills: the settings, then the preprocessor parameters.
        recipe_targets = [
            c for c in api_fields.values() if c is not source and c not in param_components
        ] + list(param_components)
        recipe_file.upload(
            run_load_recipe,
            inputs=recipe_file,
            outputs=recipe_targets,
            **endpoint(
                run_load_recipe,
                f"{modality.id}_load_recipe",
                "The settings stored in a PNG made by this app (or its JSON recipe), to refill "
                "the tab.",
            ),
            **light_work(engine.settings),
        )
        name_parameters(
            run_preview,
            ["image", "preprocessor", "detect_resolution", "resolution"]
            + [f"{owner}_{name}" for owner, name in zip(param_owners, param_names, strict=True)],
        )
        preview.click(
            run_preview,
            inputs=[source, preprocessor, detect_resolution, resolution, *param_components],
            outputs=gallery,
            **endpoint(
                run_preview,
                f"{modality.id}_map",
                f"Only the {label} control map the preprocessor makes from `image` (fast; no "
                "generation).",
            ),
            **light_work(engine.settings),
        ).then(  # the gallery now shows another image: an older comparison must not stay below it
            lambda: gr.update(visible=False), outputs=comparison, api_visibility="private"
        )
        if examples and modality.input_kind != INPUT_CANVAS:
            gr.Examples(examples=[list(e) for e in examples], inputs=[source, prompt])
    guard_inputs(demo)
    return demo


def _default_scheduler(settings) -> str:
    return settings.scheduler if settings.scheduler in SCHEDULERS else "UniPC"
