"""The words of the page that depend on the backend: its note, the controls' starting values, and
what to do when weights are missing. The core states the facts (`Engine.backend`, `has_controlnet`,
`resolution_range`, a `WeightsUnavailableError`'s alternative); this module words them.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlnet_core import Engine, WeightsUnavailableError, get_modality, get_preprocessor
from controlnet_core.modalities import UNION_CONTROL_TYPES

TOY_PROMPT = "a red star and a blue circle on a white background"

BACKEND_NOTES = {
    "real": "Stable Diffusion 1.5 + ControlNet 1.1 weights.",
    "toy": "Toy model: shapes only, trained in this repo (64×64, upscaled for display). "
    f"Try prompts like “{TOY_PROMPT}”: say the background colour, the toy picks one at random "
    "otherwise.",
    "tiny": "Tiny random weights: the real code path for tests; the images are noise.",
}
SDXL_NOTE = (
    "SDXL + its ControlNets: diffusers' Canny and Depth SDXL ControlNets, and xinsir's union "
    "ControlNet for the other maps."
)

UNION_TYPE_NAMES = {number: name for name, number in UNION_CONTROL_TYPES.items()}


@dataclass(frozen=True)
class StartingValues:
    """Starting values of a tab's controls on a backend."""

    resolution: int
    steps: int
    guidance_scale: float
    prompt: str | None  # None: use the modality's own example prompt


_STARTING_VALUES = {
    "real": StartingValues(resolution=512, steps=20, guidance_scale=7.5, prompt=None),
    # The toy model's best trade-off between colours and edges (its model card: CFG 3).
    "toy": StartingValues(resolution=64, steps=20, guidance_scale=3.0, prompt=TOY_PROMPT),
    "tiny": StartingValues(resolution=64, steps=8, guidance_scale=7.5, prompt=None),
}


# SDXL was trained at 1024² (up to the server's --max-resolution) and wants less guidance.
_SDXL_STARTING_VALUES = StartingValues(resolution=1024, steps=25, guidance_scale=5.0, prompt=None)


def starting_values(engine: Engine) -> StartingValues:
    """The backend's starting values, within the server's and the backend's limits."""
    values = _STARTING_VALUES.get(engine.backend, _STARTING_VALUES["real"])
    if engine.backend == "real" and engine.family == "sdxl":
        values = _SDXL_STARTING_VALUES
    low, high = engine.resolution_range()
    resolution = max(low, min(values.resolution, high))
    steps = min(values.steps, engine.settings.max_steps)
    return StartingValues(resolution, steps, values.guidance_scale, values.prompt)


def can_generate(engine: Engine, modality_id: str) -> bool:
    """Whether this backend has the modality's ControlNet (a preview works on every backend)."""
    return engine.has_controlnet(modality_id)


def backend_note(engine: Engine, modality_id: str | None = None, hardware: bool = True) -> str:
    """What the backend is and, with `hardware`, the device and dtype it runs on (deciding them
    imports torch); for the toy model and SDXL also whether it covers the tab."""
    note = BACKEND_NOTES.get(engine.backend, "")
    if engine.backend == "real" and engine.family == "sdxl":
        note = SDXL_NOTE
        if modality_id is not None:
            modality = get_modality(modality_id)
            if not can_generate(engine, modality_id):
                closest = (
                    f" The closest is {modality.sdxl_closest}." if modality.sdxl_closest else ""
                )
                return (
                    f"SDXL base: this app has no SDXL ControlNet for {modality.label}.{closest} "
                    "Preview map works; an SD1.5 base covers this tab."
                )
            control_type = modality.control_type_for("sdxl")
            if modality.uses_union("sdxl") and control_type is not None:
                note = (
                    f"SDXL + xinsir's union ControlNet, which reads this map as its "
                    f"“{UNION_TYPE_NAMES[control_type]}” type."
                )
    if modality_id is None or can_generate(engine, modality_id):
        return f"{note} Running on {engine.device_summary()}." if hardware else note
    modality = get_modality(modality_id)
    return (
        f"Toy model (shapes only, trained in this repo): it has no {modality.label} "
        f"ControlNet. This tab needs the real weights ({modality.controlnet_id}): "
        "hub access or --controlnet-dir. Preview map works offline."
    )


def missing_weights_message(error: WeightsUnavailableError) -> str:
    """The core's message (what is missing, then how to get it) with, in between, which
    preprocessor of the same tab works offline."""
    if error.preprocessor is None:
        return str(error)
    alternative = error.offline_alternative
    if alternative is None:
        hint = "This tab has no offline alternative for it."
    elif alternative == "none":
        hint = (
            "Works offline in this tab: choose Preprocessor “None” and upload a ready control map."
        )
    else:
        hint = f"Works offline in this tab: choose Preprocessor “{get_preprocessor(alternative).label}”."
    return f"{error.missing}\n{hint}\n{error.how}".rstrip()
