"""Human pose as OpenPose skeletons: controlnet_aux's OpenPose, mediapipe (offline) and presets.

The map the OpenPose ControlNet expects is the COCO-18 body skeleton drawn as controlnet_aux's
`draw_bodypose` draws it: 17 limbs as filled ellipses in 60 % of their colour, then 18 joints as discs
of radius 4, on black. `draw_openpose` reproduces that drawing exactly without importing controlnet_aux
(tests compare both pixel for pixel).

Offline, mediapipe's bundled full pose model (`Pose(static_image_mode=True, model_complexity=1)`) finds
33 landmarks; `mediapipe_to_coco18` maps them to the 18 OpenPose keypoints (the neck is the midpoint of
the shoulders). Presets are data: 18 normalised (x, y) points per pose, drawn with no photo at all, with
mirror / scale / shift applied by `transform_keypoints`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from controlnet_core.errors import shown
from controlnet_core.preprocessors import ParamSpec, PreprocessorSpec, register
from controlnet_core.preprocessors.annotators import (
    ANNOTATORS,
    AnnotatorSource,
    _aux_call,
    _hub,
    aux_source,
    weighted_spec,
)

Keypoints = list[tuple[float, float] | None]

COCO18_NAMES = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)

# Limbs as 1-based keypoint pairs and the 18 colours, in controlnet_aux/open_pose/util.py's order.
LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
    (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICK_WIDTH = 4
JOINT_RADIUS = 4

# Index of each keypoint's mirror image (right <-> left).
_MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)


def draw_openpose(
    keypoints: Sequence[tuple[float, float] | None], width: int, height: int
) -> np.ndarray:
    """The OpenPose body map (HxWx3 uint8) of 18 normalised keypoints; None marks a missing one."""
    import cv2

    if len(keypoints) != 18:
        raise ValueError(f"an OpenPose body needs 18 keypoints; got {len(keypoints)}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for (first, second), color in zip(LIMBS, COLORS, strict=False):
        a, b = keypoints[first - 1], keypoints[second - 1]
        if a is None or b is None:
            continue
        ys = np.array([a[0], b[0]]) * float(width)
        xs = np.array([a[1], b[1]]) * float(height)
        mean_x, mean_y = np.mean(xs), np.mean(ys)
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(xs[0] - xs[1], ys[0] - ys[1]))
        polygon = cv2.ellipse2Poly(
            (int(mean_y), int(mean_x)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
    for point, color in zip(keypoints, COLORS, strict=True):
        if point is None:
            continue
        cv2.circle(
            canvas,
            (int(point[0] * width), int(point[1] * height)),
            JOINT_RADIUS,
            color,
            thickness=-1,
        )
    return canvas


# --- mediapipe -> COCO-18 -------------------------------------------------------------------------------

# COCO-18 index -> mediapipe Pose landmark index (the neck, 1, has none: midpoint of the shoulders).
MEDIAPIPE_TO_COCO18 = MappingProxyType(
    {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25,
     13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
)  # fmt: skip


def mediapipe_to_coco18(
    landmarks: Sequence[tuple[float, float, float]], min_visibility: float
) -> Keypoints:
    """18 OpenPose keypoints from mediapipe's 33 (x, y, visibility) landmarks (normalised).

    Landmarks below `min_visibility` or outside the image are dropped, as OpenPose would not see them.
    """
    if len(landmarks) != 33:
        raise ValueError(f"mediapipe pose gives 33 landmarks; got {len(landmarks)}")

    def visible(index: int) -> tuple[float, float] | None:
        x, y, visibility = landmarks[index]
        if visibility < min_visibility or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return None
        return (float(x), float(y))

    keypoints: Keypoints = [None] * 18
    for coco, mp_index in MEDIAPIPE_TO_COCO18.items():
        keypoints[coco] = visible(mp_index)
    right, left = keypoints[2], keypoints[5]
    if right is not None and left is not None:
        keypoints[1] = ((right[0] + left[0]) / 2, (right[1] + left[1]) / 2)
    return keypoints


def _load_mediapipe_pose(local_files_only: bool):
    import mediapipe as mp

    # model_complexity=1 is the model inside the 0.10.14 wheel; 0 and 2 would be downloaded.
    return mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, min_detection_confidence=0.5
    )


ANNOTATORS.add_source(AnnotatorSource("mediapipe_pose", _load_mediapipe_pose, weights=None))
ANNOTATORS.add_source(
    aux_source(
        "openpose", "OpenposeDetector", "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
    )
)


def detect_mediapipe_keypoints(image: np.ndarray, min_visibility: float = 0.5) -> Keypoints | None:
    """The COCO-18 keypoints of the most prominent person in an RGB image, or None if nobody."""
    with ANNOTATORS.using("mediapipe_pose") as pose:
        result = pose.process(np.ascontiguousarray(image))
    if result.pose_landmarks is None:
        return None
    landmarks = [(lm.x, lm.y, lm.visibility) for lm in result.pose_landmarks.landmark]
    return mediapipe_to_coco18(landmarks, min_visibility)


def _mediapipe_pose(image: np.ndarray, min_visibility: float) -> np.ndarray:
    height, width = image.shape[:2]
    keypoints = detect_mediapipe_keypoints(image, min_visibility)
    if keypoints is None:
        raise ValueError(
            "mediapipe found no person in this image: try a photo where one person is fully "
            "visible, or a pose preset"
        )
    return draw_openpose(keypoints, width, height)


def _openpose(image: np.ndarray, include_hand: bool, include_face: bool) -> np.ndarray:
    return _aux_call(
        "openpose", image, include_body=True, include_hand=include_hand, include_face=include_face
    )


# --- presets ---------------------------------------------------------------------------------------------


def _pose(**overrides: tuple[float, float] | None) -> tuple[tuple[float, float] | None, ...]:
    """A frontal standing body (the person faces the viewer: their right is the image's left)."""
    base = {
        "nose": (0.50, 0.17),
        "neck": (0.50, 0.27),
        "right_shoulder": (0.41, 0.28),
        "right_elbow": (0.38, 0.42),
        "right_wrist": (0.37, 0.55),
        "left_shoulder": (0.59, 0.28),
        "left_elbow": (0.62, 0.42),
        "left_wrist": (0.63, 0.55),
        "right_hip": (0.45, 0.55),
        "right_knee": (0.45, 0.72),
        "right_ankle": (0.45, 0.89),
        "left_hip": (0.55, 0.55),
        "left_knee": (0.55, 0.72),
        "left_ankle": (0.55, 0.89),
        "right_eye": (0.48, 0.155),
        "left_eye": (0.52, 0.155),
        "right_ear": (0.46, 0.17),
        "left_ear": (0.54, 0.17),
    }
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown keypoint(s) {sorted(unknown)}")
    base.update(overrides)
    return tuple(base[name] for name in COCO18_NAMES)


POSE_PRESETS = MappingProxyType(
    {
        "standing": _pose(),
        "t-pose": _pose(
            right_elbow=(0.28, 0.28),
            right_wrist=(0.15, 0.28),
            left_elbow=(0.72, 0.28),
            left_wrist=(0.85, 0.28),
        ),
        "arms up": _pose(
            right_elbow=(0.37, 0.16),
            right_wrist=(0.35, 0.04),
            left_elbow=(0.63, 0.16),
            left_wrist=(0.65, 0.04),
        ),
        "waving": _pose(right_elbow=(0.30, 0.24), right_wrist=(0.29, 0.10)),
        "walking": _pose(
            right_elbow=(0.36, 0.40),
            right_wrist=(0.33, 0.52),
            left_elbow=(0.64, 0.41),
            left_wrist=(0.68, 0.51),
            right_hip=(0.46, 0.55),
            right_knee=(0.41, 0.71),
            right_ankle=(0.36, 0.87),
            left_hip=(0.54, 0.55),
            left_knee=(0.58, 0.71),
            left_ankle=(0.62, 0.88),
        ),
        "sitting": _pose(
            right_elbow=(0.37, 0.44),
            right_wrist=(0.41, 0.60),
            left_elbow=(0.63, 0.44),
            left_wrist=(0.59, 0.60),
            right_hip=(0.45, 0.58),
            right_knee=(0.40, 0.66),
            right_ankle=(0.40, 0.87),
            left_hip=(0.55, 0.58),
            left_knee=(0.60, 0.66),
            left_ankle=(0.60, 0.87),
        ),
    }
)


def transform_keypoints(
    keypoints: Sequence[tuple[float, float] | None],
    mirror: bool = False,
    scale: float = 1.0,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
) -> Keypoints:
    """Keypoints mirrored (left/right swapped, as OpenPose would see a mirrored photo), scaled about
    the skeleton's centre and shifted by fractions of the canvas; points that leave it are dropped."""
    if not 0.1 <= scale <= 3.0:
        raise ValueError(f"scale must be between 0.1 and 3; got {shown(scale)}")
    for name, shift in (("shift_x", shift_x), ("shift_y", shift_y)):
        if not -1.0 <= shift <= 1.0:
            raise ValueError(f"{name} must be between -1 and 1; got {shown(shift)}")
    points = list(keypoints)
    if mirror:
        points = [
            None
            if points[_MIRROR[i]] is None
            else (1.0 - points[_MIRROR[i]][0], points[_MIRROR[i]][1])
            for i in range(18)
        ]
    present = [p for p in points if p is not None]
    if not present:
        return [None] * 18
    xs, ys = [p[0] for p in present], [p[1] for p in present]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    out: Keypoints = []
    for p in points:
        if p is None:
            out.append(None)
            continue
        x = cx + (p[0] - cx) * scale + shift_x
        y = cy + (p[1] - cy) * scale + shift_y
        out.append((x, y) if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 else None)
    return out


def render_pose_preset(
    name: str,
    width: int = 512,
    height: int = 512,
    mirror: bool = False,
    scale: float = 1.0,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
) -> np.ndarray:
    """The OpenPose map (HxWx3 uint8) of a preset pose, ready to use with preprocessor "none".

    The preset's coordinates are for a square canvas; on other aspect ratios the figure is fitted
    into the central square so the body keeps its proportions.
    """
    if name not in POSE_PRESETS:
        raise ValueError(f"pose preset must be one of {list(POSE_PRESETS)}; got {shown(name)}")
    for label, side in (("width", width), ("height", height)):
        if not 64 <= int(side) <= 2048:
            raise ValueError(f"{label} must be between 64 and 2048; got {shown(side)}")
    points = transform_keypoints(POSE_PRESETS[name], mirror, scale, shift_x, shift_y)
    side = min(width, height)
    off_x, off_y = (width - side) / 2, (height - side) / 2
    fitted = [
        None if p is None else ((off_x + p[0] * side) / width, (off_y + p[1] * side) / height)
        for p in points
    ]
    return draw_openpose(fitted, int(width), int(height))


for _spec in (
    weighted_spec(
        "openpose",
        "OpenPose",
        _openpose,
        _hub("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
        "mediapipe_pose",
        params=(
            ParamSpec("include_hand", "Hands", "bool", False),
            ParamSpec("include_face", "Face", "bool", False),
        ),
    ),
    PreprocessorSpec(
        id="mediapipe_pose",
        label="Body pose (mediapipe, offline)",
        run=_mediapipe_pose,
        params=(
            ParamSpec(
                "min_visibility",
                "Minimum landmark visibility",
                "float",
                0.5,
                0.0,
                1.0,
                0.05,
            ),
        ),
    ),
):
    register(_spec)
