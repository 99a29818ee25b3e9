"""ControlNet demo suite core: a gradio-free library, and its public surface.

The UI (`demos/`, `app.py`) and scripts import from here only:

- `Engine` runs a backend: `validate`, `control_map`, `generate`, `compare`, `sweep`, and the facts
  a UI words (`backend`, `has_controlnet`, `resolution_range`, `device_summary`).
- `GenerationRequest` / `ControlSpec` say what to make; `GenerationResult` is what comes back;
  a `PreviewCallback` sees the images forming while a run samples.
- The registries: `MODALITIES` (one entry per modality) and `PREPROCESSORS` (one interface for all).
- Recipes: `read_recipe`, `request_from_recipe`, `recipe_for_image`, `save_png`.
- Errors: `FieldError` (a refused value, with the path of its field), `WeightsUnavailableError`,
  `ModelFamilyError` (a base model or ControlNet of a family this app cannot pair),
  `GenerationCancelled` (raised by a progress callback to stop a run).
- `Settings` and how they are read (`settings_from_cli`, `check_can_start`).

Importing this package loads no weights and does not import torch.
"""

from controlnet_core.engine import (
    BACKEND_MAX_RESOLUTION,
    Engine,
    GenerationCancelled,
    GenerationResult,
    ProgressCallback,
)
from controlnet_core.errors import FieldError, field_name, shown
from controlnet_core.families import ModelFamilyError
from controlnet_core.images import check_pixels
from controlnet_core.modalities import INPUT_CANVAS, INPUT_IMAGE, MODALITIES, Modality, get_modality
from controlnet_core.preprocessors import (
    MAX_DETECT_RESOLUTION,
    MIN_DETECT_RESOLUTION,
    PREPROCESSORS,
    ParamSpec,
    PreprocessorSpec,
    WeightsUnavailableError,
    get_preprocessor,
    preprocessor_runs_here,
)
from controlnet_core.preprocessors.pose import POSE_PRESETS, render_pose_preset
from controlnet_core.preprocessors.segmentation import (
    PAINT_CLASSES,
    class_color,
    hex_color,
    snap_to_palette,
)
from controlnet_core.recipes import read_recipe, recipe_for_image, request_from_recipe, save_png
from controlnet_core.request import (
    CONTROL_MODES,
    MAX_CONDITIONING_SCALE,
    MAX_EXTRA_CONTROLS,
    MAX_SEED,
    MAX_SWEEP_VALUES,
    SWEEP_KINDS,
    ControlSpec,
    GenerationRequest,
    control_labels,
)
from controlnet_core.settings import (
    FEW_STEP_SCHEDULER,
    SCHEDULER_NAMES,
    Settings,
    check_can_start,
    parse_flag,
    settings_from_cli,
)
from controlnet_core.storage import ServerFolder
from controlnet_core.timeline import PreviewCallback
from controlnet_core.toy.lab import TrainingLab

__all__ = [
    "BACKEND_MAX_RESOLUTION",
    "CONTROL_MODES",
    "FEW_STEP_SCHEDULER",
    "INPUT_CANVAS",
    "INPUT_IMAGE",
    "MAX_CONDITIONING_SCALE",
    "MAX_DETECT_RESOLUTION",
    "MAX_EXTRA_CONTROLS",
    "MAX_SEED",
    "MAX_SWEEP_VALUES",
    "MIN_DETECT_RESOLUTION",
    "MODALITIES",
    "PAINT_CLASSES",
    "POSE_PRESETS",
    "PREPROCESSORS",
    "SCHEDULER_NAMES",
    "SWEEP_KINDS",
    "ControlSpec",
    "Engine",
    "FieldError",
    "GenerationCancelled",
    "GenerationRequest",
    "GenerationResult",
    "Modality",
    "ModelFamilyError",
    "ParamSpec",
    "PreprocessorSpec",
    "PreviewCallback",
    "ProgressCallback",
    "ServerFolder",
    "Settings",
    "TrainingLab",
    "WeightsUnavailableError",
    "check_can_start",
    "check_pixels",
    "class_color",
    "control_labels",
    "field_name",
    "get_modality",
    "get_preprocessor",
    "hex_color",
    "parse_flag",
    "preprocessor_runs_here",
    "read_recipe",
    "recipe_for_image",
    "render_pose_preset",
    "request_from_recipe",
    "save_png",
    "settings_from_cli",
    "shown",
    "snap_to_palette",
]
