"""The modality registry: every ControlNet modality is one data entry.

A modality names its SD1.5 ControlNet 1.1 weights (and its SDXL ControlNet, where there is one: a
dedicated one, or the union ControlNet with the control type it reads the map as), the preprocessors that turn an upload into a control
map (ids into `controlnet_core.preprocessors.PREPROCESSORS`, the first is the default), what the tab's
input is (an uploaded image or a drawing canvas), its example prompt and default strength. Adding a
modality means adding one entry here (plus, at most, a small tab module in `demos/` for controls no
other tab has).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from controlnet_core.errors import shown

INPUT_IMAGE = "image"
INPUT_CANVAS = "canvas"

# One SDXL ControlNet for many kinds of map: it is told which kind each map is by a control type.
SDXL_UNION_ID = "xinsir/controlnet-union-sdxl-1.0"
# The union model's control types (its model card; the ProMax weights add 6 tile and 7 repaint).
UNION_CONTROL_TYPES = {
    "openpose": 0,
    "depth": 1,
    "thick line": 2,  # scribble, HED / soft edge
    "thin line": 3,  # canny, M-LSD, lineart
    "normal": 4,
    "segment": 5,
}


@dataclass(frozen=True)
class Modality:
    """One ControlNet modality.

    `controlnet_key` names the weights independently of the backend ("canny", "scribble", ...): the real
    backend maps it to `controlnet_id`, the offline backends to their own nets. Two modalities may share a
    key (the Sketch canvas uses the scribble ControlNet). `label_map`: the map's colours are class labels,
    so it is resized with nearest neighbour (blending two class colours would invent a third class).
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
    label_map: bool = False
    sdxl_controlnet_id: str | None = None  # None: no SDXL ControlNet for it in this app
    # The union model's control type for this map: what it is read as when the ControlNet that
    # runs is a union one (the registry's, or one a user put in a dedicated model's place).
    sdxl_control_type: int | None = None
    sdxl_closest: str = ""  # without an SDXL ControlNet: what comes closest

    def __post_init__(self) -> None:
        if not self.preprocessors:
            raise ValueError(f"modality {self.id!r} needs at least one preprocessor")
        if self.input_kind not in (INPUT_IMAGE, INPUT_CANVAS):
            raise ValueError(f"modality {self.id!r}: unknown input_kind {self.input_kind!r}")
        if self.uses_union("sdxl") and self.sdxl_control_type is None:
            raise ValueError(f"modality {self.id!r}: the union ControlNet needs a control type")

    @property
    def default_preprocessor(self) -> str:
        return self.preprocessors[0]

    def controlnet_for(self, family: str) -> str | None:
        """The hub id of this modality's ControlNet for a base family ("sd15" or "sdxl")."""
        return self.sdxl_controlnet_id if family == "sdxl" else self.controlnet_id

    def control_type_for(self, family: str) -> int | None:
        """The control type its map is read as by a union ControlNet of the family."""
        return self.sdxl_control_type if family == "sdxl" else None

    def uses_union(self, family: str) -> bool:
        """Whether the family's ControlNet for it is the union one (shared by several tabs)."""
        return self.controlnet_for(family) == SDXL_UNION_ID


_HUB = "lllyasviel/"

_ENTRIES = (
    Modality(
        id="canny",
        label="Canny",
        controlnet_id=_HUB + "control_v11p_sd15_canny",
        sdxl_controlnet_id="diffusers/controlnet-canny-sdxl-1.0",
        sdxl_control_type=UNION_CONTROL_TYPES["thin line"],
        controlnet_key="canny",
        preprocessors=("canny", "none"),
        description="Canny edges of a photo: thin, exact outlines the image must follow.",
        default_prompt="a stone bird statue in a garden, best quality",
    ),
    Modality(
        id="scribble",
        label="Scribble",
        controlnet_id=_HUB + "control_v11p_sd15_scribble",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thick line"],
        controlnet_key="scribble",
        preprocessors=("scribble_threshold", "scribble_edges", "scribble_hed", "none"),
        description="A rough drawing, uploaded: dark lines on a light background (or white on black).",
        default_prompt="a cozy cabin by a lake, watercolor",
    ),
    Modality(
        id="sketch",
        label="Sketch",
        controlnet_id=_HUB + "control_v11p_sd15_scribble",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thick line"],
        controlnet_key="scribble",
        preprocessors=("sketch_canvas", "none"),
        description="Draw on the canvas (pick the brush in its left toolbar first: the canvas ignores "
        "the mouse until then); your strokes become a scribble map.",
        input_kind=INPUT_CANVAS,
        default_prompt="a hot air balloon over mountains",
    ),
    Modality(
        id="softedge",
        label="Soft edge",
        controlnet_id=_HUB + "control_v11p_sd15_softedge",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thick line"],
        controlnet_key="softedge",
        preprocessors=("hed", "pidinet", "hed_safe", "pidinet_safe", "softedge_classical", "none"),
        description="Soft, HED-like edges of a photo: keeps the layout, frees the details.",
        default_prompt="a cozy living room with plants, warm light, best quality",
    ),
    Modality(
        id="mlsd",
        label="M-LSD lines",
        controlnet_id=_HUB + "control_v11p_sd15_mlsd",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thin line"],
        controlnet_key="mlsd",
        preprocessors=("mlsd", "lines_hough", "none"),
        description="Straight line segments: architecture and interiors.",
        default_prompt="a modern building facade, architectural photo",
    ),
    Modality(
        id="depth",
        label="Depth",
        controlnet_id=_HUB + "control_v11f1p_sd15_depth",
        sdxl_controlnet_id="diffusers/controlnet-depth-sdxl-1.0",
        sdxl_control_type=UNION_CONTROL_TYPES["depth"],
        controlnet_key="depth",
        preprocessors=("midas", "zoe", "none"),
        description="A depth map (bright = near), estimated from a photo or uploaded as is.",
        default_prompt="a stone arch in a misty forest, best quality",
    ),
    Modality(
        id="normal",
        label="Normal map",
        controlnet_id=_HUB + "control_v11p_sd15_normalbae",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["normal"],
        controlnet_key="normal",
        preprocessors=("normalbae", "normal_from_depth", "normal_midas", "none"),
        description="Surface normals: estimated from a photo, or computed from an uploaded depth map.",
        default_prompt="a marble sculpture, studio lighting",
    ),
    Modality(
        id="pose",
        label="Human pose",
        controlnet_id=_HUB + "control_v11p_sd15_openpose",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["openpose"],
        controlnet_key="pose",
        preprocessors=("openpose", "mediapipe_pose", "none"),
        description="An OpenPose skeleton: detected in a photo, or a preset pose drawn for you.",
        default_prompt="an astronaut in a white suit, full body, best quality",
    ),
    Modality(
        id="seg",
        label="Segmentation",
        controlnet_id=_HUB + "control_v11p_sd15_seg",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["segment"],
        controlnet_key="seg",
        preprocessors=("seg_upernet", "seg_palette_snap", "none"),
        description="A map of ADE20K classes in their colours: segmented from a photo or painted.",
        default_prompt="a lake in the mountains at sunrise, best quality",
        label_map=True,
    ),
    Modality(
        id="lineart",
        label="Lineart",
        controlnet_id=_HUB + "control_v11p_sd15_lineart",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thin line"],
        controlnet_key="lineart",
        preprocessors=("lineart", "lineart_coarse", "lineart_standard", "none"),
        description="Line drawing of a photo (white lines on black), or an uploaded line drawing.",
        default_prompt="a detailed ink illustration of a cat, best quality",
    ),
    Modality(
        id="lineart_anime",
        label="Anime lineart",
        controlnet_id=_HUB + "control_v11p_sd15s2_lineart_anime",
        sdxl_controlnet_id=SDXL_UNION_ID,
        sdxl_control_type=UNION_CONTROL_TYPES["thin line"],
        controlnet_key="lineart_anime",
        preprocessors=("lineart_anime", "lineart_standard", "none"),
        description="Anime-style line art (this ControlNet works best with anime base models).",
        default_prompt="an anime girl with a red scarf, masterpiece, best quality",
    ),
    Modality(
        id="shuffle",
        label="Content shuffle",
        controlnet_id=_HUB + "control_v11e_sd15_shuffle",
        sdxl_closest="an IP-Adapter, which takes a picture's style and colours (not in this app)",
        controlnet_key="shuffle",
        preprocessors=("shuffle", "none"),
        description="A shuffled photo: the result takes its colours and style, not its layout.",
        default_prompt="a city street at night, best quality",
    ),
)

MODALITIES: MappingProxyType[str, Modality] = MappingProxyType({m.id: m for m in _ENTRIES})


def get_modality(modality_id: str) -> Modality:
    """The registry entry for `modality_id`; ValueError naming the known ids otherwise."""
    try:
        return MODALITIES[modality_id]
    except (KeyError, TypeError):
        known = ", ".join(MODALITIES)
        raise ValueError(f"modality must be one of: {known}; got {shown(modality_id)}") from None
