"""Preprocessors: offline ones by their content, hub-weight ones through their real code with random
networks, the missing-weights path, the shared annotator cache and the per-image map cache."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import skimage.data

from controlnet_core.modalities import MODALITIES
from controlnet_core.preprocessors import (
    PREPROCESSORS,
    WeightsUnavailableError,
    apply_preprocessor,
    get_preprocessor,
)
from controlnet_core.preprocessors.annotators import (
    ANNOTATORS,
    AnnotatorCache,
    AnnotatorSource,
    set_annotator,
)
from controlnet_core.preprocessors.depth import NORMAL_LAYOUTS, normal_from_depth
from controlnet_core.preprocessors.pose import (
    COLORS,
    POSE_PRESETS,
    detect_mediapipe_keypoints,
    draw_openpose,
    render_pose_preset,
    transform_keypoints,
)
from controlnet_core.preprocessors.segmentation import (
    ADE20K_CLASSES,
    ADE20K_NAMES,
    ADE20K_PALETTE,
    PAINT_CLASSES,
    class_color,
    snap_to_palette,
)
from tests.conftest import Arrivals, ReportingLock

OFFLINE = [pid for pid, spec in PREPROCESSORS.items() if spec.weights is None]
WEIGHTED = [pid for pid, spec in PREPROCESSORS.items() if spec.weights is not None]


def photo(width: int = 128, height: int | None = None) -> np.ndarray:
    from PIL import Image

    size = (width, height or width)
    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize(size))


# --- the registry ---------------------------------------------------------------------------------


def test_registry_has_ten_modalities_each_with_none_and_an_offline_preprocessor():
    assert len(MODALITIES) >= 10
    for modality in MODALITIES.values():
        assert "none" in modality.preprocessors, modality.id
        for pid in modality.preprocessors:
            spec = get_preprocessor(pid)
            if spec.weights:  # its offline alternative is offered in the same tab
                assert spec.offline_alternative in modality.preprocessors, (modality.id, pid)
                assert PREPROCESSORS[spec.offline_alternative].weights is None


def test_importing_the_preprocessors_loads_no_heavy_library():
    code = (
        "import sys, controlnet_core.preprocessors as p; "
        "heavy = [m for m in ('torch', 'controlnet_aux', 'mediapipe', 'transformers') "
        "if m in sys.modules]; print(len(p.PREPROCESSORS), heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, heavy = out.stdout.strip().split(" ", 1)
    assert int(count) == len(PREPROCESSORS) and heavy == "[]"


@pytest.mark.parametrize("pid", OFFLINE)
def test_every_offline_preprocessor_gives_a_map_of_the_output_size(pid):
    image = photo(96)
    result = apply_preprocessor(pid, image, (64, 64), detect_resolution=96)
    assert result.shape == (64, 64, 3) and result.dtype == np.uint8


# --- content of the offline maps ------------------------------------------------------------------


def test_canny_of_a_square_has_edges_on_its_border_only():
    image = np.full((128, 128, 3), 255, np.uint8)
    image[32:96, 32:96] = 0
    edges = apply_preprocessor("canny", image, (128, 128), detect_resolution=128)[..., 0]
    border = np.zeros((128, 128), bool)
    border[30:98, 30:98] = True
    border[34:94, 34:94] = False
    assert edges[border].max() == 255
    assert edges[~border].max() == 0
    # every side of the square is found
    assert edges[30:34, 40:88].max() == edges[94:98, 40:88].max() == 255
    assert edges[40:88, 30:34].max() == edges[40:88, 94:98].max() == 255


def test_normal_from_depth_of_ramps_points_the_right_way():
    ys, xs = np.mgrid[0:128, 0:128].astype(np.float32)
    right_is_near = normal_from_depth(xs / 127, bg_threshold=0.0)
    inner = (slice(8, 120), slice(8, 120))
    r, g, b = (right_is_near[inner][..., c].astype(int) for c in range(3))
    # facing left (towards -x): x of the normal points left, stored as red above 128
    assert (r > 150).all() and (abs(g - 128) <= 1).all() and (b > 128).all()
    bottom_is_near = normal_from_depth(ys / 127, bg_threshold=0.0)
    r, g, b = (bottom_is_near[inner][..., c].astype(int) for c in range(3))
    assert (g > 150).all() and (abs(r - 128) <= 1).all()
    # ControlNet 1.0's layout is the same vectors in BGR order
    old = normal_from_depth(xs / 127, bg_threshold=0.0, layout=NORMAL_LAYOUTS[1])
    assert np.array_equal(old, right_is_near[..., ::-1])


def test_normal_from_depth_flattens_the_background():
    depth = np.zeros((64, 64), np.float32)
    depth[:, 32:] = np.linspace(0.5, 1.0, 32)[None, :]
    normals = normal_from_depth(depth, bg_threshold=0.3)
    assert (normals[:, :28] == (127, 127, 255)).all()  # 0 maps to 127 (truncated), as in 1.0
    assert normals[:, 36:60, 0].min() > 128


def test_uploaded_depth_map_works_offline_in_the_normal_tab():
    from PIL import Image

    from demos.examples import depth_scene

    result = apply_preprocessor("normal_from_depth", Image.open(depth_scene()), (64, 64))
    assert result.shape == (64, 64, 3) and result[..., 2].min() > 128


def test_mediapipe_pose_of_the_astronaut_is_a_skeleton_inside_the_person():
    image = skimage.data.astronaut()
    keypoints = detect_mediapipe_keypoints(image)
    names = dict(zip(("nose", "neck", "rshoulder", "lshoulder"), (0, 1, 2, 5), strict=True))
    nose, neck, rshoulder, lshoulder = (keypoints[i] for i in names.values())
    assert None not in (nose, neck, rshoulder, lshoulder)
    # the face of the astronaut is in the upper middle of the photo; her shoulders below it
    for index in (0, 14, 15, 16, 17):
        x, y = keypoints[index]
        assert 0.3 < x < 0.6 and 0.08 < y < 0.4, index
    assert rshoulder[0] < nose[0] < lshoulder[0]
    assert 0.35 < rshoulder[1] < 0.65 and 0.35 < lshoulder[1] < 0.65
    assert neck == pytest.approx(
        ((rshoulder[0] + lshoulder[0]) / 2, (rshoulder[1] + lshoulder[1]) / 2)
    )
    drawn = apply_preprocessor("mediapipe_pose", image, (512, 512), detect_resolution=512)
    x, y = int(nose[0] * 512), int(nose[1] * 512)
    assert (drawn[y, x] == COLORS[0]).all()  # the nose joint, in OpenPose's nose colour
    assert (drawn[:40] == 0).all()  # nothing above the head


def test_mediapipe_without_a_person_says_so():
    with pytest.raises(ValueError, match="no person"):
        apply_preprocessor("mediapipe_pose", np.full((128, 128, 3), 90, np.uint8), (64, 64))


def test_openpose_drawing_equals_controlnet_aux():
    from controlnet_aux.open_pose.body import Keypoint
    from controlnet_aux.open_pose.util import draw_bodypose

    keypoints = list(transform_keypoints(POSE_PRESETS["walking"], mirror=True, scale=1.2))
    keypoints[4] = None
    ours = draw_openpose(keypoints, 320, 256)
    theirs = draw_bodypose(
        np.zeros((256, 320, 3), np.uint8),
        [None if p is None else Keypoint(p[0], p[1]) for p in keypoints],
    )
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("name", list(POSE_PRESETS))
def test_each_preset_renders_18_keypoints(name):
    assert len(POSE_PRESETS[name]) == 18 and None not in POSE_PRESETS[name]
    image = render_pose_preset(name, 512, 512)
    assert image.shape == (512, 512, 3)
    for index, color in enumerate(COLORS):
        assert (image == color).all(axis=2).any(), f"keypoint {index} of {name} is not drawn"


def test_preset_mirror_scale_and_shift():
    standing = POSE_PRESETS["t-pose"]
    mirrored = transform_keypoints(standing, mirror=True)
    # the person's right wrist (image left) becomes their left wrist on the image's right
    assert mirrored[7] == pytest.approx((1 - standing[4][0], standing[4][1]))
    shifted = transform_keypoints(standing, shift_x=0.1)
    assert shifted[0] == pytest.approx((standing[0][0] + 0.1, standing[0][1]))
    small = transform_keypoints(standing, scale=0.5)
    span = max(p[0] for p in small) - min(p[0] for p in small)
    assert span == pytest.approx(0.35, abs=1e-6)  # 0.85 - 0.15 halved
    gone = transform_keypoints(standing, shift_x=0.5)
    assert gone[7] is None and gone[4] is not None  # the wrist that left the canvas is dropped
    wide = render_pose_preset("standing", 768, 512)
    assert wide.shape == (512, 768, 3) and wide[:, :128].max() == 0  # fitted in the centre
    with pytest.raises(ValueError, match="pose preset must be one of"):
        render_pose_preset("dancing")


def test_ade20k_palette_equals_controlnet_aux_and_names_are_ade20k():
    from controlnet_aux.util import ade_palette

    assert len(ADE20K_CLASSES) == 150
    assert ADE20K_PALETTE.tolist() == ade_palette()
    assert ADE20K_NAMES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert ADE20K_NAMES[-1] == "flag" and len(set(ADE20K_NAMES)) == 150
    assert class_color("sky") == (6, 230, 230) and class_color("person") == (150, 5, 61)
    for name in PAINT_CLASSES:
        assert class_color(name) == tuple(ADE20K_PALETTE[ADE20K_NAMES.index(name)])


def test_palette_snap_removes_antialiased_in_between_colours():
    import cv2

    painted = np.zeros((64, 64, 3), np.uint8)
    painted[:] = class_color("sky")
    painted[32:] = class_color("grass")
    cv2.circle(painted, (20, 20), 10, class_color("tree"), -1, lineType=cv2.LINE_AA)
    painted = cv2.GaussianBlur(painted, (5, 5), 1.5)  # soft stroke edges
    snapped = apply_preprocessor("seg_palette_snap", painted, (64, 64), params={"smooth": 1})
    colors = {tuple(c) for c in snapped.reshape(-1, 3)}
    assert colors <= {tuple(c) for c in ADE20K_PALETTE.tolist()}
    assert {class_color("sky"), class_color("grass"), class_color("tree")} <= colors
    assert tuple(snapped[5, 60]) == class_color("sky") and tuple(snapped[60, 5]) == class_color(
        "grass"
    )
    with pytest.raises(ValueError, match="odd"):
        snap_to_palette(painted, smooth=2)


def test_shuffle_is_deterministic_per_seed():
    image = photo(96)
    first = apply_preprocessor("shuffle", image, (64, 64), 96, {"seed": 3})
    again = apply_preprocessor("shuffle", image, (64, 64), 96, {"seed": 3})
    other = apply_preprocessor("shuffle", image, (64, 64), 96, {"seed": 4})
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_lineart_standard_equals_controlnet_aux():
    from controlnet_aux import LineartStandardDetector

    image = photo(128)
    ours = apply_preprocessor("lineart_standard", image, (128, 128), detect_resolution=128)
    theirs = LineartStandardDetector()(image, detect_resolution=128, output_type="np")
    assert np.array_equal(ours, theirs)


# --- hub-weight annotators: missing weights, and their real code with random networks --------------


@pytest.mark.parametrize("pid", WEIGHTED)
def test_missing_weights_name_the_weights_and_the_offline_alternative(pid):
    from demos.texts import missing_weights_message

    spec = PREPROCESSORS[pid]
    ANNOTATORS.clear()
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as caught:
        apply_preprocessor(pid, photo(64), (64, 64), detect_resolution=64)
    assert caught.value.offline_alternative == spec.offline_alternative
    message = missing_weights_message(caught.value)  # the page's wording of the error
    assert spec.weights in message
    alternative = PREPROCESSORS[spec.offline_alternative]
    assert (alternative.label in message) or (alternative.id == "none" and "None" in message)
    assert time.perf_counter() - started < 5.0  # the hub cache is checked first: no retries


def _random_detectors() -> dict:
    """Detectors of controlnet_aux 0.0.10 around freshly initialised networks (seeded)."""
    import functools

    import torch
    from controlnet_aux import (
        HEDdetector,
        LineartAnimeDetector,
        LineartDetector,
        MLSDdetector,
        OpenposeDetector,
        PidiNetDetector,
    )
    from controlnet_aux.hed import ControlNetHED_Apache2
    from controlnet_aux.lineart import Generator
    from controlnet_aux.lineart_anime import UnetGenerator
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large
    from controlnet_aux.open_pose.body import Body
    from controlnet_aux.open_pose.model import bodypose_model
    from controlnet_aux.pidi.model import pidinet

    torch.manual_seed(0)
    body = Body.__new__(Body)  # Body() insists on a checkpoint path; give it a random network
    body.model = bodypose_model().eval()
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return {
        "hed": HEDdetector(ControlNetHED_Apache2().eval()),
        "pidinet": PidiNetDetector(pidinet().eval()),
        "mlsd": MLSDdetector(MobileV2_MLSD_Large().eval()),
        "lineart": LineartDetector(Generator(3, 1, 3).eval(), Generator(3, 1, 3).eval()),
        "lineart_anime": LineartAnimeDetector(UnetGenerator(3, 1, 8, 64, norm_layer=norm).eval()),
        "openpose": OpenposeDetector(body),
    }


def _random_segmenter():
    import torch
    from transformers import (
        ConvNextConfig,
        SegformerImageProcessor,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    torch.manual_seed(0)
    backbone = ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_in_channels=32, num_labels=150
    )
    processor = SegformerImageProcessor(size={"height": 64, "width": 64})
    return processor, UperNetForSemanticSegmentation(config).eval()


@pytest.fixture(scope="module")
def random_annotators():
    detectors = _random_detectors()
    detectors["upernet"] = _random_segmenter()
    for name, detector in detectors.items():
        set_annotator(name, detector)
    yield detectors
    ANNOTATORS.clear()


RANDOM_WEIGHT_CASES = [
    ("hed", {}),
    ("hed_safe", {}),
    ("pidinet", {}),
    ("pidinet_safe", {}),
    ("scribble_hed", {}),
    ("mlsd", {"value_threshold": 0.1, "distance_threshold": 0.1}),
    ("lineart", {}),
    ("lineart_coarse", {}),
    ("lineart_anime", {}),
    ("openpose", {"include_hand": False, "include_face": False}),
    ("seg_upernet", {}),
]


@pytest.mark.parametrize(("pid", "params"), RANDOM_WEIGHT_CASES)
def test_weighted_detectors_run_their_real_code_with_random_networks(
    random_annotators, pid, params
):
    result = apply_preprocessor(pid, photo(64, 96), (64, 96), detect_resolution=64, params=params)
    assert result.shape == (96, 64, 3) and result.dtype == np.uint8
    if pid == "seg_upernet":  # whatever the random net predicts, the map is in ADE20K colours
        colors = {tuple(c) for c in result.reshape(-1, 3)}
        assert colors <= {tuple(c) for c in ADE20K_PALETTE.tolist()}


def test_random_openpose_accepts_the_hand_and_face_options(random_annotators):
    result = apply_preprocessor(
        "openpose", photo(64), (64, 64), 64, {"include_hand": True, "include_face": True}
    )
    assert result.shape == (64, 64, 3)


# --- the shared annotator cache -------------------------------------------------------------------


def test_annotators_load_lazily_once_under_concurrency():
    cache = AnnotatorCache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("fake"))) for _ in range(8)]
    # The load returns only once every thread has found the cache empty and asked for the
    # annotator's load lock (or started a load without it): all eight race for the one load.
    ready = Arrivals(threads)
    loads = []

    def load(local_files_only: bool):
        loads.append(local_files_only)
        ready.arrive()
        ready.wait_for(len(threads))
        return object()

    cache.add_source(AnnotatorSource("fake", load))
    # The cache has no public hook for its per-annotator load lock: wrap its private one.
    cache._load_locks["fake"] = ReportingLock(cache._load_locks["fake"], ready)
    assert cache.loaded() == []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [True] and len({id(r) for r in results}) == 1 and cache.loaded() == ["fake"]


def test_failed_loads_are_remembered_briefly():
    calls = []

    def load(local_files_only: bool):
        calls.append(local_files_only)
        raise OSError("no such file")

    cache = AnnotatorCache(retry_after_s=60)
    cache.add_source(AnnotatorSource("broken", load, weights="org/repo: model.pth"))
    for _ in range(3):
        with pytest.raises(WeightsUnavailableError, match="org/repo: model.pth"):
            cache.get("broken")
    assert calls == [True]  # offline (HF_HUB_OFFLINE=1): the cache only, and only once
    with pytest.raises(ValueError, match="annotator must be one of"):
        cache.get("unknown")


def test_a_failed_annotator_load_says_why_without_server_paths(monkeypatch, tmp_path):
    """The reason shown is the loader's first line, without its exception's class name, and
    with the hub cache's path named by its last part."""
    from huggingface_hub import constants

    cache_dir = tmp_path / "Jane Doe" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))

    def load(local_files_only: bool):
        raise FileNotFoundError(f"no model.pth in {cache_dir}/models--org--repo/snapshots/abc")

    cache = AnnotatorCache(retry_after_s=60)
    cache.add_source(AnnotatorSource("broken", load, weights="org/repo: model.pth"))
    with pytest.raises(WeightsUnavailableError) as caught:
        cache.get("broken")
    text = str(caught.value)
    assert "(no model.pth in hub/models--org--repo/snapshots/abc)" in text
    assert "FileNotFoundError" not in text and "Jane" not in text


# --- engine: maps are cached per (image, preprocessor, params) -----------------------------------


def test_a_new_prompt_does_not_rerun_detection(tiny_engine):
    from controlnet_core import GenerationRequest

    image = photo(64)
    before = tiny_engine.preprocessor_runs
    for prompt in ("a cat", "a dog"):
        request = GenerationRequest(
            modality="softedge",
            prompt=prompt,
            preprocessor="softedge_classical",
            steps=2,
            resolution=64,
            detect_resolution=64,
        )
        tiny_engine.generate(request, image)
    assert tiny_engine.preprocessor_runs == before + 1
    tiny_engine.control_map("shuffle", image, "shuffle", {"seed": 1}, 64, 64)
    tiny_engine.control_map("shuffle", image, "shuffle", {"seed": 1}, 64, 64)
    tiny_engine.control_map("shuffle", image, "shuffle", {"seed": 2}, 64, 64)
    assert tiny_engine.preprocessor_runs == before + 3
