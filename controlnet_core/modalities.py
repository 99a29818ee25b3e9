"""The modality registry: every ControlNet modality is one data entry.

A modality names its SD1.5 ControlNet 1.1 weights, the preprocessors that turn an upload into a control
map (ids into `controlnet_core.preprocessors.PREPROCESSORS`, the first is the default), what the tab's
input is (an uploaded image or a drawing canvas) and its UI defaults. Adding a modality means adding one
entry here (plus, at most, a small tab module in `demos/` for controls no other tab has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

INPUT_IMAGE = "image"
INPUT_CANVAS = "canvas"


@dataclass(frozen=True)
class Modality:
    """One ControlNet modality.

    `controlnet_key` names the weights independently of the backend ("canny", "scribble", ...): the real
    backend maps it to `controlnet_id`, the offline backends to their own nets. Two modalities may share a
    key (the Sketch canvas uses the scribble ControlNet).
    """

    id: str
    label: str
    controlnet_id: str
    controlnet_key: str
    preprocessors: tuple[str, ...]
    description: str
    input_kind: str = INPUT_IMAGE
    default_prompt: str = ""
    default_conditioning_scale: float = 1.0
    examples: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.preprocessors:
            raise ValueError(f"modality {self.id!r} needs at least one preprocessor")
        if self.input_kind not in (INPUT_IMAGE, INPUT_CANVAS):
            raise ValueError(f"modality {self.id!r}: unknown input_kind {self.input_kind!r}")

    @property
    def default_preprocessor(self) -> str:
        return self.preprocessors[0]


_HUB = "lllyasviel/"

_ENTRIES = (
    Modality(
        id="canny",
        label="Canny",
        controlnet_id=_HUB + "control_v11p_sd15_canny",
        controlnet_key="canny",
        preprocessors=("canny", "none"),
        description="Canny edges of a photo: thin, exact outlines the image must follow.",
        default_prompt="a stone bird statue in a garden, best quality",
    ),
    Modality(
        id="scribble",
        label="Scribble",
        controlnet_id=_HUB + "control_v11p_sd15_scribble",
        controlnet_key="scribble",
        preprocessors=("scribble_threshold", "scribble_edges", "none"),
        description="A rough drawing, uploaded: dark lines on a light background (or white on black).",
        default_prompt="a cozy cabin by a lake, watercolor",
    ),
    Modality(
        id="sketch",
        label="Sketch",
        controlnet_id=_HUB + "control_v11p_sd15_scribble",
        controlnet_key="scribble",
        preprocessors=("sketch_canvas",),
        description="Draw on the canvas: your strokes become a scribble map.",
        input_kind=INPUT_CANVAS,
        default_prompt="a hot air balloon over mountains",
    ),
)

MODALITIES: MappingProxyType[str, Modality] = MappingProxyType({m.id: m for m in _ENTRIES})


def get_modality(modality_id: str) -> Modality:
    """The registry entry for `modality_id`; ValueError naming the known ids otherwise."""
    try:
        return MODALITIES[modality_id]
    except KeyError:
        known = ", ".join(MODALITIES)
        raise ValueError(f"modality must be one of: {known}; got {modality_id!r}") from None
