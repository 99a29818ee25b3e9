"""What a generation asks for: `GenerationRequest` (with `ControlSpec` per extra ControlNet), its
limits, and the checks that turn raw values (from a form, an API call or a recipe) into a valid request.

Every refusal is a `FieldError` whose path names the field, e.g. `("extra_controls", 1,
"guidance_start")`; server limits (steps, images, resolution) come in as arguments, so this module
knows nothing of settings or models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from controlnet_core.errors import FieldError, PathPart, shown
from controlnet_core.modalities import get_modality
from controlnet_core.preprocessors import (
    MAX_DETECT_RESOLUTION,
    MIN_DETECT_RESOLUTION,
    get_preprocessor,
)
from controlnet_core.settings import parse_flag

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
MAX_GUIDANCE_SCALE = 30.0
MAX_CONDITIONING_SCALE = 2.0
MAX_EXTRA_CONTROLS = 3
MAX_SWEEP_VALUES = 8
# How the ControlNet and the prompt share the work (the A1111 extension's three modes).
CONTROL_MODES = {
    "balanced": "Balanced",
    "prompt": "My prompt is more important",
    "controlnet": "ControlNet is more important",
}
# A sweep varies one field of the main ControlNet; the API names it by its short name.
SWEEP_FIELDS = {
    "strength": "conditioning_scale",
    "start": "guidance_start",
    "end": "guidance_end",
}
SWEEP_KINDS = tuple(SWEEP_FIELDS)


@dataclass(frozen=True)
class ControlSpec:
    """An additional ControlNet of a multi-ControlNet request, with its own strength and window."""

    modality: str
    preprocessor: str | None = None
    preprocessor_params: Mapping[str, Any] = field(default_factory=dict)
    detect_resolution: int = 512
    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0


CONTROL_FIELDS = tuple(f.name for f in fields(ControlSpec))


@dataclass(frozen=True)
class GenerationRequest(ControlSpec):
    """Every setting of one generation. See `Engine.validate` for the allowed ranges.

    Its own fields (those of `ControlSpec`) are the main ControlNet's. `extra_controls` adds more
    ControlNets (multi-ControlNet); their images are passed to `Engine.generate` alongside the main
    control image. Build it with keyword arguments.
    """

    prompt: str = ""
    negative_prompt: str = ""
    guess_mode: bool = False
    steps: int = 20
    guidance_scale: float = 7.5
    seed: int = 0
    num_images: int = 1
    resolution: int = 512
    scheduler: str = "UniPC"
    control_mode: str = "balanced"
    extra_controls: tuple[ControlSpec, ...] = ()

    def main_control(self) -> ControlSpec:
        """The main ControlNet's fields as a `ControlSpec`."""
        return ControlSpec(**{name: getattr(self, name) for name in CONTROL_FIELDS})

    def controls(self) -> list[ControlSpec]:
        """Every ControlNet of the request, the main one first."""
        return [self.main_control(), *self.extra_controls]


REQUEST_FIELDS = tuple(f.name for f in fields(GenerationRequest))


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a batch that starts at `seed`, wrapping past MAX_SEED to 0."""
    return (int(seed) + index) % (MAX_SEED + 1)


def control_labels(request: GenerationRequest) -> list[str]:
    """The modality label of each ControlNet of `request`, the main one first."""
    return [get_modality(spec.modality).label for spec in request.controls()]


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def check_number(
    path: tuple[PathPart, ...] | str,
    value: Any,
    low: float,
    high: float,
    integer: bool = False,
    name: str | None = None,
) -> float | int:
    """`value` as a number in [low, high] (a whole one when `integer`); FieldError at `path`."""
    path = (path,) if isinstance(path, str) else path
    lo, hi = _fmt(low), _fmt(high)
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or value is None:
        raise FieldError(path, f"must be {kind} between {lo} and {hi}; got {shown(value)}", name)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise FieldError(
            path, f"must be {kind} between {lo} and {hi}; got {shown(value)}", name
        ) from None
    if not math.isfinite(result) or not low <= result <= high:
        raise FieldError(path, f"must be between {lo} and {hi}; got {shown(value)}", name)
    if integer:
        if result != int(result):
            raise FieldError(
                path, f"must be {kind} between {lo} and {hi}; got {shown(value)}", name
            )
        return int(result)
    return result


def validate_control(spec: ControlSpec) -> ControlSpec:
    """`spec` normalised (preprocessor defaulted, params filled); FieldError naming the field."""
    try:
        modality = get_modality(spec.modality)
    except ValueError as error:
        raise FieldError(("modality",), str(error), name="") from None
    preprocessor = check_preprocessor(modality.id, spec.preprocessor)
    params = get_preprocessor(preprocessor).validate_params(spec.preprocessor_params)
    start = check_number("guidance_start", spec.guidance_start, 0.0, 1.0)
    end = check_number("guidance_end", spec.guidance_end, 0.0, 1.0)
    if start >= end:
        raise FieldError(("guidance_start",), f"must be less than the end ({end:g}); got {start:g}")
    return ControlSpec(
        modality=modality.id,
        preprocessor=preprocessor,
        preprocessor_params=params,
        detect_resolution=check_detect_resolution(spec.detect_resolution),
        conditioning_scale=check_number(
            "conditioning_scale", spec.conditioning_scale, 0.0, MAX_CONDITIONING_SCALE
        ),
        guidance_start=start,
        guidance_end=end,
    )


def check_preprocessor(modality_id: str, preprocessor: str | None) -> str:
    """`preprocessor` (the modality's default when None) if the modality offers it."""
    modality = get_modality(modality_id)
    preprocessor = preprocessor or modality.default_preprocessor
    if preprocessor not in modality.preprocessors:
        raise FieldError(
            ("preprocessor",),
            f"must be one of {list(modality.preprocessors)} for {modality.label}; "
            f"got {shown(preprocessor)}",
        )
    return preprocessor


def check_detect_resolution(value: Any) -> int:
    return check_number(
        "detect_resolution", value, MIN_DETECT_RESOLUTION, MAX_DETECT_RESOLUTION, integer=True
    )


def check_resolution(value: Any, high: int, low: int = 64) -> int:
    """The generation's short side: a multiple of 64 in [low, high]."""
    result = check_number("resolution", value, low, high, integer=True)
    if result % 64:
        raise FieldError(
            ("resolution",), f"must be a multiple of 64 between {low} and {high}; got {result}"
        )
    return result


def check_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError((name,), f"must be text; got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise FieldError(
            (name,), f"must be at most {MAX_PROMPT_CHARS} characters; got {len(value)}"
        )
    return value


def check_flag(name: str, value: Any) -> bool:
    try:
        return parse_flag(name, value)
    except ValueError:
        raise FieldError((name,), f"must be true or false; got {shown(value)}") from None


def check_choice(name: str, value: Any, choices: Any) -> Any:
    if value not in choices:
        raise FieldError((name,), f"must be one of {list(choices)}; got {shown(value)}")
    return value


def validate_extra_controls(extra: Any) -> tuple[ControlSpec, ...]:
    extra = tuple(extra or ())
    if len(extra) > MAX_EXTRA_CONTROLS:
        raise FieldError(
            ("extra_controls",),
            f"must hold at most {MAX_EXTRA_CONTROLS} ControlNets; got {len(extra)}",
        )
    checked = []
    for index, spec in enumerate(extra):
        try:
            checked.append(validate_control(spec))
        except FieldError as error:
            raise error.within("extra_controls", index) from None
    return tuple(checked)


def check_sweep(kind: Any, values: Any, main: ControlSpec) -> list[float]:
    """The values of a sweep of the main ControlNet's `kind` ("strength", "start" or "end"), each
    checked against that field's range and the window it must keep (start < end)."""
    if kind not in SWEEP_KINDS:
        raise FieldError(
            ("sweep_parameter",),
            f"must be one of {list(SWEEP_KINDS)}; got {shown(kind)}",
            name="sweep kind",
        )
    values = list(values)
    if not 1 <= len(values) <= MAX_SWEEP_VALUES:
        raise FieldError(
            ("sweep_values",),
            f"takes 1 to {MAX_SWEEP_VALUES} values; got {len(values)}",
            name="a sweep",
        )
    checked = []
    for value in values:
        name = f"sweep {kind}"
        high = MAX_CONDITIONING_SCALE if kind == "strength" else 1.0
        value = float(check_number(("sweep_values",), value, 0.0, high, name=name))
        if kind == "start" and value >= main.guidance_end:
            raise FieldError(
                ("sweep_values",),
                f"{value:g} must be less than the end ({main.guidance_end:g})",
                name=name,
            )
        if kind == "end" and value <= main.guidance_start:
            raise FieldError(
                ("sweep_values",),
                f"{value:g} must exceed the start ({main.guidance_start:g})",
                name,
            )
        checked.append(value)
    return checked
