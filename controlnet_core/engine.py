"""The engine: validated requests in, images + control map + recipe out.

`Engine` is what the UI (or a script) talks to. It owns the `ModelManager` and a small cache of control
maps keyed by (image, preprocessor, parameters, sizes), so changing the prompt never re-runs detection.
All arguments are validated up front with ValueErrors that name the argument and its allowed range.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from controlnet_core.concurrency import import_runtime
from controlnet_core.errors import FieldError
from controlnet_core.images import (
    fit_image,
    image_sha1,
    open_header,
    open_image,
    sdxl_size,
    target_size,
    to_rgb_array,
)
from controlnet_core.inside import ResidualProbe, ResidualRecord
from controlnet_core.modalities import get_modality
from controlnet_core.preprocessors import apply_preprocessor, get_preprocessor
from controlnet_core.recipes import build_recipe, read_recipe, request_from_recipe, sweep_record
from controlnet_core.request import (
    CONTROL_FIELDS,
    CONTROL_MODES,
    MAX_GUIDANCE_SCALE,
    MAX_SEED,
    SWEEP_FIELDS,
    GenerationRequest,
    check_choice,
    check_detect_resolution,
    check_flag,
    check_number,
    check_preprocessor,
    check_resolution,
    check_sweep,
    check_text,
    control_labels,
    image_seed,
    validate_control,
    validate_extra_controls,
)
from controlnet_core.settings import FEW_STEP_SCHEDULER, SCHEDULER_NAMES, Settings
from controlnet_core.timeline import (
    DEFAULT_PREVIEW_INTERVAL,
    LinearDecoder,
    LivePreview,
    PreviewCallback,
    Timeline,
    TinyVAEDecoder,
    preview_decoder,
)

ProgressCallback = Callable[[float, str], None]

# A backend's own ceiling on the generation size: the toy model was trained at 64 px, and a large
# request on it only costs every other user minutes for a blurry image.
BACKEND_MAX_RESOLUTION = {"toy": 128}


class GenerationCancelled(Exception):
    """Raised by a progress callback to stop a generation (the user cancelled or left).

    The engine calls its progress callback before each control map, each model load and after every
    denoising step, so the work stops within one step and its memory is released as it unwinds.
    """


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
    inside: ResidualRecord | None = None  # what the ControlNets added inside the UNet (on request)
    # (step index, predicted final image per variant) at a few steps (on request), cheaply decoded
    timeline: list[tuple[int, list[np.ndarray]]] = field(default_factory=list)


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
        self._decoder: LinearDecoder | TinyVAEDecoder | None = None
        self._decoder_lock = threading.Lock()
        self.preprocessor_runs = 0
        self.preview_interval = DEFAULT_PREVIEW_INTERVAL  # seconds between live previews

    @property
    def backend(self) -> str:
        return self.manager.backend

    @functools.cached_property
    def hub_online(self) -> bool:
        """Whether hub weights can be downloaded (asked once: a probe takes up to 3 s offline)."""
        from controlnet_core.hub import hub_answers

        return hub_answers()

    def preview_decoder(self) -> LinearDecoder | TinyVAEDecoder:
        """How this backend's latents are drawn cheaply (its `name` says which; see `timeline`).
        Offloading, it is fitted on the device (a run asks for it before it starts)."""
        with self._decoder_lock:
            if self._decoder is None:
                base = self.manager.base()
                offload = self.manager.offloader
                with offload.running() if offload is not None else nullcontext():
                    if offload is not None:
                        offload.use(base.vae)
                    self._decoder = preview_decoder(base)
            return self._decoder

    def recipe_request(self, source: object) -> GenerationRequest:
        """The request a recipe (a PNG made here, its JSON, or a path to either) holds, refused
        with a ModelFamilyError when it was made with the other base family."""
        recipe = read_recipe(source)
        self.check_recipe_family(recipe)
        return request_from_recipe(recipe)

    def check_recipe_family(self, recipe: Mapping[str, Any]) -> None:
        """ModelFamilyError when `recipe` was made with a base model of another family than this
        real backend's: its settings (an SDXL size, an SD1.5 sampler) would give another image."""
        made = recipe.get("family")
        if self.backend != "real" or made not in ("sd15", "sdxl") or made == self.family:
            return
        from controlnet_core.families import FAMILY_LABELS, ModelFamilyError

        raise ModelFamilyError(
            f"This recipe was made with an {FAMILY_LABELS[made]} base model; this server runs "
            f"{FAMILY_LABELS[self.family]}, on which its settings would give another image. Load "
            "it where its base model runs."
        )

    def check_base_model(self) -> None:
        """ModelFamilyError when the real backend's base model is of a family this app cannot run
        (SD2), as far as its folder, file or hub-cache entry tells without loading it."""
        if self.backend == "real":
            from controlnet_core.families import base_family, check_base_family

            source = self.settings.base_model
            check_base_family(source, base_family(source))

    def warm_up(self) -> None:
        """Import what the first generation needs (torch, diffusers) and decide the device and
        dtype, without loading weights: seconds a server spends after its page answers rather
        than in front of its first user."""
        import_runtime()
        from controlnet_core import sampling  # noqa: F401

        self.manager.device  # noqa: B018

    def device_summary(self) -> str:
        """The device and dtype the real backend runs on, e.g. "cpu, bfloat16"."""
        return f"{self.manager.device.type}, {self.manager.dtype_name}"

    @property
    def family(self) -> str:
        """The base model's family ("sd15" or "sdxl"), known before any weights load."""
        return self.manager.family

    def has_few_step(self) -> bool:
        """Whether the LCM sampler's few-step LoRA exists for this backend (not for the toy
        model; real weights load it from the hub or --few-step-lora at first use, LCM-LoRA for
        SD1.5 or for SDXL by the base model's family)."""
        return self.backend != "toy"

    def has_controlnet(self, modality_id: str) -> bool:
        """Whether this backend has the modality's ControlNet: the toy model has a few only; the
        real backend loads any SD1.5 one, and for SDXL those the registry names."""
        if self.backend == "real":
            return get_modality(modality_id).controlnet_for(self.family) is not None
        if self.backend != "toy":
            return True
        from controlnet_core.toy import toy_controlnet_folder

        return toy_controlnet_folder(get_modality(modality_id).controlnet_key) is not None

    @property
    def sizes_by_area(self) -> bool:
        """Whether `resolution` means the side of a square of the output's area, its aspect one
        of SDXL's trained buckets (an SDXL base), rather than the output's short side."""
        return self.backend == "real" and self.family == "sdxl"

    def resolution_range(self) -> tuple[int, int]:
        """The smallest and largest `resolution` this backend and server allow."""
        cap = (
            self.settings.max_resolution_sdxl
            if self.sizes_by_area
            else self.settings.max_resolution
        )
        high = min(cap, BACKEND_MAX_RESOLUTION.get(self.backend, 10**9))
        return 64, max(64, high)

    def output_size(self, width: int, height: int, resolution: int) -> tuple[int, int]:
        """The generation's (width, height) for an upload of `width`×`height`: its short side at
        `resolution`, or on SDXL the trained size nearest its aspect (see `images.sdxl_size`)."""
        if self.sizes_by_area:
            return sdxl_size(width, height, resolution)
        return target_size(width, height, resolution)

    def check_image_file(self, path: str) -> tuple[int, int]:
        """(width, height) of the image file at `path`, read from its header; ValueError when
        this server would refuse it (not an image, over the upload or pixel limits)."""
        with open_header(
            path, self.settings.max_image_pixels, self.settings.max_upload_bytes
        ) as image:
            return image.size

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
        """`request` with numbers normalised; a `FieldError` naming the field and its range otherwise."""
        s = self.settings
        main = validate_control(request.main_control())
        extra = validate_extra_controls(request.extra_controls)
        return replace(
            request,
            **{name: getattr(main, name) for name in CONTROL_FIELDS},
            prompt=check_text("prompt", request.prompt),
            negative_prompt=check_text("negative_prompt", request.negative_prompt),
            guess_mode=check_flag("guess_mode", request.guess_mode),
            steps=check_number("steps", request.steps, 1, s.max_steps, integer=True),
            guidance_scale=check_number(
                "guidance_scale", request.guidance_scale, 0.0, MAX_GUIDANCE_SCALE
            ),
            seed=check_number("seed", request.seed, 0, MAX_SEED, integer=True),
            num_images=check_number(
                "num_images", request.num_images, 1, s.max_images, integer=True
            ),
            resolution=check_resolution(request.resolution, *reversed(self.resolution_range())),
            scheduler=self._check_scheduler(request.scheduler),
            control_mode=check_choice("control_mode", request.control_mode, CONTROL_MODES),
            extra_controls=extra,
        )

    def _check_scheduler(self, name: object) -> str:
        name = check_choice("scheduler", name, SCHEDULER_NAMES)
        if name == FEW_STEP_SCHEDULER and not self.has_few_step():
            raise FieldError(
                ("scheduler",),
                f"{FEW_STEP_SCHEDULER} is not available here: the toy model has no few-step LoRA",
            )
        return name

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
        low, high = self.resolution_range()
        if resolution is None:
            resolution = min(512, high)
        modality = get_modality(modality_id)
        preprocessor = check_preprocessor(modality.id, preprocessor)
        values = get_preprocessor(preprocessor).validate_params(params)
        detect_resolution = check_detect_resolution(detect_resolution)
        resolution = check_resolution(resolution, high, low)
        try:
            array = to_rgb_array(self.open_image(image), over_white=preprocessor != "none")
        except FieldError:
            raise
        except ValueError as error:  # the upload itself: not a file of ours, truncated, …
            raise FieldError(("image",), str(error), name="") from None
        size = self.output_size(array.shape[1], array.shape[0], resolution)
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
        import_runtime()  # the detectors import torch
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
        inside_step: str | None = None,
        controlnets: Mapping[str, Any] | None = None,
        preview: PreviewCallback | None = None,
    ) -> GenerationResult:
        """Images for `request` (image i uses `image_seed(seed, i)`), the control map(s), the recipe.

        `inside_step` ("first", "middle", "last" or "mean") also records, for the first image, what
        the ControlNets add inside the UNet at that step (`GenerationResult.inside`). `controlnets`
        maps a ControlNet key ("canny") to weights to use instead of the backend's (an object
        with `model_id` and `model`, e.g. `TrainingLab.weights()`); the recipe names them.
        `preview` is called with the images forming (see `timeline.LivePreview`) while it samples.
        """
        from controlnet_core.sampling import Variant

        probe = ResidualProbe(inside_step, variant=0) if inside_step else None
        prepared = self._prepare(request, control_image, extra_images, progress, controlnets)
        request = prepared.request
        variants = [
            Variant(image_seed(request.seed, i), prepared.unit_settings)
            for i in range(request.num_images)
        ]
        labels = [f"seed {v.seed}" for v in variants]
        return self._run(
            prepared, variants, labels, {"kind": "generate"}, progress, probe, preview=preview
        )

    def compare(
        self,
        request: GenerationRequest,
        control_image: object,
        progress: ProgressCallback | None = None,
        extra_images: Sequence[object] = (),
        inside_step: str | None = None,
        timeline: int = 0,
        controlnets: Mapping[str, Any] | None = None,
        preview: PreviewCallback | None = None,
    ) -> GenerationResult:
        """Plain SD and ControlNet for the same seed and settings, from one batched pass.

        images[0] is plain SD (every ControlNet skipped), images[1] the controlled image;
        `inside_step` records the controlled image's residuals (see `generate`); `timeline` > 0
        also gives both predicted final images at about that many steps (`GenerationResult.timeline`,
        drawn by `timeline.LinearDecoder`).
        """
        from controlnet_core.sampling import Variant

        probe = ResidualProbe(inside_step, variant=1) if inside_step else None
        frames = Timeline(timeline) if timeline else None
        prepared = self._prepare(request, control_image, extra_images, progress, controlnets)
        seed = prepared.request.seed
        off = tuple(replace(u, conditioning_scale=0.0) for u in prepared.unit_settings)
        variants = [Variant(seed, off), Variant(seed, prepared.unit_settings)]
        names = " + ".join(control_labels(prepared.request))
        labels = ["plain SD (no ControlNet)", f"ControlNet ({names})"]
        return self._run(
            prepared, variants, labels, {"kind": "compare"}, progress, probe, frames, preview
        )

    def sweep(
        self,
        request: GenerationRequest,
        control_image: object,
        kind: str = "strength",
        values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
        progress: ProgressCallback | None = None,
        extra_images: Sequence[object] = (),
        controlnets: Mapping[str, Any] | None = None,
        preview: PreviewCallback | None = None,
    ) -> GenerationResult:
        """The same seed rendered once per value of the main ControlNet's strength, start or end."""
        from controlnet_core.sampling import Variant

        checked = self.validate(request)
        values = check_sweep(kind, values, checked.main_control())
        prepared = self._prepare(checked, control_image, extra_images, progress, controlnets)
        main, *rest = prepared.unit_settings
        variants = [
            Variant(prepared.request.seed, (replace(main, **{SWEEP_FIELDS[kind]: v}), *rest))
            for v in values
        ]
        labels = [f"{kind} {value:g}" for value in values]
        extra = sweep_record(kind, values)
        return self._run(prepared, variants, labels, extra, progress, preview=preview)

    # --- internals ------------------------------------------------------------------------------

    def _prepare(
        self, request, control_image, extra_images, progress, controlnets=None
    ) -> _Prepared:
        from controlnet_core.sampling import ControlUnit, UnitSettings, is_union

        started = time.perf_counter()
        request = self.validate(request)
        if len(extra_images) != len(request.extra_controls):
            raise FieldError(
                ("extra_images",),
                f"must hold one image per extra control ({len(request.extra_controls)}); "
                f"got {len(extra_images)}",
            )

        def status(message: str) -> None:
            if progress is not None:
                progress(0.0, message)

        status("Making the control map…")
        main_map = self.control_map(
            request.modality,
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
            except FieldError as error:
                if error.path == ("image",):
                    raise error.within("extra_images", index) from None
                raise error.within("extra_controls", index) from None
            resample = Image.NEAREST if get_modality(spec.modality).label_map else Image.LANCZOS
            maps.append(fit_image(np.asarray(extra_map), (width, height), resample))

        specs = request.controls()
        modalities = [get_modality(spec.modality) for spec in specs]
        loaded = self._controlnets(modalities, controlnets or {}, status)
        units = [
            ControlUnit(
                model=net.model,
                image=Image.fromarray(control),
                control_type=modality.control_type_for(self.family)
                if is_union(net.model)
                else None,
            )
            for net, control, modality in zip(loaded, maps, modalities, strict=True)
        ]
        settings = tuple(
            UnitSettings(spec.conditioning_scale, spec.guidance_start, spec.guidance_end)
            for spec in specs
        )
        few_step = None
        if request.scheduler == FEW_STEP_SCHEDULER:
            few_step = self.manager.few_step(status)
        return _Prepared(request, maps, loaded, units, settings, width, height, started, few_step)

    def _controlnets(self, modalities, chosen: Mapping[str, Any], status) -> list[Any]:
        """The loaded ControlNet of each of `modalities` (`chosen` ones by their key first).

        One look-up per model: tabs sharing one (the union model) must get the same object even
        if another request evicts it between two look-ups, so that the sampler feeds their maps
        to it in one call."""
        keys = [self.manager.controlnet_cache_key(m) for m in modalities]
        by_key: dict[str, Any] = {}
        for modality, key in zip(modalities, keys, strict=True):
            if key not in by_key and modality.controlnet_key not in chosen:
                by_key[key] = self.manager.controlnet(modality, status, keep=keys)
        return [
            chosen.get(m.controlnet_key) or by_key[key]
            for m, key in zip(modalities, keys, strict=True)
        ]

    def _run(
        self,
        prepared,
        variants,
        labels,
        recipe_extra,
        progress,
        probe=None,
        timeline=None,
        preview: PreviewCallback | None = None,
    ) -> GenerationResult:
        from controlnet_core.models import make_scheduler
        from controlnet_core.sampling import sample

        request = prepared.request
        base = prepared.few_step.pipe if prepared.few_step else self.manager.base()
        offload = self.manager.offloader
        if offload is not None and (preview or timeline is not None):
            self.preview_decoder()  # fitted now, before the run holds the device

        def on_step(index: int, total: int) -> None:
            if progress is not None:
                progress((index + 1) / total, f"Denoising step {index + 1}/{total}")

        with offload.running() if offload is not None else nullcontext():
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
                probe=probe,
                timeline=timeline,
                preview=(
                    LivePreview(self.preview_decoder, preview, self.preview_interval)
                    if preview
                    else None
                ),
                offload=offload,
            )
        images = [Image.fromarray(a) for a in (arrays * 255).round().astype(np.uint8)]
        recipe = build_recipe(
            request,
            self.model_facts(prepared.loaded, prepared.few_step),
            prepared.width,
            prepared.height,
            seeds=[v.seed for v in variants],
        )
        recipe.update(recipe_extra)
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
            inside=probe.result() if probe is not None else None,
            timeline=timeline.images(self.preview_decoder()) if timeline is not None else [],
        )

    def model_facts(self, loaded: Sequence[Any], few_step: Any = None) -> dict[str, Any]:
        """What a recipe records of the models: backend, ids (local ones by name: a recipe is
        shown on the page), device, dtype, safety checker, and the few-step LoRA fused into the
        UNet when the LCM sampler ran."""
        from controlnet_core.models import shown_source

        facts = {
            "backend": self.manager.backend,
            "base_model": shown_source(self.manager.base_model_id or ""),  # a name, not a path
            "controlnet_models": [controlnet.model_id for controlnet in loaded],
            "device": str(self.manager.device),
            "dtype": self.manager.dtype_name,
            "family": self.manager.family,
            "safety_checker": getattr(self.manager.base(), "safety_checker", None) is not None,
        }
        if few_step is not None:
            facts["few_step_lora"] = shown_source(few_step.lora_id)
        if self.manager.vae_id is not None:
            facts["vae"] = shown_source(self.manager.vae_id)
        return facts


@dataclass
class _Prepared:
    request: GenerationRequest
    maps: list[np.ndarray]
    loaded: list[Any]
    units: list[Any]
    unit_settings: tuple[Any, ...]
    width: int
    height: int
    started: float
    few_step: Any = None  # models.LoadedFewStep when the LCM sampler runs
