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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from controlnet_core.errors import shown
from controlnet_core.images import (
    fit_image,
    image_sha1,
    open_image,
    target_size,
    to_rgb_array,
)
from controlnet_core.modalities import MODALITIES, Modality, get_modality
from controlnet_core.preprocessors import (
    MAX_DETECT_RESOLUTION,
    MIN_DETECT_RESOLUTION,
    apply_preprocessor,
    get_preprocessor,
)
from controlnet_core.recipes import RECIPE_FORMAT, library_versions
from controlnet_core.settings import Settings, parse_flag

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2000
MAX_GUIDANCE_SCALE = 30.0
MAX_CONDITIONING_SCALE = 2.0

ProgressCallback = Callable[[float, str], None]


class GenerationCancelled(Exception):
    """Raised by a progress callback to stop a generation (the user cancelled or left).

    The engine calls its progress callback before each control map, each model load and after every
    denoising step, so the work stops within one step and its memory is released as it unwinds.
    """


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


_CONTROL_FIELDS = tuple(f.name for f in fields(ControlSpec))
MAX_EXTRA_CONTROLS = 3
SWEEP_KINDS = ("strength", "start", "end")
MAX_SWEEP_VALUES = 8


@dataclass(frozen=True)
class GenerationRequest:
    """Every setting of one generation. See `Engine.validate` for the allowed ranges.

    `extra_controls` adds more ControlNets (multi-ControlNet); their images are passed to
    `Engine.generate` alongside the main control image.
    """

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
    control_mode: str = "balanced"
    extra_controls: tuple[ControlSpec, ...] = ()


@dataclass
class GenerationResult:
    """Images (PIL and float arrays in [0, 1]), the control map that steered them, and the recipe."""

    images: list[Image.Image]
    arrays: np.ndarray
    control_map: Image.Image
    recipe: dict[str, Any]
    seconds: float
    nsfw: list[bool] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    extra_maps: list[Image.Image] = field(default_factory=list)
    map_labels: list[str] = field(default_factory=list)  # the modality of each control map


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _number(name: str, value: Any, low: float, high: float, integer: bool = False) -> float | int:
    lo, hi = _fmt(low), _fmt(high)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a number between {lo} and {hi}; got {shown(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a number between {lo} and {hi}; got {shown(value)}"
        ) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be between {lo} and {hi}; got {shown(value)}")
    if integer:
        if number != int(number):
            raise ValueError(
                f"{name} must be a whole number between {lo} and {hi}; got {shown(value)}"
            )
        return int(number)
    return number


def image_seed(seed: int, index: int) -> int:
    """The seed of image `index` of a batch that starts at `seed`, wrapping past MAX_SEED to 0."""
    return (int(seed) + index) % (MAX_SEED + 1)


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
    # The toy model's best trade-off between colours and edges (its model card: CFG 3).
    "toy": UIDefaults(resolution=64, steps=20, guidance_scale=3.0, prompt=TOY_PROMPT),
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

    def backend_note(self, modality_id: str | None = None) -> str:
        """What the backend is, for the UI; for the toy model also whether it covers the tab."""
        note = BACKEND_NOTES.get(self.backend, "")
        if self.backend == "real":
            return f"{note} Running on {self.manager.device.type}, {self.manager.dtype_name}."
        if self.backend == "toy" and modality_id is not None:
            from controlnet_core.toy import toy_controlnet_folder

            modality = get_modality(modality_id)
            if toy_controlnet_folder(modality.controlnet_key) is None:
                return (
                    f"Toy model (shapes only, trained in this repo): it has no {modality.label} "
                    f"ControlNet. This tab needs the real weights ({modality.controlnet_id}): "
                    "hub access or --controlnet-dir. Preview map works offline."
                )
        return note

    def ui_defaults(self) -> UIDefaults:
        defaults = _UI_DEFAULTS.get(self.backend, _UI_DEFAULTS["real"])
        resolution = min(defaults.resolution, self.settings.max_resolution)
        steps = min(defaults.steps, self.settings.max_steps)
        return UIDefaults(resolution, steps, defaults.guidance_scale, defaults.prompt)

    def open_image(self, source: object) -> Any:
        """`source` (a file path, PIL image or array) checked against the upload limits.

        Paths are opened lazily: an image over `Settings.max_image_pixels` is refused from its
        header, before its pixels are decoded (ImageTooLargeError, a ValueError).
        """
        return open_image(
            source,
            self.settings.max_image_pixels,
            self.settings.max_upload_bytes,
        )

    # --- validation -----------------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        """`request` with numbers normalised; ValueError naming the argument and its range otherwise."""
        from controlnet_core.models import SCHEDULERS
        from controlnet_core.sampling import CONTROL_MODES

        s = self.settings
        main = _validate_control(_main_spec(request), prefix="")
        extra = tuple(request.extra_controls or ())
        if len(extra) > MAX_EXTRA_CONTROLS:
            raise ValueError(
                f"extra_controls must hold at most {MAX_EXTRA_CONTROLS} ControlNets; got {len(extra)}"
            )
        extra = tuple(
            _validate_control(spec, prefix=f"extra_controls[{index}].")
            for index, spec in enumerate(extra)
        )
        for name in ("prompt", "negative_prompt"):
            text = getattr(request, name)
            if not isinstance(text, str):
                raise ValueError(f"{name} must be text; got {type(text).__name__}")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(
                    f"{name} must be at most {MAX_PROMPT_CHARS} characters; got {len(text)}"
                )
        resolution = self._resolution(request.resolution)
        if request.scheduler not in SCHEDULERS:
            raise ValueError(
                f"scheduler must be one of {list(SCHEDULERS)}; got {shown(request.scheduler)}"
            )
        if request.control_mode not in CONTROL_MODES:
            raise ValueError(
                f"control_mode must be one of {list(CONTROL_MODES)}; got {shown(request.control_mode)}"
            )
        return replace(
            request,
            # The main ControlNet's fields have the same names in both dataclasses.
            **{name: getattr(main, name) for name in _CONTROL_FIELDS},
            guess_mode=parse_flag("guess_mode", request.guess_mode),
            steps=_number("steps", request.steps, 1, s.max_steps, integer=True),
            guidance_scale=_number(
                "guidance_scale", request.guidance_scale, 0.0, MAX_GUIDANCE_SCALE
            ),
            seed=_number("seed", request.seed, 0, MAX_SEED, integer=True),
            num_images=_number("num_images", request.num_images, 1, s.max_images, integer=True),
            resolution=resolution,
            scheduler=request.scheduler,
            control_mode=request.control_mode,
            extra_controls=extra,
        )

    def _resolution(self, value: Any) -> int:
        high = self.settings.max_resolution
        resolution = _number("resolution", value, 64, high, integer=True)
        if resolution % 64:
            raise ValueError(
                f"resolution must be a multiple of 64 between 64 and {high}; got {resolution}"
            )
        return resolution

    # --- control maps ---------------------------------------------------------------------------

    def control_map(
        self,
        modality_id: str,
        image: object,
        preprocessor: str | None = None,
        params: Mapping[str, Any] | None = None,
        detect_resolution: int = 512,
        resolution: int | None = None,
    ) -> np.ndarray:
        """The control map for `image` (a file path, PIL image or array; see `open_image`) at the
        generation size for `resolution` (cached).

        `resolution` defaults to 512, or the largest allowed when that is smaller. With preprocessor
        "none" the upload is the map itself: transparent pixels keep the colour stored under them
        (usually a map's black background), where a detector's input is laid over white.
        """
        if resolution is None:
            resolution = min(512, self.settings.max_resolution)
        modality = get_modality(modality_id)
        preprocessor = preprocessor or modality.default_preprocessor
        if preprocessor not in modality.preprocessors:
            raise ValueError(
                f"preprocessor must be one of {list(modality.preprocessors)} for "
                f"{modality.label}; got {shown(preprocessor)}"
            )
        values = get_preprocessor(preprocessor).validate_params(params)
        detect_resolution = _number(
            "detect_resolution",
            detect_resolution,
            MIN_DETECT_RESOLUTION,
            MAX_DETECT_RESOLUTION,
            integer=True,
        )
        resolution = self._resolution(resolution)
        array = to_rgb_array(self.open_image(image), over_white=preprocessor != "none")
        size = target_size(array.shape[1], array.shape[0], resolution)
        key = (
            image_sha1(array),
            preprocessor,
            tuple(sorted(values.items())),
            detect_resolution,
            size,
            modality.label_map,
        )
        with self._map_lock:
            if key in self._map_cache:
                self._map_cache.move_to_end(key)
                return self._map_cache[key]
        result = apply_preprocessor(
            preprocessor, array, size, detect_resolution, values, label_map=modality.label_map
        )
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
        extra_images: Sequence[object] = (),
    ) -> GenerationResult:
        """Images for `request` (image i uses `image_seed(seed, i)`), the control map(s), the recipe."""
        from controlnet_core.sampling import Variant

        prepared = self._prepare(request, control_image, extra_images, progress)
        request = prepared.request
        variants = [
            Variant(image_seed(request.seed, i), prepared.unit_settings)
            for i in range(request.num_images)
        ]
        labels = [f"seed {v.seed}" for v in variants]
        return self._run(prepared, variants, labels, {"kind": "generate"}, progress)

    def compare(
        self,
        request: GenerationRequest,
        control_image: object,
        progress: ProgressCallback | None = None,
        extra_images: Sequence[object] = (),
    ) -> GenerationResult:
        """Plain SD and ControlNet for the same seed and settings, from one batched pass.

        images[0] is plain SD (every ControlNet skipped), images[1] the controlled image.
        """
        from controlnet_core.sampling import UnitSettings, Variant

        prepared = self._prepare(request, control_image, extra_images, progress)
        seed = prepared.request.seed
        off = tuple(UnitSettings(0.0, u.start, u.end) for u in prepared.unit_settings)
        variants = [Variant(seed, off), Variant(seed, prepared.unit_settings)]
        names = " + ".join(control_labels(prepared.request))
        labels = ["plain SD (no ControlNet)", f"ControlNet ({names})"]
        return self._run(prepared, variants, labels, {"kind": "compare"}, progress)

    def sweep(
        self,
        request: GenerationRequest,
        control_image: object,
        kind: str = "strength",
        values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
        progress: ProgressCallback | None = None,
        extra_images: Sequence[object] = (),
    ) -> GenerationResult:
        """The same seed rendered once per value of the main ControlNet's strength, start or end."""
        from controlnet_core.sampling import UnitSettings, Variant

        if kind not in SWEEP_KINDS:
            raise ValueError(f"sweep kind must be one of {list(SWEEP_KINDS)}; got {shown(kind)}")
        values = list(values)
        if not 1 <= len(values) <= MAX_SWEEP_VALUES:
            raise ValueError(f"a sweep takes 1 to {MAX_SWEEP_VALUES} values; got {len(values)}")
        prepared = self._prepare(request, control_image, extra_images, progress)
        main, *rest = prepared.unit_settings
        variants, labels = [], []
        for value in values:
            if kind == "strength":
                value = _number("sweep strength", value, 0.0, MAX_CONDITIONING_SCALE)
                unit = UnitSettings(value, main.start, main.end)
            elif kind == "start":
                value = _number("sweep start", value, 0.0, 1.0)
                if value >= main.end:
                    raise ValueError(
                        f"sweep start {value:g} must be less than the end ({main.end:g})"
                    )
                unit = UnitSettings(main.scale, value, main.end)
            else:
                value = _number("sweep end", value, 0.0, 1.0)
                if value <= main.start:
                    raise ValueError(f"sweep end {value:g} must exceed the start ({main.start:g})")
                unit = UnitSettings(main.scale, main.start, value)
            variants.append(Variant(prepared.request.seed, (unit, *rest)))
            labels.append(f"{kind} {value:g}")
        extra = {
            "kind": "sweep",
            "sweep": {"parameter": kind, "values": [float(v) for v in values]},
        }
        return self._run(prepared, variants, labels, extra, progress)

    # --- internals ------------------------------------------------------------------------------

    def _prepare(self, request, control_image, extra_images, progress) -> _Prepared:
        from controlnet_core.sampling import ControlUnit, UnitSettings

        started = time.perf_counter()
        request = self.validate(request)
        if len(extra_images) != len(request.extra_controls):
            raise ValueError(
                f"extra_images must hold one image per extra control "
                f"({len(request.extra_controls)}); got {len(extra_images)}"
            )
        modality = get_modality(request.modality)

        def status(message: str) -> None:
            if progress is not None:
                progress(0.0, message)

        status("Making the control map…")
        main_map = self.control_map(
            modality.id,
            control_image,
            request.preprocessor,
            request.preprocessor_params,
            request.detect_resolution,
            request.resolution,
        )
        height, width = main_map.shape[:2]
        maps = [main_map]
        for index, (spec, image) in enumerate(
            zip(request.extra_controls, extra_images, strict=True)
        ):
            status(f"Making control map {index + 2}…")
            try:
                extra_map = self.control_map(
                    spec.modality,
                    image,
                    spec.preprocessor,
                    spec.preprocessor_params,
                    spec.detect_resolution,
                    request.resolution,
                )
            except ValueError as error:
                raise ValueError(f"extra_images[{index}]: {error}") from None
            resample = Image.NEAREST if get_modality(spec.modality).label_map else Image.LANCZOS
            maps.append(fit_image(np.asarray(extra_map), (width, height), resample))

        specs = [_main_spec(request), *request.extra_controls]
        modalities = [get_modality(spec.modality) for spec in specs]
        keys = [m.controlnet_key for m in modalities]
        loaded = [self.manager.controlnet(m, status, keep=keys) for m in modalities]
        units = [
            ControlUnit(model=net.model, image=Image.fromarray(m))
            for net, m in zip(loaded, maps, strict=True)
        ]
        settings = tuple(
            UnitSettings(spec.conditioning_scale, spec.guidance_start, spec.guidance_end)
            for spec in specs
        )
        return _Prepared(request, modality, maps, loaded, units, settings, width, height, started)

    def _run(self, prepared, variants, labels, recipe_extra, progress) -> GenerationResult:
        from controlnet_core.models import make_scheduler
        from controlnet_core.sampling import sample

        request = prepared.request
        base = self.manager.base()

        def on_step(index: int, total: int) -> None:
            if progress is not None:
                progress((index + 1) / total, f"Denoising step {index + 1}/{total}")

        arrays, nsfw = sample(
            base,
            prepared.units,
            variants,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            steps=request.steps,
            guidance_scale=request.guidance_scale,
            width=prepared.width,
            height=prepared.height,
            scheduler_factory=lambda: make_scheduler(request.scheduler, base.scheduler.config),
            guess_mode=request.guess_mode,
            control_mode=request.control_mode,
            on_step=on_step,
        )
        images = [Image.fromarray(a) for a in (arrays * 255).round().astype(np.uint8)]
        recipe = self.recipe(
            request, prepared.modality, prepared.loaded, prepared.width, prepared.height
        )
        recipe.update(recipe_extra)
        recipe["seeds"] = [v.seed for v in variants]
        return GenerationResult(
            images=images,
            arrays=arrays,
            control_map=Image.fromarray(prepared.maps[0]),
            recipe=recipe,
            seconds=time.perf_counter() - prepared.started,
            nsfw=nsfw,
            labels=labels,
            extra_maps=[Image.fromarray(m) for m in prepared.maps[1:]],
            map_labels=control_labels(request),
        )

    def recipe(
        self,
        request: GenerationRequest,
        modality: Modality,
        loaded: Sequence[Any],
        width: int,
        height: int,
    ) -> dict[str, Any]:
        """Every setting of `request` plus model ids, backend, device and library versions."""
        settings = asdict(request)
        settings["preprocessor_params"] = dict(request.preprocessor_params)
        settings["extra_controls"] = [
            {**asdict(spec), "preprocessor_params": dict(spec.preprocessor_params)}
            for spec in request.extra_controls
        ]
        for spec, controlnet in zip(settings["extra_controls"], loaded[1:], strict=True):
            spec["controlnet_model"] = controlnet.model_id
        return {
            "format": RECIPE_FORMAT,
            **settings,
            "modality_label": modality.label,
            "width": width,
            "height": height,
            "seeds": [image_seed(request.seed, i) for i in range(request.num_images)],
            "backend": self.manager.backend,
            "base_model": self.manager.base_model_id,
            "controlnet_model": loaded[0].model_id,
            "device": str(self.manager.device),
            "dtype": self.manager.dtype_name,
            "safety_checker": getattr(self.manager.base(), "safety_checker", None) is not None,
            "versions": library_versions(),
        }


@dataclass
class _Prepared:
    request: GenerationRequest
    modality: Modality
    maps: list[np.ndarray]
    loaded: list[Any]
    units: list[Any]
    unit_settings: tuple[Any, ...]
    width: int
    height: int
    started: float


def control_labels(request: GenerationRequest) -> list[str]:
    """The modality label of each ControlNet of `request`, the main one first."""
    modalities = [request.modality, *(spec.modality for spec in request.extra_controls)]
    return [get_modality(m).label for m in modalities]


def _main_spec(request: GenerationRequest) -> ControlSpec:
    return ControlSpec(**{name: getattr(request, name) for name in _CONTROL_FIELDS})


def _validate_control(spec: ControlSpec, prefix: str) -> ControlSpec:
    """`spec` normalised (preprocessor defaulted, params filled); ValueError naming the field."""
    try:
        modality = get_modality(spec.modality)
    except ValueError as error:
        raise ValueError(f"{prefix}{error}") from None
    preprocessor = spec.preprocessor or modality.default_preprocessor
    if preprocessor not in modality.preprocessors:
        raise ValueError(
            f"{prefix}preprocessor must be one of {list(modality.preprocessors)} for "
            f"{modality.label}; got {shown(preprocessor)}"
        )
    try:
        params = get_preprocessor(preprocessor).validate_params(spec.preprocessor_params)
    except ValueError as error:
        raise ValueError(f"{prefix}{error}" if prefix else str(error)) from None
    start = _number(f"{prefix}guidance_start", spec.guidance_start, 0.0, 1.0)
    end = _number(f"{prefix}guidance_end", spec.guidance_end, 0.0, 1.0)
    if start >= end:
        raise ValueError(
            f"{prefix}guidance_start ({start:g}) must be less than {prefix}guidance_end ({end:g})"
        )
    return ControlSpec(
        modality=modality.id,
        preprocessor=preprocessor,
        preprocessor_params=params,
        detect_resolution=_number(
            f"{prefix}detect_resolution",
            spec.detect_resolution,
            MIN_DETECT_RESOLUTION,
            MAX_DETECT_RESOLUTION,
            integer=True,
        ),
        conditioning_scale=_number(
            f"{prefix}conditioning_scale", spec.conditioning_scale, 0.0, MAX_CONDITIONING_SCALE
        ),
        guidance_start=start,
        guidance_end=end,
    )


_REQUEST_FIELDS = tuple(f.name for f in fields(GenerationRequest))


def request_from_recipe(recipe: Mapping[str, Any]) -> GenerationRequest:
    """The `GenerationRequest` that a recipe records (see `controlnet_core.recipes.read_recipe`).

    Only the shape is checked here (known modality, a mapping of parameters, a list of controls);
    `Engine.validate` checks the values.
    """
    modality = recipe.get("modality")
    if modality is None:
        raise ValueError("the recipe names no modality")
    _recipe_modality(modality, "modality")
    values = {name: recipe[name] for name in _REQUEST_FIELDS if name in recipe}
    extra = recipe.get("extra_controls", [])
    if extra is None:
        extra = []
    if not isinstance(extra, list):
        raise ValueError(
            f"recipe field extra_controls must be a list of controls; got {type(extra).__name__}"
        )
    if len(extra) > MAX_EXTRA_CONTROLS:
        raise ValueError(
            f"recipe field extra_controls holds {len(extra)} controls; at most "
            f"{MAX_EXTRA_CONTROLS} can be combined"
        )
    specs = []
    for index, spec in enumerate(extra):
        where = f"extra_controls[{index}]"
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"recipe field {where} must be an object with a modality; got {type(spec).__name__}"
            )
        if "modality" not in spec:
            raise ValueError(f"recipe field {where}.modality is missing")
        _recipe_modality(spec["modality"], f"{where}.modality")
        specs.append(ControlSpec(**{name: spec[name] for name in _CONTROL_FIELDS if name in spec}))
    values["extra_controls"] = tuple(specs)
    return GenerationRequest(**values)


def _recipe_modality(value: Any, where: str) -> None:
    if not isinstance(value, str) or value not in MODALITIES:
        raise ValueError(
            f"recipe field {where} must be one of {list(MODALITIES)}; got {shown(value)}"
        )
