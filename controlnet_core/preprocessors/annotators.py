"""Annotators that need hub weights, loaded lazily, once, and shared by every tab.

`ANNOTATORS` is the one cache of annotator models (HED, PiDiNet, M-LSD, lineart, MiDaS, Zoe, NormalBae,
OpenPose, the segmenter, mediapipe's pose model). Each is described by an `AnnotatorSource`: the weights
it needs and a loader. `ANNOTATORS.get(name)` loads it on first use under a per-name lock (two requests
at once load it once), trying the hub cache first (`local_files_only`) so an offline failure is fast; a
failure raises `WeightsUnavailableError` naming the weights, and is remembered for a minute so a page
full of requests does not retry the network each time. Tests inject randomly initialised networks with
`set_annotator(name, detector)` so the real detector code runs without the weights.

Nothing here imports controlnet_aux, torch or transformers at module import: loaders import lazily.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from controlnet_core import hub
from controlnet_core.concurrency import model_construction_lock
from controlnet_core.errors import failure_reason, shown
from controlnet_core.preprocessors import (
    ParamSpec,
    PreprocessorSpec,
    WeightsUnavailableError,
    register,
)

log = logging.getLogger(__name__)

ANNOTATORS_REPO = "lllyasviel/Annotators"


@dataclass(frozen=True)
class AnnotatorSource:
    """How to get one annotator: `load(local_files_only) -> detector` and the weights it needs.

    `weights` is None for annotators whose model ships inside a package (mediapipe).
    """

    name: str
    load: Callable[[bool], Any]
    weights: str | None = None
    repo: str | None = None
    files: tuple[str, ...] = ()

    def fetch(self) -> None:
        """Download this annotator's files into the hub cache (nothing for packaged models)."""
        if self.repo is None:
            return
        from huggingface_hub import hf_hub_download

        for name in self.files:
            hf_hub_download(self.repo, name)

    def cached_locally(self) -> bool:
        """Whether every file is in the hub cache (a cheap check that imports no model code)."""
        if self.repo is None:
            return True
        from huggingface_hub import try_to_load_from_cache

        return all(isinstance(try_to_load_from_cache(self.repo, f), str) for f in self.files)


class AnnotatorCache:
    """Thread-safe, lazily filled cache of annotator models keyed by name (see the module docstring)."""

    def __init__(self, retry_after_s: float = 60.0) -> None:
        self._sources: dict[str, AnnotatorSource] = {}
        self._models: dict[str, Any] = {}
        self._failures: dict[str, tuple[float, WeightsUnavailableError]] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._call_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.retry_after_s = retry_after_s
        self.load_counts: dict[str, int] = {}

    def add_source(self, source: AnnotatorSource) -> None:
        with self._lock:
            self._sources[source.name] = source
            self._load_locks.setdefault(source.name, threading.Lock())
            self._call_locks.setdefault(source.name, threading.Lock())

    def source(self, name: str) -> AnnotatorSource:
        try:
            return self._sources[name]
        except KeyError:
            raise ValueError(
                f"annotator must be one of: {', '.join(sorted(self._sources))}; got {shown(name)}"
            ) from None

    def set(self, name: str, detector: Any) -> None:
        """Use `detector` for `name` from now on (tests: a detector around a random network)."""
        self.source(name)
        with self._lock:
            self._models[name] = detector
            self._failures.pop(name, None)

    def clear(self, name: str | None = None) -> None:
        """Forget loaded models and remembered failures (all, or one name)."""
        with self._lock:
            for store in (self._models, self._failures):
                if name is None:
                    store.clear()
                else:
                    store.pop(name, None)

    def weights_present(self, weights: str) -> bool:
        """Whether an annotator whose weights are `weights` is loaded, was set, or is in the cache."""
        with self._lock:
            sources = [s for s in self._sources.values() if s.weights == weights]
            ready = any(s.name in self._models for s in sources)
        return ready or any(source.cached_locally() for source in sources)

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, name: str) -> Any:
        """The annotator `name`, loading it on first use; WeightsUnavailableError if it cannot be had."""
        source = self.source(name)
        with self._lock:
            if name in self._models:
                return self._models[name]
        with self._load_locks[name]:
            with self._lock:
                if name in self._models:
                    return self._models[name]
                failure = self._failures.get(name)
            if failure is not None and time.monotonic() - failure[0] < self.retry_after_s:
                raise WeightsUnavailableError(failure[1].missing, failure[1].how)
            try:
                detector = _load_local_first(source)
            except WeightsUnavailableError as error:
                with self._lock:
                    self._failures[name] = (time.monotonic(), error)
                raise
            with self._lock:
                self._models[name] = detector
                self._failures.pop(name, None)
                self.load_counts[name] = self.load_counts.get(name, 0) + 1
            return detector

    @contextmanager
    def using(self, name: str) -> Iterator[Any]:
        """The annotator, held exclusively for one call (some detectors keep per-call state)."""
        detector = self.get(name)
        with self._call_locks[name]:
            yield detector


def _load_local_first(source: AnnotatorSource) -> Any:
    """Load from the hub cache; from the network only when that fails and the hub is not offline."""
    started = time.perf_counter()
    try:
        if not source.cached_locally():
            raise FileNotFoundError(f"not in the Hugging Face cache: {', '.join(source.files)}")
        with model_construction_lock:
            detector = source.load(True)
    except Exception as local_error:  # not cached: the network is the only other place
        if source.weights is None or not hub.hub_answers():
            raise WeightsUnavailableError(*_missing(source, local_error)) from local_error
        try:
            source.fetch()  # outside the lock: a download must not hold up other loads
            with model_construction_lock:
                detector = source.load(False)
        except Exception as error:
            raise WeightsUnavailableError(*_missing(source, error)) from error
    log.info("loaded annotator %s in %.1f s", source.name, time.perf_counter() - started)
    return detector


def _missing(source: AnnotatorSource, error: Exception) -> tuple[str, str]:
    """What is missing, and how to get it with why loading failed (shortened)."""
    reason = failure_reason(error)
    if len(reason) > 160:  # a whole word, then "…": the tail of a network error says nothing new
        reason = reason[:160].rsplit(" ", 1)[0] + "…"
    if source.weights is None:
        return f"The {source.name} annotator could not be loaded.", f"({reason})"
    return (
        f"Missing weights: {source.weights}.",
        "To use it, let the app reach the Hugging Face hub once (the weights are then cached) or "
        f"copy them into the Hugging Face cache. ({reason})",
    )


ANNOTATORS = AnnotatorCache()


def set_annotator(name: str, detector: Any) -> None:
    """Inject a ready detector into the shared cache (e.g. one built around a random network)."""
    ANNOTATORS.set(name, detector)


def annotator_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _aux_loader(class_name: str, **kwargs: Any) -> Callable[[bool], Any]:
    """A loader for a controlnet_aux detector class from lllyasviel/Annotators."""

    def load(local_files_only: bool) -> Any:
        import controlnet_aux

        cls = getattr(controlnet_aux, class_name)
        detector = cls.from_pretrained(ANNOTATORS_REPO, local_files_only=local_files_only, **kwargs)
        return detector.to(annotator_device()) if hasattr(detector, "to") else detector

    return load


def _hub(*files: str) -> str:
    return f"{ANNOTATORS_REPO}: {', '.join(files)}"


def aux_source(name: str, class_name: str, *files: str) -> AnnotatorSource:
    """The source of a controlnet_aux detector whose weights are `files` of lllyasviel/Annotators."""
    return AnnotatorSource(name, _aux_loader(class_name), _hub(*files), ANNOTATORS_REPO, files)


for _source in (
    aux_source("hed", "HEDdetector", "ControlNetHED.pth"),
    aux_source("pidinet", "PidiNetDetector", "table5_pidinet.pth"),
    aux_source("mlsd", "MLSDdetector", "mlsd_large_512_fp32.pth"),
    aux_source("lineart", "LineartDetector", "sk_model.pth", "sk_model2.pth"),
    aux_source("lineart_anime", "LineartAnimeDetector", "netG.pth"),
    aux_source("midas", "MidasDetector", "dpt_hybrid-midas-501f0c75.pt"),
    aux_source("zoe", "ZoeDetector", "ZoeD_M12_N.pt"),
    aux_source("normalbae", "NormalBaeDetector", "scannet.pt"),
):
    ANNOTATORS.add_source(_source)


# --- helpers shared by the preprocessor modules --------------------------------------------------


def weighted_spec(
    id: str,
    label: str,
    run: Callable[..., np.ndarray],
    weights: str,
    offline_alternative: str | None,
    **kwargs: Any,
) -> PreprocessorSpec:
    """A spec whose `run` names, in a missing-weights error, itself and the preprocessor of the tab
    that works offline."""

    def run_or_name_alternative(image: np.ndarray, **params: Any) -> np.ndarray:
        try:
            return run(image, **params)
        except WeightsUnavailableError as error:
            raise WeightsUnavailableError(
                f"{label} — {error.missing}",
                error.how,
                preprocessor=id,
                offline_alternative=offline_alternative,
            ) from error

    return PreprocessorSpec(
        id=id,
        label=label,
        run=run_or_name_alternative,
        weights=weights,
        offline_alternative=offline_alternative,
        **kwargs,
    )


def to_rgb_uint8(result: Any) -> np.ndarray:
    """A detector output (PIL or array, gray or RGB) as HxWx3 uint8."""
    array = np.asarray(result)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array


def _aux_call(name: str, image: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Run a controlnet_aux detector on an image that is already at the detect resolution."""
    side = min(image.shape[:2])
    with ANNOTATORS.using(name) as detector:
        result = detector(
            image, detect_resolution=side, image_resolution=side, output_type="np", **kwargs
        )
    return to_rgb_uint8(result)


# --- soft edges (HED, PiDiNet) and their offline alternative --------------------------------------


def _hed(image: np.ndarray) -> np.ndarray:
    return _aux_call("hed", image, safe=False)


def _hed_safe(image: np.ndarray) -> np.ndarray:
    return _aux_call("hed", image, safe=True)


def _pidinet(image: np.ndarray) -> np.ndarray:
    return _aux_call("pidinet", image, safe=False)


def _pidinet_safe(image: np.ndarray) -> np.ndarray:
    return _aux_call("pidinet", image, safe=True)


def _scribble_hed(image: np.ndarray) -> np.ndarray:
    return _aux_call("hed", image, scribble=True)


def softedge_classical(image: np.ndarray, blur: float, gain: float) -> np.ndarray:
    """Soft edges without a network: blurred Sobel gradient magnitude, white on black.

    Like HED's output, strong outlines are bright and texture fades out; `gain` scales the magnitude
    relative to its 98th percentile.
    """
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if blur > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), blur)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.hypot(gx, gy)
    scale = float(np.percentile(magnitude, 98)) or 1.0
    edges = np.clip(magnitude / scale * gain, 0.0, 1.0) ** 0.8
    out = np.rint(edges * 255).astype(np.uint8)
    return np.stack([out] * 3, axis=-1)


# --- straight lines ------------------------------------------------------------------------------


def _mlsd(image: np.ndarray, value_threshold: float, distance_threshold: float) -> np.ndarray:
    return _aux_call("mlsd", image, thr_v=value_threshold, thr_d=distance_threshold)


def lines_hough(
    image: np.ndarray, threshold: int, min_line_length: int, max_line_gap: int
) -> np.ndarray:
    """Straight lines without a network: probabilistic Hough on Canny edges, white on black."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    gray = cv2.GaussianBlur(gray, (0, 0), 1.0)
    median = float(np.median(gray))
    edges = cv2.Canny(gray, int(max(0, 0.66 * median)), int(min(255, 1.33 * median) + 1))
    out = np.zeros(gray.shape, dtype=np.uint8)
    lines = cv2.HoughLinesP(
        edges,
        1,
        np.pi / 180,
        threshold,
        minLineLength=min_line_length,
        maxLineGap=max_line_gap,
    )
    for x1, y1, x2, y2 in lines.reshape(-1, 4) if lines is not None else ():
        cv2.line(out, (int(x1), int(y1)), (int(x2), int(y2)), 255, 1)
    return np.stack([out] * 3, axis=-1)


# --- lineart ---------------------------------------------------------------------------------------


def _lineart(image: np.ndarray) -> np.ndarray:
    return _aux_call("lineart", image, coarse=False)


def _lineart_coarse(image: np.ndarray) -> np.ndarray:
    return _aux_call("lineart", image, coarse=True)


def _lineart_anime(image: np.ndarray) -> np.ndarray:
    return _aux_call("lineart_anime", image)


def lineart_standard(
    image: np.ndarray, gaussian_sigma: float, intensity_threshold: int
) -> np.ndarray:
    """controlnet_aux's LineartStandardDetector (no network): dark detail relative to a blur."""
    import cv2

    x = image.astype(np.float32)
    g = cv2.GaussianBlur(x, (0, 0), gaussian_sigma)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    above = intensity[intensity > intensity_threshold]
    intensity /= max(16.0, float(np.median(above)) if above.size else 16.0)
    intensity *= 127
    out = intensity.clip(0, 255).astype(np.uint8)
    return np.stack([out] * 3, axis=-1)


# --- content shuffle -------------------------------------------------------------------------------


def _noise_disk(rng: np.random.Generator, height: int, width: int, f: int) -> np.ndarray:
    """controlnet_aux's `make_noise_disk` (smooth random field in [0, 1]) from a seeded generator."""
    import cv2

    noise = rng.uniform(0, 1, size=((height // f) + 2, (width // f) + 2))
    noise = cv2.resize(noise, (width + 2 * f, height + 2 * f), interpolation=cv2.INTER_CUBIC)
    noise = noise[f : f + height, f : f + width]
    noise = noise - noise.min()
    return noise / max(float(noise.max()), 1e-8)


def content_shuffle(image: np.ndarray, seed: int, shuffle_scale: int) -> np.ndarray:
    """ContentShuffleDetector's random warp, seeded so the same seed gives the same map.

    (controlnet_aux draws from numpy's global generator; reseeding that would not be thread-safe, so
    the same two-noise-field remap is done here with a private `np.random.Generator`.)
    """
    import cv2

    height, width = image.shape[:2]
    rng = np.random.default_rng(seed)
    x = _noise_disk(rng, height, width, shuffle_scale) * float(width - 1)
    y = _noise_disk(rng, height, width, shuffle_scale) * float(height - 1)
    flow = np.stack([x, y], axis=2).astype(np.float32)
    return cv2.remap(image, flow, None, cv2.INTER_LINEAR)


# --- registration ------------------------------------------------------------------------------------

_SOFTEDGE_ALTERNATIVE = "softedge_classical"

for _spec in (
    PreprocessorSpec(
        id="softedge_classical",
        label="Soft edges (classical gradients, offline)",
        run=softedge_classical,
        params=(
            ParamSpec("blur", "Blur (sigma)", "float", 1.5, 0.0, 8.0, 0.5),
            ParamSpec("gain", "Gain", "float", 1.0, 0.2, 4.0, 0.1),
        ),
    ),
    weighted_spec(
        "hed",
        "HED",
        _hed,
        _hub("ControlNetHED.pth"),
        _SOFTEDGE_ALTERNATIVE,
    ),
    weighted_spec(
        "hed_safe",
        "HED (safe)",
        _hed_safe,
        _hub("ControlNetHED.pth"),
        _SOFTEDGE_ALTERNATIVE,
    ),
    weighted_spec(
        "pidinet",
        "PiDiNet",
        _pidinet,
        _hub("table5_pidinet.pth"),
        _SOFTEDGE_ALTERNATIVE,
    ),
    weighted_spec(
        "pidinet_safe",
        "PiDiNet (safe)",
        _pidinet_safe,
        _hub("table5_pidinet.pth"),
        _SOFTEDGE_ALTERNATIVE,
    ),
    weighted_spec(
        "scribble_hed",
        "Fake scribble (HED)",
        _scribble_hed,
        _hub("ControlNetHED.pth"),
        "scribble_edges",
        thin_lines=True,
    ),
    weighted_spec(
        "mlsd",
        "M-LSD",
        _mlsd,
        _hub("mlsd_large_512_fp32.pth"),
        "lines_hough",
        params=(
            ParamSpec("value_threshold", "Value threshold", "float", 0.1, 0.01, 2.0, 0.01),
            ParamSpec("distance_threshold", "Distance threshold", "float", 0.1, 0.01, 20.0, 0.01),
        ),
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="lines_hough",
        label="Straight lines (Hough, offline)",
        run=lines_hough,
        params=(
            ParamSpec("threshold", "Votes threshold", "int", 60, 10, 300, 5),
            ParamSpec("min_line_length", "Minimum line length", "int", 40, 5, 400, 5),
            ParamSpec("max_line_gap", "Maximum gap", "int", 8, 0, 50, 1),
        ),
        thin_lines=True,
    ),
    weighted_spec(
        "lineart",
        "Lineart",
        _lineart,
        _hub("sk_model.pth", "sk_model2.pth"),
        "lineart_standard",
        thin_lines=True,
    ),
    weighted_spec(
        "lineart_coarse",
        "Lineart (coarse)",
        _lineart_coarse,
        _hub("sk_model.pth", "sk_model2.pth"),
        "lineart_standard",
        thin_lines=True,
    ),
    weighted_spec(
        "lineart_anime",
        "Lineart (anime)",
        _lineart_anime,
        _hub("netG.pth"),
        "lineart_standard",
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="lineart_standard",
        label="Lineart standard (offline)",
        run=lineart_standard,
        params=(
            ParamSpec("gaussian_sigma", "Blur (sigma)", "float", 6.0, 0.5, 20.0, 0.5),
            ParamSpec("intensity_threshold", "Intensity threshold", "int", 8, 0, 64, 1),
        ),
        thin_lines=True,
    ),
    PreprocessorSpec(
        id="shuffle",
        label="Content shuffle (seeded)",
        run=content_shuffle,
        params=(
            ParamSpec("seed", "Shuffle seed", "int", 0, 0, 2**31 - 1, 1),
            ParamSpec("shuffle_scale", "Warp scale (px)", "int", 256, 16, 512, 16),
        ),
    ),
):
    register(_spec)
