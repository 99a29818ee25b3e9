"""Combine tab: several ControlNets at once (multi-ControlNet), each with its own strength and window.

Unit 1 is required; units 2 and 3 join when they have an image. All maps are made at the first unit's
size. Endpoints: `/combine` (generate), `/combine_compare` (the same against plain SD) and
`/combine_load_recipe` (refill the tab from a PNG made here or its JSON recipe).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from controlnet_core.engine import (
    MAX_CONDITIONING_SCALE,
    ControlSpec,
    Engine,
    GenerationRequest,
    request_from_recipe,
)
from controlnet_core.modalities import INPUT_IMAGE, MODALITIES, get_modality
from controlnet_core.preprocessors import get_preprocessor
from controlnet_core.recipes import read_recipe
from controlnet_core.sampling import CONTROL_MODES
from demos.builder import (
    choose_seed,
    endpoint,
    gallery_items,
    name_parameters,
    on_gpu,
    recipe_loaded_message,
    sampling_controls,
    tab_container,
)
from demos.hosting import guard_inputs, light_work, report, user_errors

UNITS = 3
DEFAULT_UNITS = ("pose", "depth", "canny")
# Offline backends: start from preprocessors that need no downloaded weights (and, for the toy model,
# from ControlNets it has), so the defaults run as they are.
OFFLINE_UNITS = ("canny", "scribble", "canny")


@dataclass
class _Unit:
    modality: gr.Dropdown
    image: gr.Image
    preprocessor: gr.Dropdown
    strength: gr.Slider
    start: gr.Slider
    end: gr.Slider


def _upload_modalities() -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in MODALITIES.values() if m.input_kind == INPUT_IMAGE]


def _preprocessor_choices(modality_id: str) -> list[tuple[str, str]]:
    return [(get_preprocessor(p).label, p) for p in get_modality(modality_id).preprocessors]


# Core messages name request fields; the page names its units (ControlNet 1 is the main control).
_MAIN_FIELDS = re.compile(
    r"^(image|could not read|preprocessor|guidance_start|guidance_end|conditioning_scale"
    r"|detect_resolution)\b"
)
_EXTRA_FIELD = re.compile(r"extra_(?:controls|images)\[(\d+)\]\.?:? ?")


def unit_message(message: str, unit_numbers: list[int]) -> str:
    """A core error message with its fields renamed after the page's units ("ControlNet 2: …")."""

    if _MAIN_FIELDS.match(message):
        return f"ControlNet 1: {message}"
    match = _EXTRA_FIELD.search(message)
    if match is None:
        return message
    index = int(match.group(1))
    number = unit_numbers[index] if index < len(unit_numbers) else index + 2
    # Name the unit once, in front, and drop the field prefixes from the rest.
    return f"ControlNet {number}: {_EXTRA_FIELD.sub('', message)}"


def create_demo(engine: Engine) -> gr.Blocks:
    defaults = engine.ui_defaults()
    choices = _upload_modalities()
    available = {value for _, value in choices}
    default_units = OFFLINE_UNITS if engine.backend in ("toy", "tiny") else DEFAULT_UNITS
    with tab_container() as demo:
        gr.Markdown(
            "**Combine** — several ControlNets at once (e.g. pose + depth). Each has its own "
            "strength and start/end; their residuals add up inside the UNet."
        )
        note = engine.backend_note()
        if note:
            gr.Markdown(f"*Backend: {note}*", elem_classes=["backend-note"])
        units: list[_Unit] = []
        with gr.Row():
            for index in range(UNITS):
                wanted = default_units[index]
                modality_id = wanted if wanted in available else choices[index % len(choices)][1]
                with gr.Column(min_width=240):
                    label = "required" if index == 0 else "optional: used when it has an image"
                    gr.Markdown(f"**ControlNet {index + 1}** ({label})")
                    modality = gr.Dropdown(label="Modality", choices=choices, value=modality_id)
                    image = gr.Image(
                        label="Image or control map",
                        # The file: the core checks its size before decoding, and converts
                        # 16-bit, CMYK and transparency itself.
                        type="filepath",
                        image_mode=None,
                        format="png",
                        height=220,
                    )
                    preprocessor = gr.Dropdown(
                        label="Preprocessor",
                        choices=_preprocessor_choices(modality_id),
                        value=get_modality(modality_id).default_preprocessor,
                        # Choices follow the modality in the page; the engine validates the pair.
                        allow_custom_value=True,
                    )
                    strength = gr.Slider(
                        label="Strength",
                        minimum=0.0,
                        maximum=MAX_CONDITIONING_SCALE,
                        step=0.05,
                        value=1.0 if index == 0 else 0.7,
                    )
                    with gr.Row():
                        start = gr.Slider(
                            label="Start", minimum=0.0, maximum=1.0, step=0.01, value=0.0
                        )
                        end = gr.Slider(label="End", minimum=0.0, maximum=1.0, step=0.01, value=1.0)
                units.append(_Unit(modality, image, preprocessor, strength, start, end))
                # .input, not .change: a loaded recipe sets the modality and its own preprocessor,
                # which a change handler would then reset to the modality's default.
                modality.input(
                    lambda m: gr.update(
                        choices=_preprocessor_choices(m), value=get_modality(m).default_preprocessor
                    ),
                    inputs=modality,
                    outputs=preprocessor,
                    api_visibility="private",
                )
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(
                    label="Prompt", value=defaults.prompt or "a dancer on a stage, best quality"
                )
                negative_prompt = gr.Textbox(
                    label="Negative prompt", value="lowres, bad anatomy, worst quality, low quality"
                )
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary")
                    compare = gr.Button("Compare with plain SD")
                with gr.Accordion("Settings", open=False):
                    control_mode = gr.Radio(
                        label="Control mode",
                        choices=[(label, key) for key, label in CONTROL_MODES.items()],
                        value="balanced",
                    )
                    guess_mode = gr.Checkbox(label="Guess mode", value=False)
                    sampling = sampling_controls(engine, with_num_images=False)
                    steps, guidance_scale = sampling.steps, sampling.guidance_scale
                    seed, randomize_seed = sampling.seed, sampling.randomize_seed
                    resolution, scheduler = sampling.resolution, sampling.scheduler
            with gr.Column():
                gallery = gr.Gallery(
                    label="Control maps, then results", format="png", columns=3, height=420
                )
                slider = gr.ImageSlider(
                    label="Plain SD ⟷ ControlNets", format="png", type="filepath", visible=False
                )
                with gr.Accordion("Recipe", open=False):
                    recipe_file = gr.File(
                        label="Load a recipe (a PNG made here, or its JSON) to refill this tab; "
                        "recipes hold the settings, not the images: add those again",
                        file_types=[".png", ".json"],
                        type="filepath",
                    )
                    recipe = gr.JSON(label="Recipe of the last result")

        unit_inputs = [
            c
            for u in units
            for c in (u.modality, u.image, u.preprocessor, u.strength, u.start, u.end)
        ]
        common_inputs = [
            prompt,
            negative_prompt,
            control_mode,
            guess_mode,
            steps,
            guidance_scale,
            seed,
            randomize_seed,
            resolution,
            scheduler,
        ]
        names = [
            f"unit{i + 1}_{field}"
            for i in range(UNITS)
            for field in ("modality", "image", "preprocessor", "strength", "start", "end")
        ] + [
            "prompt",
            "negative_prompt",
            "control_mode",
            "guess_mode",
            "steps",
            "guidance_scale",
            "seed",
            "randomize_seed",
            "resolution",
            "scheduler",
        ]

        def build(values: list[Any]):
            unit_values = [values[i * 6 : (i + 1) * 6] for i in range(UNITS)]
            (text, negative, mode, guess, count, cfg, seed_value, randomize, res, sampler) = values[
                UNITS * 6 :
            ]
            first = unit_values[0]
            if first[1] is None:
                raise gr.Error("ControlNet 1 needs an image.")
            extras, extra_images, unit_numbers = [], [], []
            for number, (modality_id, image, chosen, strength, start, end) in enumerate(
                unit_values[1:], start=2
            ):
                if image is None:
                    continue
                unit_numbers.append(number)
                extras.append(
                    ControlSpec(
                        modality=modality_id,
                        preprocessor=chosen,
                        conditioning_scale=strength,
                        guidance_start=start,
                        guidance_end=end,
                    )
                )
                extra_images.append(image)
            seed_value = choose_seed(seed_value, randomize)
            request = GenerationRequest(
                modality=first[0],
                prompt=text or "",
                negative_prompt=negative or "",
                preprocessor=first[2],
                conditioning_scale=first[3],
                guidance_start=first[4],
                guidance_end=first[5],
                guess_mode=guess,
                steps=count,
                guidance_scale=cfg,
                seed=seed_value,
                resolution=res,
                scheduler=sampler,
                control_mode=mode or "balanced",
                extra_controls=tuple(extras),
            )
            return first[1], request, extra_images, unit_numbers

        def run(method: Callable, values: list[Any], progress: gr.Progress):
            image, request, extra_images, unit_numbers = build(values)
            try:
                return method(request, image, report(progress), extra_images)
            except ValueError as error:
                raise ValueError(unit_message(str(error), unit_numbers)) from error

        @user_errors
        @on_gpu(lambda: names, variants=UNITS)  # up to a ControlNet per unit
        def run_generate(*values, progress=gr.Progress()):
            result = run(engine.generate, list(values), progress)
            return (
                gallery_items(result),
                result.recipe,
                result.recipe["seed"],
                gr.update(visible=False),
            )

        @user_errors
        @on_gpu(lambda: names, variants=2 * UNITS)
        def run_compare(*values, progress=gr.Progress()):
            result = run(engine.compare, list(values), progress)
            items = gallery_items(result)
            pair = (items[-2][0], items[-1][0])  # the same files as the gallery's two images
            return (
                items,
                result.recipe,
                result.recipe["seed"],
                gr.update(value=pair, visible=True),
            )

        @user_errors
        def run_load_recipe(path):
            if not path:
                return [gr.update() for _ in recipe_targets]
            try:  # the recipe's control i fills unit i + 1
                request = engine.validate(request_from_recipe(read_recipe(path)))
            except ValueError as error:
                raise ValueError(unit_message(str(error), [])) from error
            controls = [request, *request.extra_controls]
            if len(controls) > UNITS:
                raise gr.Error(
                    f"This recipe has {len(controls)} ControlNets; the Combine tab holds {UNITS}."
                )
            updates = []
            for number in range(1, UNITS + 1):
                if number > len(controls):
                    # A unit the recipe does not use must not join the next generation.
                    updates += [gr.update(), gr.update(value=None)] + [gr.update()] * 4
                    continue
                control = controls[number - 1]
                if control.modality not in available:
                    raise gr.Error(
                        f"ControlNet {number} of this recipe is {get_modality(control.modality).label}, "
                        "which the Combine tab does not take: load it in its own tab."
                    )
                if (
                    dict(control.preprocessor_params)
                    != get_preprocessor(control.preprocessor).defaults()
                    or control.detect_resolution != 512
                ):
                    gr.Warning(
                        f"ControlNet {number}: this tab has no preprocessor settings, so the "
                        "recipe's detect resolution and preprocessor parameters are not used."
                    )
                updates += [
                    gr.update(value=control.modality),
                    gr.update(),
                    gr.update(
                        choices=_preprocessor_choices(control.modality),
                        value=control.preprocessor,
                    ),
                    gr.update(value=control.conditioning_scale),
                    gr.update(value=control.guidance_start),
                    gr.update(value=control.guidance_end),
                ]
            if request.num_images != 1:
                gr.Warning(
                    f"The recipe made {request.num_images} images; this tab makes one, the first."
                )
            common = [
                request.prompt,
                request.negative_prompt,
                request.control_mode,
                request.guess_mode,
                request.steps,
                request.guidance_scale,
                request.seed,
                False,
                request.resolution,
                request.scheduler,
            ]
            gr.Info(recipe_loaded_message(request))
            return updates + [gr.update(value=value) for value in common]

        name_parameters(run_generate, names)
        name_parameters(run_compare, names)
        outputs = [gallery, recipe, seed, slider]
        common = {"outputs": outputs, "concurrency_id": "generate", "show_progress_on": [gallery]}
        generate.click(
            run_generate,
            inputs=[*unit_inputs, *common_inputs],
            **endpoint(
                run_generate,
                "combine",
                "Generate with up to three ControlNets at once (multi-ControlNet), each with its "
                "own image, modality, strength and start/end; unit 1 is required.",
            ),
            **common,
        )
        compare.click(
            run_compare,
            inputs=[*unit_inputs, *common_inputs],
            **endpoint(
                run_compare,
                "combine_compare",
                "Plain Stable Diffusion and the combined ControlNets for the same seed, side by side.",
            ),
            **common,
        )
        recipe_targets = [*unit_inputs, *common_inputs]
        recipe_file.upload(
            run_load_recipe,
            inputs=recipe_file,
            outputs=recipe_targets,
            **endpoint(
                run_load_recipe,
                "combine_load_recipe",
                "The settings stored in a PNG made by this app (or its JSON recipe), to refill "
                "the Combine tab.",
            ),
            **light_work(engine.settings),
        )
    guard_inputs(demo)
    return demo


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
