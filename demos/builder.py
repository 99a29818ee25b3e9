"""The one tab builder every modality uses.

`create_demo(modality_id, engine)` builds a tab from the modality's registry entry in three steps:
`tab_form` declares its fields (see `demos.form`), `layout_tab` places their components and returns
them as a `TabView`, and `wire_tab` attaches the handlers. It publishes five named API endpoints:
`/<id>` (generate), `/<id>_compare`, `/<id>_sweep`, `/<id>_map` (the control map only) and
`/<id>_load_recipe`. Tab modules add only what is special to them through `extra_inputs`.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from controlnet_core import (
    FEW_STEP_SCHEDULER,
    INPUT_CANVAS,
    MAX_DETECT_RESOLUTION,
    MAX_SWEEP_VALUES,
    MIN_DETECT_RESOLUTION,
    Engine,
    GenerationRequest,
    GenerationResult,
    Modality,
    Settings,
    control_labels,
    get_modality,
    get_preprocessor,
    preprocessor_runs_here,
    recipe_for_image,
    save_png,
    shown,
)
from demos.form import (
    FormField,
    by_name,
    mode_fields,
    param_field,
    request_values,
    sampling_fields,
    text_fields,
    window_fields,
)
from demos.hosting import (
    guard_inputs,
    light_work,
    limit_canvas_input,
    output_folder,
    refuse_bad_uploads,
    report,
    user_errors,
    with_previews,
)
from demos.inside import (
    InsidePanel,
    TimelinePanel,
    inside_outputs,
    inside_panel,
    timeline_outputs,
    timeline_panel,
)
from demos.running import FORMING, RunButtons, results_stop, run_buttons
from demos.session import session_controlnets
from demos.texts import backend_note, can_generate, starting_values

DISPLAY_MIN_SIDE = 256
CANVAS_SIZE = (512, 512)
CONTROL_LABELS = ("Control strength (0 = plain SD)", "Control starts at", "Control ends at")
IMAGE_LABEL = {True: "Drawing", False: "Input image"}


@dataclass
class TabView:
    """The components of a tab, as its layout placed them; tab modules place theirs next to them."""

    modality: Modality
    settings: Settings  # the server's limits, for the tab's own inputs and events
    fields: dict[str, gr.components.Component]  # by API parameter name
    buttons: RunButtons
    preview: gr.Button
    sweep_kind: gr.Dropdown
    sweep_values: gr.Textbox
    gallery: gr.Gallery
    comparison: gr.ImageSlider
    recipe_file: gr.File
    recipe: gr.JSON
    inside: InsidePanel | None  # None where this backend cannot generate for the tab
    timeline: TimelinePanel | None
    runs_here: Callable[[str], bool]  # whether a preprocessor can run on this server now
    fast: gr.Checkbox  # Fast mode: sets the sampler, steps and CFG of few-step mode

    @property
    def source(self) -> gr.components.Component:
        return self.fields["image"]

    @property
    def prompt(self) -> gr.Textbox:
        return self.fields["prompt"]

    @property
    def preprocessor(self) -> gr.Dropdown:
        return self.fields["preprocessor"]


# --- the form -------------------------------------------------------------------------------------


def starting_preprocessor(modality: Modality, engine: Engine) -> str:
    """The first of the tab's preprocessors that can run here (its hub annotator when the weights
    are cached or the hub answers, else the offline one; "None", the last, always runs)."""
    for pid in modality.preprocessors:
        if preprocessor_runs_here(pid, engine.hub_online):
            return pid
    return modality.default_preprocessor


def tab_form(modality: Modality, engine: Engine) -> list[FormField]:
    """The tab's fields, in the order of its API parameters."""
    first = starting_preprocessor(modality, engine)
    common = by_name(
        [
            *text_fields(engine, modality.default_prompt),
            *window_fields(CONTROL_LABELS, modality.default_conditioning_scale),
            *mode_fields(),
            *sampling_fields(engine, with_num_images=True),
        ]
    )
    params = [
        param_field(pid, spec, visible=pid == first)
        for pid in modality.preprocessors
        for spec in get_preprocessor(pid).params
    ]
    canvas = modality.input_kind == INPUT_CANVAS
    image = FormField("image", IMAGE_LABEL[canvas], lambda: _source(modality, engine))
    preprocessor = FormField(
        "preprocessor",
        "Preprocessor",
        lambda: gr.Dropdown(
            label="Preprocessor",
            choices=[(get_preprocessor(p).label, p) for p in modality.preprocessors],
            value=first,
        ),
        target="preprocessor",
    )
    detect = FormField(
        "detect_resolution",
        "Detect resolution",
        lambda: gr.Slider(
            label="Detect resolution (short side)",
            minimum=MIN_DETECT_RESOLUTION,
            maximum=min(1024, MAX_DETECT_RESOLUTION),
            step=64,
            value=512,
            visible=get_preprocessor(first).uses_detect_resolution,
        ),
        target="detect_resolution",
    )
    names = ["prompt", "negative_prompt"]
    names += ["conditioning_scale", "guidance_start", "guidance_end", "guess_mode"]
    names += ["steps", "guidance_scale", "seed", "randomize_seed", "num_images"]
    names += ["resolution", "scheduler"]
    return [
        image,
        *(common[n] for n in names[:2]),
        preprocessor,
        detect,
        *(common[n] for n in names[2:]),
        *params,
        common["control_mode"],
    ]


def _source(modality: Modality, engine: Engine) -> gr.components.Component:
    if modality.input_kind == INPUT_CANVAS:
        return limit_canvas_input(
            gr.Sketchpad(
                # Short: on a phone the canvas's toolbar covers a longer label (the tab's text
                # says to pick the brush first).
                label="Draw here",
                type="numpy",
                canvas_size=CANVAS_SIZE,
                brush=gr.Brush(colors=["#000000"], default_size=8, color_mode="fixed"),
                height=420,
            ),
            engine.settings.max_image_pixels,
        )
    return gr.Image(
        label="Input image",
        # The file itself: the core checks its size from the header before decoding, and converts
        # 16-bit depth maps, CMYK and transparency properly, where gradio's RGB conversion would
        # clip them.
        type="filepath",
        image_mode=None,
        format="png",  # control maps go back in here: webp would shift colours
        sources=["upload", "clipboard", "webcam"],
        height=360,
    )


def field_labels(form: Sequence[FormField], prefix: str = "") -> Callable[[tuple], str | None]:
    """Request field paths → the page's labels, for error messages."""
    labels: dict[tuple, str] = {}
    for f in form:
        if f.target:
            labels[(f.target,)] = prefix + f.label
        elif f.owner is not None:
            labels.setdefault(("preprocessor_params", f.param), prefix + f.label)
        elif f.name == "image":
            labels[("image",)] = prefix + f.label
    return lambda path: labels.get(tuple(path))


# --- the layout -----------------------------------------------------------------------------------


def layout_tab(
    modality: Modality,
    engine: Engine,
    form: Sequence[FormField],
    examples: Sequence[Sequence[Any]] | None = None,
) -> TabView:
    """Place the form's components, the buttons, the `examples` (image, prompt) and the results
    area; nothing is wired here."""
    made: dict[str, gr.components.Component] = {}

    def place(*names: str) -> None:
        for f in form:
            if f.name in names or (f.owner is not None and "params" in names):
                made[f.name] = f.make()

    gr.Markdown(f"**{modality.label}** — {modality.description}")
    # Above both columns: on a phone the results column comes after every control, and the note
    # says why a tab cannot generate on this backend.
    note_area(engine, modality.id)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            place("image", "prompt")
            fast = fast_mode_box(engine)
            buttons = run_buttons(can_generate(engine, modality.id))
            preview = buttons.preview
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
                    interactive=buttons.enabled,
                )
                sweep_values = gr.Textbox(
                    label="Sweep values",
                    value=DEFAULT_SWEEPS["strength"],
                    scale=2,
                    interactive=buttons.enabled,
                )
            if examples and modality.input_kind != INPUT_CANVAS:
                # Before the settings: a newcomer's first run starts from one of them.
                gr.Examples(
                    examples=[list(e) for e in examples],
                    inputs=[made["image"], made["prompt"]],
                    label="Examples: click one to fill the image and the prompt",
                )
            with gr.Accordion("Control", open=True):
                place("preprocessor", "detect_resolution", "params")
                place("conditioning_scale")
                with gr.Row():
                    place("guidance_start", "guidance_end")
                place("guess_mode", "control_mode")
            with gr.Accordion("Advanced", open=False):
                place("negative_prompt", "steps", "guidance_scale")
                with gr.Row():
                    place("seed", "randomize_seed")
                place("num_images", "resolution", "scheduler")
        with gr.Column(scale=1, elem_classes=["cn-results-col"]):
            buttons.stop_by_results = results_stop() if buttons.enabled else None
            gallery, comparison = results_area("Control map, then results")
            inside = inside_panel() if buttons.enabled else None
            timeline = timeline_panel() if buttons.enabled else None
            recipe_file, recipe = recipe_area(
                "Load a recipe (a PNG made here, or its JSON) to refill this tab"
            )
    fields = {f.name: made[f.name] for f in form}  # API order
    return TabView(
        modality, engine.settings, fields, buttons, preview, sweep_kind, sweep_values,
        gallery, comparison, recipe_file, recipe, inside, timeline,
        lambda pid: preprocessor_runs_here(pid, engine.hub_online), fast,
    )  # fmt: skip


FAST_STEPS = 6
FAST_GUIDANCE = 1.0  # LCM-LoRA runs without classifier-free guidance: one UNet row per image


def fast_mode_box(engine: Engine) -> gr.Checkbox:
    """The Fast mode switch: a preset of the sampler, steps and CFG (none of them hidden: the
    Advanced settings show what it chose, and changing the sampler there switches it back)."""
    usable = engine.has_few_step()
    info = (
        f"LCM sampler, {FAST_STEPS} steps, CFG {FAST_GUIDANCE:g}, with the few-step LCM-LoRA: "
        "several times quicker, a little less detail"
        if usable
        else "Needs the real weights: the toy model has no few-step LoRA"
    )
    on = engine.settings.scheduler == FEW_STEP_SCHEDULER
    return gr.Checkbox(label="Fast mode (4–8 steps)", value=on, info=info, interactive=usable)


def wire_fast_mode(
    fast: gr.Checkbox, fields: dict[str, gr.components.Component], engine: Engine
) -> None:
    """Fast mode on: LCM, FAST_STEPS, FAST_GUIDANCE; off: the tab's starting values. Choosing the
    LCM sampler in Advanced (or leaving it) switches Fast mode with the same preset, and a recipe's
    sampler sets the box, so the box always says what will run."""
    start = starting_values(engine)
    default = engine.settings.scheduler
    if default == FEW_STEP_SCHEDULER:
        default = "UniPC"
    scheduler = fields["scheduler"]
    numbers = [fields["steps"], fields["guidance_scale"]]

    def preset(on: bool) -> tuple:
        if on:
            return FEW_STEP_SCHEDULER, FAST_STEPS, FAST_GUIDANCE
        return default, start.steps, start.guidance_scale

    def sampler_chosen(name: str, was_fast: bool) -> tuple:
        now_fast = name == FEW_STEP_SCHEDULER
        if now_fast == was_fast:
            return gr.skip(), gr.skip(), gr.skip()
        _, steps, guidance = preset(now_fast)
        return now_fast, steps, guidance

    private = {"api_visibility": "private", "queue": False}
    fast.input(preset, fast, [scheduler, *numbers], **private)
    scheduler.input(sampler_chosen, [scheduler, fast], [fast, *numbers], **private)
    scheduler.change(lambda name: name == FEW_STEP_SCHEDULER, scheduler, fast, **private)


def note_area(engine: Engine, modality_id: str | None = None) -> gr.Markdown:
    """The backend note of a tab. The device and dtype are filled in when the page loads: deciding
    them imports torch, which the page does not wait for at start-up (the server imports it in the
    background as soon as it answers, see `launch.serve`)."""
    from gradio.context import get_blocks_context

    def text(hardware: bool = True) -> str:
        return f"*Backend: {backend_note(engine, modality_id, hardware)}*"

    known = engine.manager.hardware_known
    note = gr.Markdown(text(hardware=known), elem_classes=["backend-note"])
    if not known:
        page = get_blocks_context().root_block
        page.load(text, None, note, api_name=False, queue=False, show_progress="hidden")
    return note


def results_area(label: str) -> tuple[gr.Gallery, gr.ImageSlider]:
    """The comparison slider (shown after a Compare, where the eye is) above the gallery."""
    comparison = gr.ImageSlider(
        label="Plain SD ⟷ ControlNet",  # short, as the slider's toolbar covers its right end
        format="png",
        type="filepath",
        visible=False,
    )
    gallery = gr.Gallery(
        label=label,
        format="png",
        columns=3,
        height="auto",  # with CSS (app.CSS) that lets tiles and captions take the room they need
        object_fit="contain",
        buttons=["download", "download_all", "fullscreen"],  # gradio's Share fails here
        elem_classes=["cn-results"],
        # Also an input (Stop relabels its previews), which would make it an upload area.
        interactive=False,
    )
    return gallery, comparison


def recipe_area(label: str) -> tuple[gr.File, gr.JSON]:
    with gr.Accordion("Recipe: every setting, model ids, versions", open=False):
        recipe_file = gr.File(label=label, file_types=[".png", ".json"], type="filepath")
        recipe = gr.JSON(label="Recipe of the last result")
    return recipe_file, recipe


# --- the handlers ---------------------------------------------------------------------------------


def create_demo(
    modality_id: str,
    engine: Engine,
    extra_inputs: Callable[[TabView], None] | None = None,
    examples: Sequence[Sequence[Any]] | None = None,
) -> gr.Blocks:
    """The tab of one modality. `extra_inputs` may add tab-specific controls (e.g. pose presets)."""
    modality = get_modality(modality_id)
    form = tab_form(modality, engine)
    with tab_container() as demo:
        view = layout_tab(modality, engine, form, examples)
        if extra_inputs is not None:
            extra_inputs(view)
        wire_tab(view, form, engine)
    guard_inputs(demo)
    return demo


def wire_tab(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """Attach the tab's handlers: generate, compare, sweep, preview, recipe load, parameter display."""
    wire_runs(view, form, engine)
    view.sweep_kind.change(
        lambda kind: DEFAULT_SWEEPS[kind],
        inputs=view.sweep_kind,
        outputs=view.sweep_values,
        api_visibility="private",
    )
    wire_fast_mode(view.fast, view.fields, engine)
    wire_preview(view, form, engine)
    wire_recipe_load(view, form, engine)
    wire_parameter_display(view, form)
    if type(view.fields["image"]) is gr.Image:  # an upload, not a canvas
        refuse_bad_uploads(view.fields["image"], IMAGE_LABEL[False], engine)
    if view.inside is not None:
        wire_inside(view, form, engine)
        wire_timeline(view, form, engine)


def wire_timeline(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """`/<id>_timeline`: one comparison with the predicted final image at a few steps."""
    names = [f.name for f in form]

    @user_errors(labels=field_labels(form))
    @on_gpu(lambda: names, variants=2)
    def run_timeline(*values, progress=gr.Progress()):
        image, request = build_request(view.modality, form, values)
        result = engine.compare(
            request,
            image,
            progress=report(progress),
            timeline=6,
            controlnets=session_controlnets(),
        )
        return timeline_outputs(result, result.recipe["steps"], engine.preview_decoder().name)

    name_parameters(run_timeline, names)
    wire_panel_run(
        view.timeline.button,
        run_timeline,
        list(view.fields.values()),
        [view.timeline.strip, view.timeline.note],
        endpoint(
            run_timeline,
            f"{view.modality.id}_timeline",
            f"Plain Stable Diffusion and the {view.modality.label} ControlNet for one seed, "
            "step by step: the predicted final image at about six steps of each, drawn by a "
            "cheap decoder (named in the second output).",
        ),
    )


def wire_panel_run(
    button: gr.Button, fn: Callable, inputs: list, outputs: list, options: dict[str, Any]
) -> None:
    """A panel's own run: in the generate queue, its progress on its first output."""
    button.click(
        fn,
        inputs=inputs,
        outputs=outputs,
        concurrency_id="generate",
        show_progress_on=[outputs[0]],
        **options,
    )


def wire_inside(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """`/<id>_inside`: one traced generation fills the "Inside the ControlNet" panel."""
    names = [f.name for f in form]

    @user_errors(labels=field_labels(form))
    @on_gpu(lambda: names)
    def run_inside(*values, progress=gr.Progress()):
        *values, step = values
        image, request = build_request(view.modality, form, values)
        request = replace(request, num_images=1)  # the first image of the batch, traced
        return inside_outputs(
            engine.generate(
                request,
                image,
                progress=report(progress),
                inside_step=step,
                controlnets=session_controlnets(),
            )
        )

    name_parameters(run_inside, [*names, "inside_step"])
    wire_panel_run(
        view.inside.button,
        run_inside,
        [*view.fields.values(), view.inside.step],
        [view.inside.heat, view.inside.bars],
        endpoint(
            run_inside,
            f"{view.modality.id}_inside",
            f"What the {view.modality.label} ControlNet adds inside the UNet for the tab's "
            "settings (first image): a heat map per injection point and each block's residual "
            "norm relative to the UNet's skip activation, at `inside_step` (first, middle, last "
            "or mean).",
        ),
    )


def run_descriptions(label: str) -> dict[str, str]:
    """What the generate, compare and sweep endpoints do, for the API page and MCP tools."""
    made = (
        "Returns the control map(s), then the images as PNG files that carry their recipe, "
        "the recipe as JSON and the seed used."
    )
    return {
        "generate": f"Generate images with Stable Diffusion steered by the {label} ControlNet. "
        f"`image` is a photo (the preprocessor makes the {label} control map from it) or a ready "
        f"map (preprocessor 'none'). {made}",
        "compare": f"Plain Stable Diffusion and the {label} ControlNet for the same seed and "
        f"settings, side by side, to show what the control changes. {made}",
        "sweep": f"One seed rendered at several values of the {label} ControlNet's strength, start "
        f"or end (`sweep_parameter`; `sweep_values` comma-separated). {made}",
    }


def wire_runs(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """`/<id>`, `/<id>_compare` and `/<id>_sweep` on their buttons."""
    modality = view.modality
    names = [f.name for f in form]
    labels = field_labels(form)

    def build(values: Sequence[Any]) -> tuple[Any, GenerationRequest]:
        return build_request(modality, form, values)

    def streamed(run: Callable, show: Callable, *args: Any, progress: gr.Progress):
        """`run` (an engine method) on the request, its images forming in the gallery."""
        return with_previews(
            lambda preview, step: run(
                *args, progress=step, controlnets=session_controlnets(), preview=preview
            ),
            show,
            show_preview,
            report(progress),
        )

    @user_errors(labels=labels)
    @on_gpu(lambda: names)
    def run_generate(*values, progress=gr.Progress()):
        image, request = build(values)
        yield from streamed(engine.generate, show_result, request, image, progress=progress)

    @user_errors(labels=labels)
    @on_gpu(lambda: names, variants=2)
    def run_compare(*values, progress=gr.Progress()):
        image, request = build(values)
        show = functools.partial(show_result, compare=True)
        yield from streamed(engine.compare, show, request, image, progress=progress)

    @user_errors(labels=labels)
    @on_gpu(lambda: names, variants=MAX_SWEEP_VALUES)
    def run_sweep(*values, progress=gr.Progress()):
        *values, kind, text = values
        image, request = build(values)
        sweep_list = parse_sweep_values(text)
        yield from streamed(
            engine.sweep, show_result, request, image, kind, sweep_list, progress=progress
        )

    name_parameters(run_generate, names)
    name_parameters(run_compare, names)
    name_parameters(run_sweep, [*names, "sweep_parameter", "sweep_values"])
    inputs = list(view.fields.values())
    about = run_descriptions(modality.label)
    view.buttons.wire(
        generate=(run_generate, inputs, endpoint(run_generate, modality.id, about["generate"])),
        compare=(
            run_compare,
            inputs,
            endpoint(run_compare, f"{modality.id}_compare", about["compare"]),
        ),
        sweep=(
            run_sweep,
            [*inputs, view.sweep_kind, view.sweep_values],
            endpoint(run_sweep, f"{modality.id}_sweep", about["sweep"]),
        ),
        outputs=[view.gallery, view.recipe, view.fields["seed"], view.comparison],
        results=view.gallery,
    )


def wire_preview(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """`/<id>_map`: the control map alone, from the image, the preprocessor and its parameters."""
    modality = view.modality
    params = [f for f in form if f.owner is not None]
    names = ["image", "preprocessor", "detect_resolution", "resolution"]

    @user_errors(labels=field_labels(form))
    def run_preview(image, chosen, detect_resolution, resolution, *param_values, progress=None):
        values = {
            f.param: value
            for f, value in zip(params, param_values, strict=True)
            if f.owner == chosen
        }
        control = engine.control_map(
            modality.id,
            read_source(modality, image),
            chosen,
            values,
            detect_resolution,
            resolution,
        )
        return [(upscale_for_display(Image.fromarray(control)), "Control map")]

    name_parameters(run_preview, names + [f.name for f in params])
    view.preview.click(
        run_preview,
        inputs=[view.fields[n] for n in names] + [view.fields[f.name] for f in params],
        outputs=view.gallery,
        **endpoint(
            run_preview,
            f"{modality.id}_map",
            f"Only the {modality.label} control map the preprocessor makes from `image` (fast; "
            "no generation).",
        ),
        **light_work(engine.settings),
    ).then(  # the gallery now shows another image: an older comparison must not stay above it
        lambda: gr.update(visible=False), outputs=view.comparison, api_visibility="private"
    )


def wire_recipe_load(view: TabView, form: Sequence[FormField], engine: Engine) -> None:
    """`/<id>_load_recipe`: refill every field a recipe holds (not the image)."""
    targets = [f for f in form if f.refilled]

    @user_errors
    def run_load_recipe(path):
        if not path:
            return [gr.update() for _ in targets]
        request = engine.recipe_request(path)
        check_recipe_tab(request, view.modality.id)
        request = engine.validate(request)
        gr.Info(recipe_loaded_message(request))
        updates = []
        for f in targets:
            if f.owner is None:
                updates.append(gr.update(value=f.recipe_value(request)))
            elif f.owner == request.preprocessor and f.param in request.preprocessor_params:
                updates.append(gr.update(value=f.recipe_value(request), visible=True))
            else:
                updates.append(gr.update(visible=f.owner == request.preprocessor))
        return updates

    view.recipe_file.upload(
        run_load_recipe,
        inputs=view.recipe_file,
        outputs=[view.fields[f.name] for f in targets],
        # A refused recipe says so once, by the file, not as an "Error" over every control.
        show_progress_on=[view.recipe_file],
        **endpoint(
            run_load_recipe,
            f"{view.modality.id}_load_recipe",
            "The settings stored in a PNG made by this app (or its JSON recipe), to refill the tab.",
        ),
        **light_work(engine.settings),
    )


def wire_parameter_display(view: TabView, form: Sequence[FormField]) -> None:
    """Show the chosen preprocessor's parameters (and detect resolution when it uses one)."""
    owners = [f.owner for f in form if f.owner is not None]
    outputs = [view.fields["detect_resolution"]]
    outputs += [view.fields[f.name] for f in form if f.owner is not None]

    def show_params(chosen: str):
        updates = [gr.update(visible=get_preprocessor(chosen).uses_detect_resolution)]
        updates += [gr.update(visible=owner == chosen) for owner in owners]
        # One output (a modality whose preprocessors have no parameters) takes one update: a
        # list would become the slider's value and break every button of the tab.
        return updates[0] if len(updates) == 1 else updates

    view.preprocessor.change(
        show_params, inputs=view.preprocessor, outputs=outputs, api_visibility="private"
    )


# --- shared helpers -------------------------------------------------------------------------------


def build_request(
    modality: Modality, form: Sequence[FormField], values: Sequence[Any]
) -> tuple[Any, GenerationRequest]:
    """The engine's input and the request, from a tab's form values (the image first)."""
    image, *rest = values
    request = GenerationRequest(modality=modality.id, **request_values(form[1:], rest))
    return read_source(modality, image), request


def read_source(modality: Modality, value: Any) -> Any:
    """The tab's input for the engine: a canvas drawing as an array, an upload as its file."""
    if modality.input_kind == INPUT_CANVAS:
        return canvas_to_image(value)
    if value is None:
        raise gr.Error("Upload an image first (or pick an example below).")
    return value


def tab_container(title: str | None = None):
    """A `gr.Blocks` (titled `title`) when built alone, a `gr.Column` inside a page being built.

    A nested `gr.Blocks` builds a whole server app of its own: with a dozen tabs that made start-up
    several seconds slower for nothing.
    """
    from gradio.context import get_blocks_context

    if get_blocks_context() is not None:
        return gr.Column()
    return gr.Blocks(title=title) if title else gr.Blocks()


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


def show_result(result: GenerationResult, compare: bool = False) -> tuple:
    """A run's outputs: gallery, recipe, seed used, and the comparison slider (after a Compare)."""
    items = gallery_items(result)
    slider = gr.update(visible=False)
    if compare:  # the same files as the gallery's two images
        slider = gr.update(value=(items[-2][0], items[-1][0]), visible=True)
    return items, result.recipe, result.recipe["seed"], slider


def show_preview(step: int, total: int, images: Sequence[np.ndarray]) -> tuple:
    """The outputs while a run goes: the images forming (cheaply decoded, see
    `controlnet_core.timeline.LivePreview`) in the gallery; the rest as it was."""
    items = []
    for image in images:
        picture = Image.fromarray(image)
        if min(picture.size) < DISPLAY_MIN_SIDE:  # latents' size: smooth, not blocky, when enlarged
            factor = math.ceil(DISPLAY_MIN_SIDE / min(picture.size))
            picture = picture.resize(
                (picture.width * factor, picture.height * factor), Image.BILINEAR
            )
        items.append((picture, f"{FORMING} step {step} of {total}"))
    return items, gr.skip(), gr.skip(), gr.skip()


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
        path = folder / f"{index:02d}_seed{recipe['image_seed']}.png"
        save_png(upscale_for_display(image), recipe, path)
        items.append((str(path), caption))
    return items
