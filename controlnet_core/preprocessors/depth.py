"""Depth and normal maps: MiDaS / Zoe / NormalBae (hub weights) and normal-from-depth (offline).

Normal from depth is ControlNet 1.0's method (lllyasviel's annotator/midas): Sobel gradients of a depth
map (bright = near) give the x/y slope, a constant `a` the z part; pixels whose normalised depth is below
the background threshold get a flat normal; the vector is normalised and mapped from [-1, 1] to
[0, 255]. It needs no weights, so the normal tab works offline on an uploaded depth map.
"""

from __future__ import annotations

import numpy as np

from controlnet_core.errors import shown
from controlnet_core.preprocessors import ParamSpec, PreprocessorSpec, register
from controlnet_core.preprocessors.annotators import (
    ANNOTATORS,
    _aux_call,
    _hub,
    to_rgb_uint8,
    weighted_spec,
)

# Channel order of the normal map. ControlNet 1.1's normalbae model reads ScanNet's protocol; the 1.0
# normal model was trained on the same (x, y, z) vectors stored in BGR order, which controlnet_aux's
# MidasDetector reproduces by reversing the channels.
NORMAL_LAYOUTS = ("ControlNet 1.1 (RGB = x, y, z)", "ControlNet 1.0 (BGR, as controlnet_aux)")


def depth_to_gray(image: np.ndarray) -> np.ndarray:
    """An uploaded depth map (gray or RGB; bright = near) as float32 in [0, 1]."""
    depth = image.astype(np.float32)
    if depth.ndim == 3:
        depth = depth.mean(axis=2)
    low, high = float(depth.min()), float(depth.max())
    return (depth - low) / (high - low) if high > low else np.zeros_like(depth)


def normal_from_depth(
    depth: np.ndarray,
    strength: float = np.pi * 2.0,
    bg_threshold: float = 0.4,
    layout: str = NORMAL_LAYOUTS[0],
) -> np.ndarray:
    """The normal map of a depth map (HxW float, larger = nearer), ControlNet 1.0's way.

    x = Sobel d/dx, y = Sobel d/dy of the depth in 0..255 units, z = `strength` (smaller = steeper
    looking surfaces); where the normalised depth is below `bg_threshold` x and y are zeroed (flat
    background). With the default layout a surface whose right side is nearer (it faces left) has a
    red channel above 128, one whose lower side is nearer (it faces up, like a floor) a green channel
    above 128, and every surface a blue channel above 128.
    """
    import cv2

    if layout not in NORMAL_LAYOUTS:
        raise ValueError(f"layout must be one of {list(NORMAL_LAYOUTS)}; got {shown(layout)}")
    depth = depth.astype(np.float32)
    low, high = float(depth.min()), float(depth.max())
    normalised = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
    values = normalised * 255.0
    x = cv2.Sobel(values, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(values, cv2.CV_32F, 0, 1, ksize=3)
    z = np.full_like(x, strength)
    background = normalised < bg_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, z], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    out = np.clip(normal * 127.5 + 127.5, 0, 255).astype(np.uint8)
    if layout == NORMAL_LAYOUTS[1]:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def _normal_from_depth_map(
    image: np.ndarray, strength: float, bg_threshold: float, layout: str
) -> np.ndarray:
    return normal_from_depth(depth_to_gray(image), strength, bg_threshold, layout)


def _midas(image: np.ndarray) -> np.ndarray:
    return _aux_call("midas", image)


def _zoe(image: np.ndarray) -> np.ndarray:
    return _aux_call("zoe", image)


def _normal_midas(
    image: np.ndarray, strength: float, bg_threshold: float, layout: str
) -> np.ndarray:
    depth = _aux_call("midas", image)
    return normal_from_depth(depth.mean(axis=2), strength, bg_threshold, layout)


def _normalbae(image: np.ndarray) -> np.ndarray:
    side = min(image.shape[:2])
    with ANNOTATORS.using("normalbae") as detector:
        result = detector(image, detect_resolution=side, image_resolution=side, output_type="np")
    return to_rgb_uint8(result)


_NORMAL_PARAMS = (
    ParamSpec(
        "strength",
        "Flatness (z)",
        "float",
        round(float(np.pi * 2.0), 3),
        0.5,
        30.0,
        0.1,
        info="The z part of each normal: smaller makes slopes look steeper.",
    ),
    ParamSpec(
        "bg_threshold",
        "Background threshold",
        "float",
        0.4,
        0.0,
        1.0,
        0.01,
        info="Depth below this (0 = far, 1 = near) is treated as flat background.",
    ),
    ParamSpec("layout", "Channel layout", "choice", NORMAL_LAYOUTS[0], choices=NORMAL_LAYOUTS),
)

for _spec in (
    weighted_spec(
        "midas",
        "MiDaS (DPT hybrid)",
        _midas,
        _hub("dpt_hybrid-midas-501f0c75.pt"),
        "none",
    ),
    weighted_spec(
        "zoe",
        "ZoeDepth",
        _zoe,
        _hub("ZoeD_M12_N.pt"),
        "none",
    ),
    weighted_spec(
        "normalbae",
        "NormalBae",
        _normalbae,
        _hub("scannet.pt"),
        "normal_from_depth",
    ),
    weighted_spec(
        "normal_midas",
        "Normal from MiDaS depth (ControlNet 1.0)",
        _normal_midas,
        _hub("dpt_hybrid-midas-501f0c75.pt"),
        "normal_from_depth",
        params=_NORMAL_PARAMS,
    ),
    PreprocessorSpec(
        id="normal_from_depth",
        label="Normal from an uploaded depth map (offline)",
        run=_normal_from_depth_map,
        params=_NORMAL_PARAMS,
    ),
):
    register(_spec)
