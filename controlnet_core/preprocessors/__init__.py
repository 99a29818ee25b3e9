"""Preprocessors: one interface that turns an input image into a ControlNet control map.

Every preprocessor is a `PreprocessorSpec` in `PREPROCESSORS`: an id, a label, its parameters as data
(`ParamSpec`, which the UI renders generically) and a function `run(image, **params) -> map`, where
`image` is an HxWx3 uint8 RGB array already scaled to the detect resolution and the map is an HxWx3
(or HxW) uint8 array. `apply_preprocessor` is the single entry point: it validates parameters against
their specs (defaults are copied per call, never mutated), scales the input to the detect resolution and
the map to the generation size. Annotators that need hub weights load lazily through `AnnotatorCache`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from controlnet_core.errors import FieldError, shown
from controlnet_core.images import fit_image, resize_short_side, to_rgb_array
from controlnet_core.settings import parse_flag

PARAM_KINDS = ("int", "float", "bool", "choice")


@dataclass(frozen=True)
class ParamSpec:
    """One preprocessor parameter: its name, UI label, kind, default and allowed range/choices."""

    name: str
    label: str
    kind: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    info: str = ""

    def __post_init__(self) -> None:
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"param {shown(self.name)}: kind must be one of {PARAM_KINDS}")

    def validate(self, value: Any, owner: str) -> Any:
        """`value` converted to this parameter's type; ValueError naming the allowed range otherwise."""
        where = f"{owner} parameter {shown(self.name)}"
        path = ("preprocessor_params", self.name)
        if self.kind == "bool":
            try:
                return parse_flag(where, value)
            except ValueError:
                raise FieldError(
                    path, f"must be true or false; got {shown(value)}", where
                ) from None
        if self.kind == "choice":
            if value not in self.choices:
                raise FieldError(
                    path, f"must be one of {list(self.choices)}; got {shown(value)}", where
                )
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FieldError(path, f"must be a number; got {shown(value)}", where) from None
        if not np.isfinite(number):
            raise FieldError(path, f"must be finite; got {shown(value)}", where)
        if self.kind == "int":
            if number != int(number):
                raise FieldError(path, f"must be an integer; got {shown(value)}", where)
            number = int(number)
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise FieldError(
                path,
                f"must be between {self.minimum:g} and {self.maximum:g}; got {shown(value)}",
                where,
            )
        return number


RunFunction = Callable[..., np.ndarray]


@dataclass(frozen=True)
class PreprocessorSpec:
    """A preprocessor: `run(image_rgb_uint8, **params) -> map`.

    `weights` names the hub weights the preprocessor needs (None when it needs none), so the UI can say
    what is missing and point to `offline_alternative`, a preprocessor of the same tab that needs none.
    """

    id: str
    label: str
    run: RunFunction
    params: tuple[ParamSpec, ...] = ()
    weights: str | None = None
    offline_alternative: str | None = None
    uses_detect_resolution: bool = True
    thin_lines: bool = (
        False  # line maps: shrinking keeps lines (max-pooling) instead of fading them
    )

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults updated with `params` (a fresh dict each call); unknown names are an error."""
        if params is not None and not isinstance(params, Mapping):
            raise FieldError(
                ("preprocessor_params",),
                f"must map names to values; got {type(params).__name__}",
                f"preprocessor {self.id!r} parameters",
            )
        params = dict(params or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise FieldError(
                ("preprocessor_params",),
                f"has no parameter(s) {shown(unknown)}; known: {sorted(known)}",
                f"preprocessor {self.id!r}",
            )
        values = self.defaults()
        for name, value in params.items():
            values[name] = known[name].validate(value, f"preprocessor {self.id!r}")
        return values


class WeightsUnavailableError(RuntimeError):
    """Weights that a model or annotator needs cannot be loaded (offline, not cached, bad path).

    `missing` says which weights are missing, `how` how to provide them (and why loading failed);
    the message is both, on two lines. For a preprocessor, `preprocessor` is its id and
    `offline_alternative` the id of the one of the same tab that needs no weights (None when there is
    none), for the UI to point to.
    """

    def __init__(
        self,
        missing: str,
        how: str = "",
        preprocessor: str | None = None,
        offline_alternative: str | None = None,
    ) -> None:
        super().__init__(f"{missing}\n{how}" if how else missing)
        self.missing = missing
        self.how = how
        self.preprocessor = preprocessor
        self.offline_alternative = offline_alternative


def preprocessor_runs_here(preprocessor_id: str, hub_online: bool) -> bool:
    """Whether a preprocessor can run now: it needs no weights, they are in the hub cache (or a
    detector was set), or the hub answers (`hub_online`), so they can be downloaded."""
    spec = get_preprocessor(preprocessor_id)
    if spec.weights is None or hub_online:
        return True
    from controlnet_core.preprocessors.annotators import ANNOTATORS

    return ANNOTATORS.weights_present(spec.weights)


def _none(image: np.ndarray) -> np.ndarray:
    return image


def _canny(image: np.ndarray, low_threshold: int, high_threshold: int) -> np.ndarray:
    import cv2

    if low_threshold > high_threshold:
        raise ValueError(
            f"canny low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})"
        )
    edges = cv2.Canny(image, low_threshold, high_threshold)
    return np.stack([edges] * 3, axis=-1)


def _lines_to_white_on_black(gray: np.ndarray, threshold: int, invert: str) -> np.ndarray:
    """Binary white-on-black strokes from a gray drawing, deciding polarity from the background."""
    if invert == "auto":
        # A drawing is mostly background: a bright median means dark lines on a light page.
        dark_lines = float(np.median(gray)) > 127
    else:
        dark_lines = invert == "dark lines on light"
    strokes = gray < threshold if dark_lines else gray > (255 - threshold)
    out = np.where(strokes, 255, 0).astype(np.uint8)
    return np.stack([out] * 3, axis=-1)


def _scribble_threshold(image: np.ndarray, threshold: int, polarity: str) -> np.ndarray:
    gray = image.mean(axis=2)
    return _lines_to_white_on_black(gray, threshold, polarity)


def _scribble_edges(image: np.ndarray, blur: int, stroke_width: int) -> np.ndarray:
    """A fake scribble from a photo with classical edges (works offline; HED is the weighted option).

    Like lllyasviel's fake-scribble: edges, then thickened and cleaned so they look hand-drawn.
    """
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if blur > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), blur)
    median = float(np.median(gray))
    edges = cv2.Canny(gray, int(max(0, 0.66 * median)), int(min(255, 1.33 * median) + 1))
    if stroke_width > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (stroke_width, stroke_width))
        edges = cv2.dilate(edges, kernel)
    # Drop specks: keep connected strokes of a minimal size.
    count, labels, stats, _ = cv2.connectedComponentsWithStats((edges > 0).astype(np.uint8), 8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= max(8, stroke_width * 6)
    out = np.where(keep[labels], 255, 0).astype(np.uint8)
    return np.stack([out] * 3, axis=-1)


def _sketch_canvas(image: np.ndarray, stroke_width: int) -> np.ndarray:
    """Canvas strokes (any colour on a white page) to a white-on-black scribble map."""
    import cv2

    gray = image.mean(axis=2)
    strokes = (gray < 200).astype(np.uint8) * 255
    if stroke_width > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (stroke_width, stroke_width))
        strokes = cv2.dilate(strokes, kernel)
    return np.stack([strokes] * 3, axis=-1)


_SPECS: list[PreprocessorSpec] = [
    PreprocessorSpec(
        id="none",
        label="None (the upload is already a control map)",
        run=_none,
        uses_detect_resolution=False,
    ),
    PreprocessorSpec(
        id="canny",
        label="Canny",
        run=_canny,
        params=(
            ParamSpec("low_threshold", "Low threshold", "int", 100, 1, 255, 1),
            ParamSpec("high_threshold", "High threshold", "int", 200, 1, 255, 1),
        ),
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="scribble_threshold",
        label="Scribble (threshold the drawing)",
        run=_scribble_threshold,
        params=(
            ParamSpec("threshold", "Line threshold", "int", 127, 1, 254, 1),
            ParamSpec(
                "polarity",
                "Lines are",
                "choice",
                "auto",
                choices=("auto", "dark lines on light", "light lines on dark"),
            ),
        ),
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="scribble_edges",
        label="Fake scribble (classical edges, offline)",
        run=_scribble_edges,
        params=(
            ParamSpec("blur", "Blur (sigma)", "float", 2.0, 0.0, 8.0, 0.5),
            ParamSpec("stroke_width", "Stroke width", "int", 3, 1, 15, 1),
        ),
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="sketch_canvas",
        label="Canvas strokes",
        run=_sketch_canvas,
        params=(ParamSpec("stroke_width", "Extra stroke width", "int", 1, 1, 15, 1),),
        uses_detect_resolution=False,
        thin_lines=True,
    ),
]

PREPROCESSORS: MappingProxyType[str, PreprocessorSpec] = MappingProxyType({s.id: s for s in _SPECS})


def register(spec: PreprocessorSpec) -> None:
    """Add a preprocessor to the registry (used by the modules that define the rest)."""
    global PREPROCESSORS
    if spec.id in PREPROCESSORS:
        raise ValueError(f"preprocessor {spec.id!r} is already registered")
    PREPROCESSORS = MappingProxyType({**PREPROCESSORS, spec.id: spec})


def get_preprocessor(preprocessor_id: str) -> PreprocessorSpec:
    """The spec for `preprocessor_id`; ValueError naming the known ids otherwise."""
    try:
        return PREPROCESSORS[preprocessor_id]
    except KeyError:
        raise ValueError(
            f"preprocessor must be one of: {', '.join(PREPROCESSORS)}; got {shown(preprocessor_id)}"
        ) from None


MIN_DETECT_RESOLUTION = 64
MAX_DETECT_RESOLUTION = 2048


def apply_preprocessor(
    preprocessor_id: str,
    image: object,
    output_size: tuple[int, int],
    detect_resolution: int = 512,
    params: Mapping[str, Any] | None = None,
    label_map: bool = False,
) -> np.ndarray:
    """The control map of `image` made by `preprocessor_id`, as HxWx3 uint8 of `output_size` (w, h).

    The input is scaled so its short side is `detect_resolution` before detection (when the
    preprocessor uses it) and the map is scaled to the generation size afterwards: bilinear keeps thin
    lines visible, as the reference does (nearest neighbour would alias them); a `label_map` (class
    colours, e.g. segmentation) is scaled with nearest neighbour, which invents no in-between class.
    """
    spec = get_preprocessor(preprocessor_id)
    values = spec.validate_params(params)
    if not MIN_DETECT_RESOLUTION <= int(detect_resolution) <= MAX_DETECT_RESOLUTION:
        raise ValueError(
            f"detect_resolution must be between {MIN_DETECT_RESOLUTION} and "
            f"{MAX_DETECT_RESOLUTION}; got {detect_resolution}"
        )
    array = to_rgb_array(image)
    if spec.uses_detect_resolution:
        array = resize_short_side(array, int(detect_resolution), multiple=8)
    result = to_rgb_array(spec.run(array, **values))
    if spec.thin_lines:
        result = _keep_lines_when_shrinking(result, output_size)
    return fit_image(result, output_size, Image.NEAREST if label_map else Image.BILINEAR)


def _keep_lines_when_shrinking(result: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Thicken 1-px lines before a large downscale so they survive it at full brightness."""
    import cv2

    scale = min(result.shape[1] / output_size[0], result.shape[0] / output_size[1])
    if scale < 1.5:
        return result
    size = int(np.ceil(scale))
    return cv2.dilate(result, np.ones((size, size), np.uint8))


# The rest of the preprocessors register themselves on import. They import their heavy libraries
# (controlnet_aux, mediapipe, transformers) only when they first run, so this stays cheap.
from controlnet_core.preprocessors import annotators, depth, pose, segmentation  # noqa: E402, F401
