"""Recipes: the full, JSON-serialisable record of how an image was made, and its one schema.

A recipe holds every setting of a generation (the fields of `GenerationRequest`), the model ids and the
library versions, so the image can be made again. This module owns the format both ways: building a
recipe (`build_recipe`), the recipe of one image of a batch, comparison or sweep (`recipe_for_image`),
the A1111-style `parameters` text, and reading it back into a request (`read_recipe`,
`request_from_recipe`). Output PNGs carry it twice: as the `parameters` text (read by image viewers and
other SD tools) and as JSON under `controlnet_recipe` (read back by this app).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import asdict
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from controlnet_core.errors import FieldError, field_name, shown
from controlnet_core.modalities import MODALITIES, get_modality
from controlnet_core.request import (
    CONTROL_FIELDS,
    CONTROL_MODES,
    MAX_EXTRA_CONTROLS,
    REQUEST_FIELDS,
    SWEEP_FIELDS,
    ControlSpec,
    GenerationRequest,
    image_seed,
)

RECIPE_FORMAT = "controlnet-demo-suite/recipe-v1"
_VERSIONED_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "controlnet-aux",
    "gradio",
    "numpy",
    "pillow",  # resizes every control map
)


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the pixels (and Python's)."""
    versions = {"python": platform.python_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    # OpenCV makes the edge maps; it ships under several package names, so ask the module itself.
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:
        versions["opencv"] = "not installed"
    return versions


PNG_RECIPE_KEY = "controlnet_recipe"
PNG_PARAMETERS_KEY = "parameters"


def a1111_parameters(recipe: dict[str, Any]) -> str:
    """The recipe as the A1111 "parameters" text that image viewers and other tools understand."""
    seeds = recipe.get("seeds") or [recipe.get("seed", 0)]
    seed = seeds[min(recipe.get("image_index", 0), len(seeds) - 1)]
    lines = [recipe.get("prompt", "")]
    if recipe.get("negative_prompt"):
        lines.append(f"Negative prompt: {recipe['negative_prompt']}")
    fields = [
        f"Steps: {recipe.get('steps')}",
        f"Sampler: {recipe.get('scheduler')}",
        f"CFG scale: {recipe.get('guidance_scale')}",
        f"Seed: {seed}",
        f"Size: {recipe.get('width')}x{recipe.get('height')}",
        f"Model: {recipe.get('base_model')}",
    ]
    controls = [
        {
            "preprocessor": recipe.get("preprocessor"),
            "controlnet_model": recipe.get("controlnet_model"),
            "conditioning_scale": recipe.get("conditioning_scale"),
            "guidance_start": recipe.get("guidance_start"),
            "guidance_end": recipe.get("guidance_end"),
        },
        *recipe.get("extra_controls", []),
    ]
    mode = CONTROL_MODES.get(recipe.get("control_mode", "balanced"), "Balanced")
    for index, control in enumerate(controls):
        fields.append(
            f'ControlNet {index}: "Module: {control.get("preprocessor")}, '
            f"Model: {control.get('controlnet_model')}, Weight: {control.get('conditioning_scale')}, "
            f"Guidance Start: {control.get('guidance_start')}, "
            f'Guidance End: {control.get("guidance_end")}, Control Mode: {mode}"'
        )
    if recipe.get("guess_mode"):
        fields.append("Guess mode: True")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def build_recipe(
    request: GenerationRequest,
    models: Mapping[str, Any],
    width: int,
    height: int,
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """The recipe of a validated `request`: every field, the output size, the seed of each image,
    and `models` (backend, base_model, one entry of controlnet_models per ControlNet, device,
    dtype, safety_checker) with the library versions."""
    settings = asdict(request)
    settings["preprocessor_params"] = dict(request.preprocessor_params)
    settings["extra_controls"] = [
        {
            **asdict(spec),
            "preprocessor_params": dict(spec.preprocessor_params),
            "controlnet_model": model_id,
        }
        for spec, model_id in zip(
            request.extra_controls, models["controlnet_models"][1:], strict=True
        )
    ]
    facts = {key: value for key, value in models.items() if key != "controlnet_models"}
    return {
        "format": RECIPE_FORMAT,
        "kind": "generate",
        **settings,
        "modality_label": get_modality(request.modality).label,
        "width": width,
        "height": height,
        "seeds": seeds or [image_seed(request.seed, i) for i in range(request.num_images)],
        **facts,
        "controlnet_model": models["controlnet_models"][0],
        "versions": library_versions(),
    }


def sweep_record(kind: str, values: list[float]) -> dict[str, Any]:
    """What a sweep's recipe adds: which field of the main ControlNet it varied, and the values."""
    return {"kind": "sweep", "sweep": {"parameter": kind, "values": [float(v) for v in values]}}


def recipe_for_image(recipe: dict[str, Any], image_index: int) -> dict[str, Any]:
    """The recipe of image `image_index` of a batch, a comparison or a sweep.

    For a batch it keeps the whole batch's settings (first seed, number of images) and names the
    image: CPU and GPU kernels may sum in another order for another batch size, so only regenerating
    the same batch gives a bit-identical image. For a comparison or a sweep it is the plain recipe
    that makes that one image on its own (its strength, start or end, one image), which reproduces
    it within float precision: at most 1/255 per pixel (see README, "Reproducing an image").
    """
    seeds = recipe.get("seeds") or [recipe.get("seed", 0)]
    single = dict(recipe)
    single["image_index"] = min(image_index, len(seeds) - 1)
    single["image_seed"] = seeds[single["image_index"]]
    kind = recipe.get("kind")
    if kind not in ("compare", "sweep"):
        return single
    single.update(kind="generate", seed=single["image_seed"], seeds=[single["image_seed"]])
    single.update(num_images=1, image_index=0)
    if kind == "compare" and image_index == 0:  # the plain SD half: every ControlNet off
        single["conditioning_scale"] = 0.0
        single["extra_controls"] = [
            {**spec, "conditioning_scale": 0.0} for spec in recipe.get("extra_controls", [])
        ]
    elif kind == "sweep":
        sweep = single.pop("sweep")
        single[SWEEP_FIELDS[sweep["parameter"]]] = sweep["values"][image_index]
    return single


def save_png(image: Image.Image, recipe: dict[str, Any], path: str | Path) -> Path:
    """Write `image` as PNG with its recipe: A1111 `parameters` text plus the JSON recipe."""
    info = PngInfo()
    info.add_text(PNG_PARAMETERS_KEY, a1111_parameters(recipe))
    info.add_text(PNG_RECIPE_KEY, json.dumps(recipe, sort_keys=True))
    path = Path(path)
    image.save(path, format="PNG", pnginfo=info)
    return path


def read_recipe(source: object) -> dict[str, Any]:
    """The recipe stored in a PNG made here, or a JSON recipe (path, text, bytes or dict).

    ValueError when the source holds no recipe of this app.
    """
    recipe: Any = None
    if isinstance(source, dict):
        recipe = source
    elif isinstance(source, Image.Image):
        recipe = _recipe_from_png(source)
    elif isinstance(source, (str, Path)) and _is_file(source):
        path = Path(source)
        with path.open("rb") as handle:
            signature = handle.read(8)
        if signature.startswith(b"\x89PNG"):
            # Only the header and text chunks are read: the pixels are never decoded.
            try:
                with Image.open(path) as image:
                    recipe = _recipe_from_png(image)
            except (OSError, SyntaxError, Image.DecompressionBombError):
                raise ValueError(
                    "this PNG could not be read; load a PNG generated here or its JSON recipe"
                ) from None
        else:
            data = path.read_bytes()
            if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] not in (b"{", b"["):
                raise ValueError(
                    "this file is neither a PNG generated here nor a JSON recipe: load one of those"
                )
            recipe = _parse_json(data)
    elif isinstance(source, (str, bytes)):
        recipe = _parse_json(source)
    else:
        raise ValueError(
            f"a recipe must be a PNG made by this app or JSON; got {type(source).__name__}"
        )
    if not isinstance(recipe, dict) or recipe.get("format") != RECIPE_FORMAT:
        raise ValueError(
            f"this is not a recipe of this app (expected format {RECIPE_FORMAT!r}); "
            "load a PNG generated here or its JSON recipe"
        )
    return recipe


def _is_file(source: str | Path) -> bool:
    if isinstance(source, str) and source.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        return False  # JSON text, not a path
    try:
        return Path(source).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _recipe_from_png(image: Image.Image) -> Any:
    text = image.info.get(PNG_RECIPE_KEY)
    if text is None:
        raise ValueError(
            "this PNG carries no recipe: load an image generated by this app (saved as PNG), "
            "or its JSON recipe"
        )
    return _parse_json(text)


def _parse_json(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        # utf-8-sig: editors on Windows save JSON with a byte-order mark.
        text = text.decode("utf-8-sig", errors="replace")
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"the recipe is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError("the recipe is not valid JSON: it is nested too deeply") from None


def request_from_recipe(recipe: Mapping[str, Any]) -> GenerationRequest:
    """The `GenerationRequest` that a recipe records (see `read_recipe`).

    Only the shape is checked here (known modality, a mapping of parameters, a list of controls), with
    `FieldError`s whose path names the recipe field; `Engine.validate` checks the values.
    """
    modality = recipe.get("modality")
    if modality is None:
        raise FieldError(("modality",), "the recipe names no modality", name="")
    _check_modality(modality, ("modality",))
    values = {name: recipe[name] for name in REQUEST_FIELDS if name in recipe}
    extra = recipe.get("extra_controls", [])
    if extra is None:
        extra = []
    if not isinstance(extra, list):
        raise FieldError(
            ("extra_controls",),
            f"must be a list of controls; got {type(extra).__name__}",
            name="recipe field extra_controls",
        )
    if len(extra) > MAX_EXTRA_CONTROLS:
        raise FieldError(
            ("extra_controls",),
            f"holds {len(extra)} controls; at most {MAX_EXTRA_CONTROLS} can be combined",
            name="recipe field extra_controls",
        )
    specs = []
    for index, spec in enumerate(extra):
        path = ("extra_controls", index)
        if not isinstance(spec, Mapping):
            raise FieldError(
                path,
                f"must be an object with a modality; got {type(spec).__name__}",
                name=f"recipe field extra_controls[{index}]",
            )
        if "modality" not in spec:
            raise FieldError(
                (*path, "modality"),
                "is missing",
                name=f"recipe field extra_controls[{index}].modality",
            )
        _check_modality(spec["modality"], (*path, "modality"))
        specs.append(ControlSpec(**{name: spec[name] for name in CONTROL_FIELDS if name in spec}))
    values["extra_controls"] = tuple(specs)
    return GenerationRequest(**values)


def _check_modality(value: Any, path: tuple[str | int, ...]) -> None:
    if not isinstance(value, str) or value not in MODALITIES:
        name = f"recipe field {field_name(path)}"
        raise FieldError(path, f"must be one of {list(MODALITIES)}; got {shown(value)}", name=name)
