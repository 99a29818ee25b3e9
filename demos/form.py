"""Forms declared once: each field names the request field it fills, its public API parameter, its
page label, how its component is made and how a recipe writes a value back into it.

A tab's request builder, its recipe refill, its API parameter names (in order), its event inputs and
the labels its errors use are all derived from its list of `FormField`s, so a new field is one entry.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from controlnet_core import (
    CONTROL_MODES,
    MAX_CONDITIONING_SCALE,
    MAX_SEED,
    SCHEDULER_NAMES,
    Engine,
    GenerationRequest,
    ParamSpec,
    parse_flag,
)
from demos.texts import starting_values

Component = gr.components.Component


@dataclass(frozen=True)
class FormField:
    """One input of a form.

    `name` is its API parameter name; `target` the `GenerationRequest` field it fills (None when the
    handler reads it itself: the image, the seed's "randomize" box); `owner` the preprocessor a
    parameter belongs to (it fills `preprocessor_params[param]` when that preprocessor is chosen);
    `refill` the value a loaded recipe writes back (default: the request's `target` field; None for
    fields a recipe leaves alone).
    """

    name: str
    label: str
    make: Callable[[], Component]
    target: str | None = None
    owner: str | None = None
    param: str | None = None
    refill: Callable[[GenerationRequest], Any] | None = None

    def recipe_value(self, request: GenerationRequest) -> Any:
        if self.refill is not None:
            return self.refill(request)
        if self.owner is not None:
            return request.preprocessor_params.get(self.param)
        return getattr(request, self.target) if self.target else None

    @property
    def refilled(self) -> bool:
        return self.refill is not None or self.target is not None or self.owner is not None


def request_values(form: Sequence[FormField], values: Sequence[Any]) -> dict[str, Any]:
    """The form's values as `GenerationRequest` keyword arguments (the chosen preprocessor's
    parameters only), with the seed drawn when "randomize" is on."""
    named = dict(zip((f.name for f in form), values, strict=True))
    fields = {f.target: named[f.name] for f in form if f.target}
    for name in ("prompt", "negative_prompt"):  # an API call may send null: no text
        if name in fields and fields[name] is None:
            fields[name] = ""
    chosen = fields.get("preprocessor")
    fields["preprocessor_params"] = {
        f.param: named[f.name] for f in form if f.owner is not None and f.owner == chosen
    }
    fields["seed"] = choose_seed(named.get("seed"), named.get("randomize_seed", False))
    fields["control_mode"] = fields.get("control_mode") or "balanced"
    return fields


def choose_seed(seed: Any, randomize: Any) -> Any:
    """The seed to use: a fresh random one when asked, else the given one (the engine checks it)."""
    if parse_flag("randomize_seed", randomize):
        return random.randint(0, MAX_SEED)
    if seed is None:
        raise gr.Error(f"Seed: must be a whole number between 0 and {MAX_SEED}")
    return seed


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


def slider(
    label: str, low: float, high: float, step: float, value: float
) -> Callable[[], Component]:
    return lambda: gr.Slider(label=label, minimum=low, maximum=high, step=step, value=value)


def text_fields(engine: Engine, default_prompt: str) -> list[FormField]:
    """Prompt and negative prompt."""
    start = starting_values(engine)
    prompt = start.prompt or default_prompt
    return [
        FormField(
            "prompt",
            "Prompt",
            lambda: gr.Textbox(
                label="Prompt",
                value=prompt,
                lines=2,
                max_length=2000,
                elem_classes=["cn-prompt"],
            ),
            target="prompt",
        ),
        FormField(
            "negative_prompt",
            "Negative prompt",
            lambda: gr.Textbox(
                label="Negative prompt",
                value="lowres, bad anatomy, worst quality, low quality",
                max_length=2000,
            ),
            target="negative_prompt",
        ),
    ]


def window_fields(
    labels: tuple[str, str, str], strength: float, prefix: str = ""
) -> list[FormField]:
    """One ControlNet's strength, start and end (`prefix` names a Combine unit's API parameters)."""
    names = ("conditioning_scale", "guidance_start", "guidance_end")
    api = ("strength", "start", "end") if prefix else names
    makers = (
        slider(labels[0], 0.0, MAX_CONDITIONING_SCALE, 0.05, strength),
        slider(labels[1], 0.0, 1.0, 0.01, 0.0),
        slider(labels[2], 0.0, 1.0, 0.01, 1.0),
    )
    return [
        FormField(f"{prefix}{a}", label, make, target=name)
        for a, label, make, name in zip(api, labels, makers, names, strict=True)
    ]


def mode_fields() -> list[FormField]:
    """Guess mode and control mode."""
    return [
        FormField(
            "guess_mode",
            "Guess mode",
            lambda: gr.Checkbox(
                label="Guess mode (ControlNet recognises the content; prompt optional)",
                value=False,
            ),
            target="guess_mode",
        ),
        FormField(
            "control_mode",
            "Control mode",
            lambda: gr.Radio(
                label="Control mode",
                choices=[(label, key) for key, label in CONTROL_MODES.items()],
                value="balanced",
            ),
            target="control_mode",
        ),
    ]


def sampling_fields(engine: Engine, with_num_images: bool) -> list[FormField]:
    """Steps, CFG, seed (+ randomize), number of images, resolution and sampler."""
    start = starting_values(engine)
    settings = engine.settings
    low, high = engine.resolution_range()
    scheduler = settings.scheduler if settings.scheduler in SCHEDULER_NAMES else "UniPC"
    fields = [
        FormField(
            "steps",
            "Steps",
            lambda: limited_slider("Steps", 1, settings.max_steps, 1, start.steps),
            target="steps",
        ),
        FormField(
            "guidance_scale",
            "Guidance scale (CFG)",
            slider("Guidance scale (CFG)", 0.0, 30.0, 0.1, start.guidance_scale),
            target="guidance_scale",
        ),
        FormField(
            "seed",
            "Seed",
            lambda: gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED),
            refill=lambda request: request.seed,
        ),
        FormField(
            "randomize_seed",
            "Randomize seed",
            lambda: gr.Checkbox(label="Randomize seed", value=True),
            refill=lambda request: False,
        ),
    ]
    if with_num_images:
        fields.append(
            FormField(
                "num_images",
                "Number of images",
                lambda: limited_slider("Number of images", 1, settings.max_images, 1, 1),
                target="num_images",
            )
        )
    # On SDXL a size is one of its trained aspect buckets, scaled to this side's square's area.
    label = (
        "Resolution (pixels ≈ this², SDXL sizes)"
        if engine.sizes_by_area
        else "Resolution (short side)"
    )
    fields += [
        FormField(
            "resolution",
            label,
            lambda: limited_slider(label, low, high, 64, start.resolution),
            target="resolution",
        ),
        FormField(
            "scheduler",
            "Sampler",
            lambda: gr.Dropdown(label="Sampler", choices=list(SCHEDULER_NAMES), value=scheduler),
            target="scheduler",
        ),
    ]
    return fields


def param_field(owner: str, spec: ParamSpec, visible: bool) -> FormField:
    """A preprocessor parameter, rendered from its `ParamSpec`."""

    def make() -> Component:
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

    return FormField(f"{owner}_{spec.name}", spec.label, make, owner=owner, param=spec.name)


def by_name(form: Sequence[FormField]) -> dict[str, FormField]:
    return {f.name: f for f in form}
