"""The engine: validated requests in, images + control map + recipe out.

`Engine` is what the UI (or a script) talks to. It owns the `ModelManager` and a small cache of control
maps keyed by (image, preprocessor, parameters, sizes), so changing the prompt never re-runs detection.
All arguments are validated up front with ValueErrors that name the argument and its allowed range.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from controlnet_core.images import image_sha1, target_size, to_rgb_array
from controlnet_core.modalities import Modality, get_modality
from controlnet_core.preprocessors import (
    MAX_DETECT_RESOLUTION,
    MIN_DETECT_RESOLUTION,
    apply_preprocessor,
    get_preprocessor,
)
from controlnet_core.recipes import RECIPE_FORMAT, library_versions
from controlnet_core.settings import Settings

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
MAX_GUIDANCE_SCALE = 30.0
MAX_CONDITIONING_SCALE = 2.0

ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class GenerationRequest:
    """Every setting of one generation. See `Engine.validate` for the allowed ranges."""

    modality: str
    prompt: str = ""
    negative_prompt: str = ""
    preprocessor: str | None = None
    preprocessor_params: Mapping[str, Any] = field(default_factory=dict)
    detect_resolution: int = 512
    conditioning_scale: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    guess_mode: bool = False
    steps: int = 20
    guidance_scale: float = 7.5
    seed: int = 0
    num_images: int = 1
    resolution: int = 512
    scheduler: str = "UniPC"


@dataclass
class GenerationResult:
    """Images (PIL and float arrays in [0, 1]), the control map that steered them, and the recipe."""

    images: list[Image.Image]
    arrays: np.ndarray
    control_map: Image.Image
    recipe: dict[str, Any]
    seconds: float
    nsfw: list[bool] = field(default_factory=list)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float | int:
    lo, hi = _fmt(low), _fmt(high)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a number between {lo} and {hi}; got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number between {lo} and {hi}; got {value!r}"
        ) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be between {lo} and {hi}; got {value!r}")
    if integer:
        if number != int(number):
            raise ValueError(
                f"{name} must be a whole number between {lo} and {hi}; got {value!r}"
            )
        return int(number)
    return number


BACKEND_NOTES = {
    "real": "Stable Diffusion 1.5 + ControlNet 1.1 weights.",
    "toy": "Toy model: shapes only, trained in this repo (64×64, upscaled for display). "
    "Try prompts like “a red star and a blue circle on a white background”.",
    "tiny": "Tiny random weights: the real code path for tests; the images are noise.",
}

TOY_PROMPT = "a red star and a blue circle on a white background"


@dataclass(frozen=True)
class UIDefaults:
    """Starting values of the UI controls for a backend."""

    resolution: int
    steps: int
    guidance_scale: float
    prompt: str | None  # None: use the modality's own example prompt


_UI_DEFAULTS = {
    "real": UIDefaults(resolution=512, steps=20, guidance_scale=7.5, prompt=None),
    "toy": UIDefaults(resolution=64, steps=20, guidance_scale=7.5, prompt=TOY_PROMPT),
    "tiny": UIDefaults(resolution=64, steps=8, guidance_scale=7.5, prompt=None),
}


class Engine:
    """Runs ControlNet generations for one backend (see `Settings.backend`).

    With backend "auto" the engine decides at construction (cheaply, no weights loaded) whether real
    weights can be had and otherwise uses the toy model; `backend` tells which.
    """

    def __init__(self, settings: Settings, manager=None, map_cache_size: int = 32) -> None:
        from controlnet_core.models import ModelManager, resolve_backend

        self.settings = settings
        if manager is None:
            manager = ModelManager(settings, backend=resolve_backend(settings))
        self.manager = manager
        self._map_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._map_cache_size = map_cache_size
        self._map_lock = threading.Lock()
        self.preprocessor_runs = 0

    @property
    def backend(self) -> str:
        return self.manager.backend

    def backend_note(self) -> str:
        return BACKEND_NOTES.get(self.backend, "")

    def ui_defaults(self) -> UIDefaults:
        defaults = _UI_DEFAULTS.get(self.backend, _UI_DEFAULTS["real"])
        resolution = min(defaults.resolution, self.settings.max_resolution)
        steps = min(defaults.steps, self.settings.max_steps)
        return UIDefaults(resolution, steps, defaults.guidance_scale, defaults.prompt)

    # --- validation -----------------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with numbers normalised; ValueError naming the argument and its range otherwise."""
        from controlnet_core.models import SCHEDULERS

        s = self.settings
        modality = get_modality(request.modality)
        preprocessor = request.preprocessor or modality.default_preprocessor
        if preprocessor not in modality.preprocessors:
            raise ValueError(
                f"preprocessor must be one of {list(modality.preprocessors)} for "
                f"{modality.label}; got {preprocessor!r}"
            )
        params = get_preprocessor(preprocessor).validate_params(request.preprocessor_params)
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if not isinstance(text, str):
                raise ValueError(f"{name} must be text; got {type(text).__name__}")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(
                    f"{name} must be at most {MAX_PROMPT_CHARS} characters; got {len(text)}"
                )
        start = _number("guidance_start", request.guidance_start, 0.0, 1.0)
        end = _number("guidance_end", request.guidance_end, 0.0, 1.0)
        if start >= end:
            raise ValueError(f"guidance_start ({start:g}) must be less than guidance_end ({end:g})")
        resolution = _number("resolution", request.resolution, 64, s.max_resolution, integer=True)
        if resolution % 64:
            raise ValueError(
                f"resolution must be a multiple of 64 between 64 and {s.max_resolution}; got {resolution}"
            )
        if request.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {list(SCHEDULERS)}; got {request.scheduler!r}"
            )
        return GenerationRequest(
            modality=modality.id,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            preprocessor=preprocessor,
            preprocessor_params=params,
            detect_resolution=_number(
                "detect_resolution",
                request.detect_resolution,
                MIN_DETECT_RESOLUTION,
                MAX_DETECT_RESOLUTION,
                integer=True,
            ),
            conditioning_scale=_number(
                "conditioning_scale", request.conditioning_scale, 0.0, MAX_CONDITIONING_SCALE
            ),
            guidance_start=start,
            guidance_end=end,
            guess_mode=bool(request.guess_mode),
            steps=_number("steps", request.steps, 1, s.max_steps, integer=True),
            guidance_scale=_number(
                "guidance_scale", request.guidance_scale, 0.0, MAX_GUIDANCE_SCALE
            ),
            seed=_number("seed", request.seed, 0, MAX_SEED, integer=True),
            num_images=_number("num_images", request.num_images, 1, s.max_images, integer=True),
            resolution=resolution,
            scheduler=request.scheduler,
        )

    # --- control maps ---------------------------------------------------------------------------

    def control_map(
        self,
        modality_id: str,
        image: object,
        preprocessor: str | None = None,
        params: Mapping[str, Any] | None = None,
        detect_resolution: int = 512,
        resolution: int = 512,
    ) -> np.ndarray:
        """The control map for `image` at the generation size for `resolution` (cached)."""
        modality = get_modality(modality_id)
        preprocessor = preprocessor or modality.default_preprocessor
        if preprocessor not in modality.preprocessors:
            raise ValueError(
                f"preprocessor must be one of {list(modality.preprocessors)} for "
                f"{modality.label}; got {preprocessor!r}"
            )
        values = get_preprocessor(preprocessor).validate_params(params)
        array = to_rgb_array(image)
        size = target_size(array.shape[1], array.shape[0], int(resolution))
        key = (
            image_sha1(array),
            preprocessor,
            tuple(sorted(values.items())),
            int(detect_resolution),
            size,
        )
        with self._map_lock:
            if key in self._map_cache:
                self._map_cache.move_to_end(key)
                return self._map_cache[key]
        result = apply_preprocessor(preprocessor, array, size, int(detect_resolution), values)
        result.setflags(write=False)
        with self._map_lock:
            self.preprocessor_runs += 1
            self._map_cache[key] = result
            while len(self._map_cache) > self._map_cache_size:
                self._map_cache.popitem(last=False)
        return result

    # --- generation -----------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        control_image: object,
        progress: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Run one ControlNet generation: images, the control map and the full recipe."""
        import torch

        started = time.perf_counter()
        request = self.validate(request)
        modality = get_modality(request.modality)
        control = self.control_map(
            modality.id,
            control_image,
            request.preprocessor,
            request.preprocessor_params,
            request.detect_resolution,
            request.resolution,
        )

        def status(message: str) -> None:
            if progress is not None:
                progress(0.0, message)

        loaded = self.manager.controlnet(modality, status)
        pipe = self.manager.pipeline([loaded], request.scheduler, status)
        steps = request.steps

        def on_step_end(pipeline, step, timestep, callback_kwargs):
            if progress is not None:
                progress((step + 1) / steps, f"Denoising step {step + 1}/{steps}")
            return callback_kwargs

        generators = [
            torch.Generator().manual_seed(request.seed + index)
            for index in range(request.num_images)
        ]
        height, width = control.shape[:2]
        with torch.inference_mode():
            output = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                image=Image.fromarray(control),
                num_inference_steps=steps,
                guidance_scale=request.guidance_scale,
                controlnet_conditioning_scale=request.conditioning_scale,
                control_guidance_start=request.guidance_start,
                control_guidance_end=request.guidance_end,
                guess_mode=request.guess_mode,
                num_images_per_prompt=request.num_images,
                generator=generators,
                height=height,
                width=width,
                output_type="np",
                callback_on_step_end=on_step_end,
            )
        arrays = np.asarray(output.images, dtype=np.float32)
        images = [Image.fromarray(a) for a in (arrays * 255).round().astype(np.uint8)]
        nsfw = (
            list(output.nsfw_content_detected or [])
            if hasattr(output, "nsfw_content_detected")
            else []
        )
        recipe = self.recipe(request, modality, loaded.model_id, width, height)
        return GenerationResult(
            images=images,
            arrays=arrays,
            control_map=Image.fromarray(control),
            recipe=recipe,
            seconds=time.perf_counter() - started,
            nsfw=[bool(x) for x in nsfw if x is not None],
        )

    def recipe(
        self,
        request: GenerationRequest,
        modality: Modality,
        controlnet_id: str,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        """Every setting of `request` plus model ids, backend, device and library versions."""
        settings = asdict(request)
        settings["preprocessor_params"] = dict(request.preprocessor_params)
        return {
            "format": RECIPE_FORMAT,
            **settings,
            "modality_label": modality.label,
            "width": width,
            "height": height,
            "seeds": [request.seed + i for i in range(request.num_images)],
            "backend": self.manager.backend,
            "base_model": self.manager.base_model_id,
            "controlnet_model": controlnet_id,
            "device": str(self.manager.device),
            "dtype": str(self.manager.dtype).replace("torch.", ""),
            "versions": library_versions(),
        }
