"""Combine tab: several ControlNets at once (multi-ControlNet), each with its own strength and window.

Unit 1 is required; units 2 and 3 join when they have an image. All maps are made at the first unit's
size. The form is `UNITS` copies of one ControlNet-unit sub-form (`unit_form`) and the shared text,
mode and sampling fields. Endpoints: `/combine` (generate), `/combine_compare` (the same against plain
SD) and `/combine_load_recipe` (refill the tab from a PNG made here or its JSON recipe).
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from controlnet_core import (
    INPUT_IMAGE,
    MODALITIES,
    ControlSpec,
    Engine,
    FieldError,
    GenerationRequest,
    GenerationResult,
    get_modality,
    get_preprocessor,
)
from demos.builder import (
    endpoint,
    fast_mode_box,
    name_parameters,
    note_area,
    on_gpu,
    recipe_area,
    recipe_loaded_message,
    results_area,
    show_result,
    tab_container,
    wire_fast_mode,
    wire_panel_run,
)
from demos.form import (
    FormField,
    by_name,
    mode_fields,
    request_values,
    sampling_fields,
    text_fields,
    window_fields,
)
from demos.hosting import (
    field_message,
    guard_inputs,
    light_work,
    refuse_bad_uploads,
    report,
    user_errors,
)
from demos.inside import InsidePanel, inside_outputs, inside_panel
from demos.running import results_stop, run_buttons
from demos.session import session_controlnets
from demos.texts import can_generate

UNITS = 3
DEFAULT_UNITS = ("pose", "depth", "canny")
# Offline backends: start from preprocessors that need no downloaded weights (and, for the toy model,
# from ControlNets it has), so the defaults run as they are.
OFFLINE_UNITS = ("canny", "scribble", "canny")
UNIT_LABELS = ("Strength", "Start", "End")


def unit_key(f: FormField) -> str:
    """A unit field's name without its unit: "unit2_strength" -> "strength"."""
    return f.name.partition("_")[2]


def _upload_modalities() -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in MODALITIES.values() if m.input_kind == INPUT_IMAGE]


def _preprocessor_choices(modality_id: str) -> list[tuple[str, str]]:
    return [(get_preprocessor(p).label, p) for p in get_modality(modality_id).preprocessors]


def unit_form(
    number: int, modality_id: str, choices: Sequence[tuple[str, str]] | None = None
) -> list[FormField]:
    """ControlNet unit `number`'s fields: modality (one of `choices`, by default every modality
    with an uploaded image), image, preprocessor, strength, start, end."""
    prefix = f"unit{number}_"
    label = f"ControlNet {number} · "
    options = list(choices or _upload_modalities())
    modality = FormField(
        f"{prefix}modality",
        label + "Modality",
        lambda: gr.Dropdown(label="Modality", choices=options, value=modality_id),
        target="modality",
    )
    image = FormField(
        f"{prefix}image",
        label + "Image",
        lambda: gr.Image(
            label="Image or control map",
            # The file: the core checks its size before decoding, and converts 16-bit, CMYK and
            # transparency itself.
            type="filepath",
            image_mode=None,
            format="png",
            height=220,
        ),
    )
    preprocessor = FormField(
        f"{prefix}preprocessor",
        label + "Preprocessor",
        lambda: gr.Dropdown(
            label="Preprocessor",
            choices=_preprocessor_choices(modality_id),
            value=get_modality(modality_id).default_preprocessor,
            # Choices follow the modality in the page; the engine validates the pair.
            allow_custom_value=True,
        ),
        target="preprocessor",
    )
    window = window_fields(UNIT_LABELS, 1.0 if number == 1 else 0.7, prefix=prefix)
    window = [FormField(f.name, label + f.label, f.make, target=f.target) for f in window]
    return [modality, image, preprocessor, *window]


def shared_form(engine: Engine) -> list[FormField]:
    """The fields every unit shares, in API order after the units'."""
    fields = by_name(
        [
            *text_fields(engine, "a dancer on a stage, best quality"),
            *mode_fields(),
            *sampling_fields(engine, with_num_images=False),
        ]
    )
    names = ["prompt", "negative_prompt", "control_mode", "guess_mode", "steps"]
    names += ["guidance_scale", "seed", "randomize_seed", "resolution", "scheduler"]
    return [fields[name] for name in names]


@dataclass
class CombineView:
    units: list[dict[str, gr.components.Component]]  # by field: modality, image, …
    shared: dict[str, gr.components.Component]  # by API parameter name
    buttons: Any
    gallery: gr.Gallery
    comparison: gr.ImageSlider
    recipe_file: gr.File
    recipe: gr.JSON
    inside: InsidePanel
    fast: gr.Checkbox

    def inputs(self) -> list[gr.components.Component]:
        return [c for unit in self.units for c in unit.values()] + list(self.shared.values())


def layout_combine(
    engine: Engine, units: Sequence[list[FormField]], shared: list[FormField]
) -> CombineView:
    union = (
        " On SDXL, the maps of the union ControlNet go into that one model together, each "
        "weighed by its strength."
        if engine.sizes_by_area
        else ""
    )
    gr.Markdown(
        "**Combine** — several ControlNets at once (e.g. pose + depth). Each has its own "
        f"strength and start/end; their residuals add up inside the UNet.{union}"
    )
    note_area(engine)
    made_units = []
    with gr.Row():
        for number, form in enumerate(units, start=1):
            with gr.Column(min_width=240):
                role = "required" if number == 1 else "optional: used when it has an image"
                gr.Markdown(f"**ControlNet {number}** ({role})")
                window = ("start", "end")
                made = {unit_key(f): f.make() for f in form if unit_key(f) not in window}
                with gr.Row():
                    made.update({unit_key(f): f.make() for f in form if unit_key(f) in window})
                made_units.append({unit_key(f): made[unit_key(f)] for f in form})  # API order
    shared_made = {}
    with gr.Row(equal_height=False):
        with gr.Column():
            for f in shared[:2]:
                shared_made[f.name] = f.make()
            fast = fast_mode_box(engine)
            buttons = run_buttons(True, with_sweep=False, with_preview=False)
            with gr.Accordion("Settings", open=False):
                for f in shared[2:]:
                    shared_made[f.name] = f.make()
        with gr.Column(elem_classes=["cn-results-col"]):
            buttons.stop_by_results = results_stop()
            gallery, comparison = results_area("Control maps, then results")
            inside = inside_panel()
            recipe_file, recipe = recipe_area(
                "Load a recipe (a PNG made here, or its JSON) to refill this tab; recipes hold "
                "the settings, not the images: add those again"
            )
    shared_made = {f.name: shared_made[f.name] for f in shared}  # API order
    return CombineView(
        made_units, shared_made, buttons, gallery, comparison, recipe_file, recipe, inside, fast
    )


def unit_labels(
    unit_numbers: Sequence[int],
    units: Sequence[list[FormField]],
    shared: Sequence[FormField] = (),
):
    """Request field paths → the page's labels: "ControlNet N · <label>" for a unit's field (the
    main control is unit 1, extra control k the k-th unit that had an image, `unit_numbers`), the
    shared fields' own labels ("Steps") for the rest."""
    by_target = [{f.target: f.label for f in form if f.target} for form in units]
    shared_labels = {f.target: f.label for f in shared if f.target}

    def unit(number: int, field: Any) -> str:
        known = by_target[number - 1] if number <= len(by_target) else {}
        return known.get(field) or f"ControlNet {number}"

    def label(path: tuple) -> str | None:
        if not path:
            return None
        if path[0] in ("extra_controls", "extra_images") and len(path) >= 2:
            index = path[1]
            number = unit_numbers[index] if index < len(unit_numbers) else index + 2
            if path[0] == "extra_images":
                return f"ControlNet {number} · Image"
            return unit(number, path[2] if len(path) > 2 else None)
        if path == ("image",):
            return "ControlNet 1 · Image"
        if path[0] == "preprocessor_params":
            return "ControlNet 1 · Preprocessor"
        return shared_labels.get(path[0]) or (unit(1, path[0]) if by_target else None)

    return label


def build_request(
    units: Sequence[list[FormField]], shared: list[FormField], values: Sequence[Any]
) -> tuple[Any, GenerationRequest, list[Any], list[int]]:
    """The request of a Combine form: unit 1 is the main control, each later unit with an image an
    extra control. Returns the main image, the request, the extra images and their unit numbers."""
    values = list(values)
    named, specs = [], []
    for form in units:  # each unit's values, then the shared ones
        unit_values, values = values[: len(form)], values[len(form) :]
        named.append({unit_key(f): v for f, v in zip(form, unit_values, strict=True)})
        specs.append({f.target: named[-1][unit_key(f)] for f in form if f.target})
    common = request_values(shared, values)
    if named[0]["image"] is None:
        raise gr.Error("ControlNet 1 needs an image.")
    extras, images, numbers = [], [], []
    for number in range(2, len(units) + 1):
        if named[number - 1]["image"] is None:
            continue
        extras.append(ControlSpec(**specs[number - 1]))
        images.append(named[number - 1]["image"])
        numbers.append(number)
    main = specs[0]
    request = GenerationRequest(
        **main, **{k: v for k, v in common.items() if k != "preprocessor_params"},
        extra_controls=tuple(extras),
    )  # fmt: skip
    return named[0]["image"], request, images, numbers


def create_demo(engine: Engine) -> gr.Blocks:
    # Only what this backend can run: the toy model has three ControlNets, SDXL none for Content
    # shuffle (their own tabs say so and keep Preview map; here a unit could only fail).
    runnable = [(label, m) for label, m in _upload_modalities() if can_generate(engine, m)]
    runnable = runnable or _upload_modalities()  # none (weights missing): each unit says why
    choices = {value for _, value in runnable}
    wanted = OFFLINE_UNITS if engine.backend in ("toy", "tiny") else DEFAULT_UNITS
    starts = [m if m in choices else runnable[0][1] for m in wanted]
    units = [unit_form(number, starts[number - 1], runnable) for number in range(1, UNITS + 1)]
    shared = shared_form(engine)
    with tab_container() as demo:
        view = layout_combine(engine, units, shared)
        wire_unit_modalities(view)
        for number, unit in enumerate(view.units, start=1):
            refuse_bad_uploads(unit["image"], f"ControlNet {number} · Image", engine)
        wire_fast_mode(view.fast, view.shared, engine)
        wire_runs(view, engine, units, shared)
        wire_recipe_load(view, engine, units, shared, choices)
    guard_inputs(demo)
    return demo


def wire_unit_modalities(view: CombineView) -> None:
    # .input, not .change: a loaded recipe sets the modality and its own preprocessor, which a
    # change handler would then reset to the modality's default.
    for unit in view.units:
        unit["modality"].input(
            lambda m: gr.update(
                choices=_preprocessor_choices(m), value=get_modality(m).default_preprocessor
            ),
            inputs=unit["modality"],
            outputs=unit["preprocessor"],
            api_visibility="private",
        )


def wire_runs(
    view: CombineView, engine: Engine, units: Sequence[list[FormField]], shared: list[FormField]
) -> None:
    names = [f.name for form in units for f in form] + [f.name for f in shared]

    def run(method: Callable, values: Sequence[Any], progress: gr.Progress) -> GenerationResult:
        image, request, extra_images, unit_numbers = build_request(units, shared, values)
        try:
            return method(
                request, image, report(progress), extra_images, controlnets=session_controlnets()
            )
        except FieldError as error:  # named after the page's units, which only this call knows
            message = field_message(error, unit_labels(unit_numbers, units, shared))
        raise gr.Error(message)

    @user_errors
    @on_gpu(lambda: names, variants=UNITS)  # up to a ControlNet per unit
    def run_generate(*values, progress=gr.Progress()):
        return show_result(run(engine.generate, values, progress))

    @user_errors
    @on_gpu(lambda: names, variants=2 * UNITS)
    def run_compare(*values, progress=gr.Progress()):
        return show_result(run(engine.compare, values, progress), compare=True)

    @user_errors
    @on_gpu(lambda: names, variants=UNITS)
    def run_inside(*values, progress=gr.Progress()):
        *values, step = values

        def traced(request, image, callback, extra_images, controlnets):
            return engine.generate(
                request, image, callback, extra_images, inside_step=step, controlnets=controlnets
            )

        return inside_outputs(run(traced, values, progress))

    name_parameters(run_generate, names)
    name_parameters(run_compare, names)
    name_parameters(run_inside, [*names, "inside_step"])
    wire_panel_run(
        view.inside.button,
        run_inside,
        [*view.inputs(), view.inside.step],
        [view.inside.heat, view.inside.bars],
        endpoint(
            run_inside,
            "combine_inside",
            "What the combined ControlNets add inside the UNet (their residuals summed): a heat "
            "map per injection point and each block's residual norm relative to the UNet's skip "
            "activation, at `inside_step` (first, middle, last or mean).",
        ),
    )
    inputs = view.inputs()
    view.buttons.wire(
        generate=(
            run_generate,
            inputs,
            endpoint(
                run_generate,
                "combine",
                "Generate with up to three ControlNets at once (multi-ControlNet), each with its "
                "own image, modality, strength and start/end; unit 1 is required.",
            ),
        ),
        compare=(
            run_compare,
            inputs,
            endpoint(
                run_compare,
                "combine_compare",
                "Plain Stable Diffusion and the combined ControlNets for the same seed, side by side.",
            ),
        ),
        outputs=[view.gallery, view.recipe, view.shared["seed"], view.comparison],
        results=view.gallery,
    )


def unit_updates(number: int, form: list[FormField], control: ControlSpec | None) -> list[Any]:
    """What a recipe writes into unit `number`: its control's fields, or an emptied image."""
    if control is None:  # a unit the recipe does not use must not join the next generation
        return [gr.update(value=None) if unit_key(f) == "image" else gr.update() for f in form]
    if (
        dict(control.preprocessor_params) != get_preprocessor(control.preprocessor).defaults()
        or control.detect_resolution != 512
    ):
        gr.Warning(
            f"ControlNet {number}: this tab has no preprocessor settings, so the recipe's "
            "detect resolution and preprocessor parameters are not used."
        )
    updates = []
    for f in form:
        if f.target is None:  # the image: recipes hold settings, not images
            updates.append(gr.update())
        elif f.target == "preprocessor":  # its choices follow the modality
            choices = _preprocessor_choices(control.modality)
            updates.append(gr.update(choices=choices, value=control.preprocessor))
        else:
            updates.append(gr.update(value=getattr(control, f.target)))
    return updates


def wire_recipe_load(
    view: CombineView,
    engine: Engine,
    units: Sequence[list[FormField]],
    shared: Sequence[FormField],
    choices: set[str],
) -> None:
    targets = view.inputs()

    # The recipe's extra control k fills unit k + 2: a recipe made with units 1 and 3 fills 1 and 2.
    @user_errors(labels=unit_labels(range(2, UNITS + 1), units, shared))
    def run_load_recipe(path):
        if not path:
            return [gr.update() for _ in targets]
        request = engine.recipe_request(path)
        if len(request.controls()) > UNITS:
            raise gr.Error(
                f"This recipe has {len(request.controls())} ControlNets; the Combine tab holds "
                f"{UNITS}."
            )
        request = engine.validate(request)
        controls = request.controls()
        for number, control in enumerate(controls, start=1):
            if control.modality not in choices:
                label = get_modality(control.modality).label
                if can_generate(engine, control.modality):
                    raise gr.Error(
                        f"ControlNet {number} of this recipe is {label}, which the Combine tab "
                        "does not take: load it in its own tab."
                    )
                raise gr.Error(
                    f"ControlNet {number} of this recipe is {label}, for which this server's "
                    "model has no ControlNet."
                )
        updates = []
        for number, form in enumerate(units, start=1):
            control = controls[number - 1] if number <= len(controls) else None
            updates += unit_updates(number, form, control)
        if request.num_images != 1:
            gr.Warning(
                f"The recipe made {request.num_images} images; this tab makes one, the first."
            )
        updates += [gr.update(value=f.recipe_value(request)) for f in shared]
        gr.Info(
            f"{recipe_loaded_message(request)} Its ControlNets fill units 1 to {len(controls)}."
        )
        return updates

    view.recipe_file.upload(
        run_load_recipe,
        inputs=view.recipe_file,
        outputs=targets,
        show_progress_on=[view.recipe_file],
        **endpoint(
            run_load_recipe,
            "combine_load_recipe",
            "The settings stored in a PNG made by this app (or its JSON recipe), to refill "
            "the Combine tab.",
        ),
        **light_work(engine.settings),
    )


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
