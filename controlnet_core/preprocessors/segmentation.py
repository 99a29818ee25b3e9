"""ADE20K segmentation maps: the 150-class palette, painting-friendly snapping and a transformers segmenter.

The ControlNet seg model reads maps in ADE20K's colours: each pixel painted in its class's colour from
the 150-class palette that mmsegmentation and controlnet_aux use (checked against both in the tests).
Offline, users paint such a map with the named classes of `PAINT_CLASSES`; brush antialiasing leaves
in-between colours at stroke edges, so `snap_to_palette` (preprocessor "seg_palette_snap") maps every
pixel to its nearest palette colour. With weights, "seg_upernet" runs UperNet (ConvNeXt-small, trained on
ADE20K) through transformers, as the ControlNet 1.1 seg annotator does.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from controlnet_core.errors import shown
from controlnet_core.preprocessors import ParamSpec, PreprocessorSpec, register
from controlnet_core.preprocessors.annotators import (
    ANNOTATORS,
    AnnotatorSource,
    annotator_device,
    weighted_spec,
)

SEGMENTER_ID = "openmmlab/upernet-convnext-small"

# (class name, RGB) for the 150 ADE20K classes, in label order (mmsegmentation's ADE20KDataset).
ADE20K_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("wall", (120, 120, 120)),
    ("building", (180, 120, 120)),
    ("sky", (6, 230, 230)),
    ("floor", (80, 50, 50)),
    ("tree", (4, 200, 3)),
    ("ceiling", (120, 120, 80)),
    ("road", (140, 140, 140)),
    ("bed", (204, 5, 255)),
    ("windowpane", (230, 230, 230)),
    ("grass", (4, 250, 7)),
    ("cabinet", (224, 5, 255)),
    ("sidewalk", (235, 255, 7)),
    ("person", (150, 5, 61)),
    ("earth", (120, 120, 70)),
    ("door", (8, 255, 51)),
    ("table", (255, 6, 82)),
    ("mountain", (143, 255, 140)),
    ("plant", (204, 255, 4)),
    ("curtain", (255, 51, 7)),
    ("chair", (204, 70, 3)),
    ("car", (0, 102, 200)),
    ("water", (61, 230, 250)),
    ("painting", (255, 6, 51)),
    ("sofa", (11, 102, 255)),
    ("shelf", (255, 7, 71)),
    ("house", (255, 9, 224)),
    ("sea", (9, 7, 230)),
    ("mirror", (220, 220, 220)),
    ("rug", (255, 9, 92)),
    ("field", (112, 9, 255)),
    ("armchair", (8, 255, 214)),
    ("seat", (7, 255, 224)),
    ("fence", (255, 184, 6)),
    ("desk", (10, 255, 71)),
    ("rock", (255, 41, 10)),
    ("wardrobe", (7, 255, 255)),
    ("lamp", (224, 255, 8)),
    ("bathtub", (102, 8, 255)),
    ("railing", (255, 61, 6)),
    ("cushion", (255, 194, 7)),
    ("base", (255, 122, 8)),
    ("box", (0, 255, 20)),
    ("column", (255, 8, 41)),
    ("signboard", (255, 5, 153)),
    ("chest of drawers", (6, 51, 255)),
    ("counter", (235, 12, 255)),
    ("sand", (160, 150, 20)),
    ("sink", (0, 163, 255)),
    ("skyscraper", (140, 140, 140)),
    ("fireplace", (250, 10, 15)),
    ("refrigerator", (20, 255, 0)),
    ("grandstand", (31, 255, 0)),
    ("path", (255, 31, 0)),
    ("stairs", (255, 224, 0)),
    ("runway", (153, 255, 0)),
    ("case", (0, 0, 255)),
    ("pool table", (255, 71, 0)),
    ("pillow", (0, 235, 255)),
    ("screen door", (0, 173, 255)),
    ("stairway", (31, 0, 255)),
    ("river", (11, 200, 200)),
    ("bridge", (255, 82, 0)),
    ("bookcase", (0, 255, 245)),
    ("blind", (0, 61, 255)),
    ("coffee table", (0, 255, 112)),
    ("toilet", (0, 255, 133)),
    ("flower", (255, 0, 0)),
    ("book", (255, 163, 0)),
    ("hill", (255, 102, 0)),
    ("bench", (194, 255, 0)),
    ("countertop", (0, 143, 255)),
    ("stove", (51, 255, 0)),
    ("palm", (0, 82, 255)),
    ("kitchen island", (0, 255, 41)),
    ("computer", (0, 255, 173)),
    ("swivel chair", (10, 0, 255)),
    ("boat", (173, 255, 0)),
    ("bar", (0, 255, 153)),
    ("arcade machine", (255, 92, 0)),
    ("hovel", (255, 0, 255)),
    ("bus", (255, 0, 245)),
    ("towel", (255, 0, 102)),
    ("light", (255, 173, 0)),
    ("truck", (255, 0, 20)),
    ("tower", (255, 184, 184)),
    ("chandelier", (0, 31, 255)),
    ("awning", (0, 255, 61)),
    ("streetlight", (0, 71, 255)),
    ("booth", (255, 0, 204)),
    ("television receiver", (0, 255, 194)),
    ("airplane", (0, 255, 82)),
    ("dirt track", (0, 10, 255)),
    ("apparel", (0, 112, 255)),
    ("pole", (51, 0, 255)),
    ("land", (0, 194, 255)),
    ("bannister", (0, 122, 255)),
    ("escalator", (0, 255, 163)),
    ("ottoman", (255, 153, 0)),
    ("bottle", (0, 255, 10)),
    ("buffet", (255, 112, 0)),
    ("poster", (143, 255, 0)),
    ("stage", (82, 0, 255)),
    ("van", (163, 255, 0)),
    ("ship", (255, 235, 0)),
    ("fountain", (8, 184, 170)),
    ("conveyer belt", (133, 0, 255)),
    ("canopy", (0, 255, 92)),
    ("washer", (184, 0, 255)),
    ("plaything", (255, 0, 31)),
    ("swimming pool", (0, 184, 255)),
    ("stool", (0, 214, 255)),
    ("barrel", (255, 0, 112)),
    ("basket", (92, 255, 0)),
    ("waterfall", (0, 224, 255)),
    ("tent", (112, 224, 255)),
    ("bag", (70, 184, 160)),
    ("minibike", (163, 0, 255)),
    ("cradle", (153, 0, 255)),
    ("oven", (71, 255, 0)),
    ("ball", (255, 0, 163)),
    ("food", (255, 204, 0)),
    ("step", (255, 0, 143)),
    ("tank", (0, 255, 235)),
    ("trade name", (133, 255, 0)),
    ("microwave", (255, 0, 235)),
    ("pot", (245, 0, 255)),
    ("animal", (255, 0, 122)),
    ("bicycle", (255, 245, 0)),
    ("lake", (10, 190, 212)),
    ("dishwasher", (214, 255, 0)),
    ("screen", (0, 204, 255)),
    ("blanket", (20, 0, 255)),
    ("sculpture", (255, 255, 0)),
    ("hood", (0, 153, 255)),
    ("sconce", (0, 41, 255)),
    ("vase", (0, 255, 204)),
    ("traffic light", (41, 0, 255)),
    ("tray", (41, 255, 0)),
    ("ashcan", (173, 0, 255)),
    ("fan", (0, 245, 255)),
    ("pier", (71, 0, 255)),
    ("crt screen", (122, 0, 255)),
    ("plate", (0, 255, 184)),
    ("monitor", (0, 92, 255)),
    ("bulletin board", (184, 255, 0)),
    ("shower", (0, 133, 255)),
    ("radiator", (255, 214, 0)),
    ("glass", (25, 194, 194)),
    ("clock", (102, 255, 0)),
    ("flag", (92, 0, 255)),
)
ADE20K_NAMES: tuple[str, ...] = tuple(name for name, _ in ADE20K_CLASSES)
ADE20K_PALETTE: np.ndarray = np.array([color for _, color in ADE20K_CLASSES], dtype=np.uint8)
ADE20K_PALETTE.setflags(write=False)
ADE20K_COLORS = MappingProxyType(dict(ADE20K_CLASSES))

# The classes offered on the painting canvas: what outdoor and indoor scenes are mostly made of.
PAINT_CLASSES: tuple[str, ...] = (
    "sky",
    "tree",
    "building",
    "grass",
    "water",
    "sea",
    "river",
    "person",
    "road",
    "sidewalk",
    "mountain",
    "hill",
    "rock",
    "sand",
    "earth",
    "field",
    "plant",
    "flower",
    "house",
    "car",
    "fence",
    "floor",
    "wall",
    "ceiling",
)


def class_color(name: str) -> tuple[int, int, int]:
    """The ADE20K colour of a class name; ValueError naming a few known classes otherwise."""
    try:
        return ADE20K_COLORS[name]
    except KeyError:
        raise ValueError(
            f"ADE20K has no class {shown(name)}; e.g. {', '.join(PAINT_CLASSES[:8])}, …"
        ) from None


def hex_color(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def snap_labels(image: np.ndarray, palette: np.ndarray = ADE20K_PALETTE) -> np.ndarray:
    """The index of the nearest palette colour for every pixel of an RGB image (HxW int)."""
    pixels = image.reshape(-1, 3)
    packed = (
        (pixels[:, 0].astype(np.int32) << 16) | (pixels[:, 1].astype(np.int32) << 8) | pixels[:, 2]
    )
    unique, inverse = np.unique(packed, return_inverse=True)
    colors = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    colors = colors.astype(np.float32)
    reference = palette.astype(np.float32)
    # |c - p|^2 = |c|^2 - 2 c.p + |p|^2; |c|^2 is the same for every p, so it can be left out.
    distances = (reference**2).sum(axis=1)[None, :] - 2.0 * colors @ reference.T
    return distances.argmin(axis=1)[inverse.reshape(-1)].reshape(image.shape[:2])


def labels_to_map(labels: np.ndarray, palette: np.ndarray = ADE20K_PALETTE) -> np.ndarray:
    """An HxWx3 uint8 map from class indices."""
    return palette[labels]


def snap_to_palette(image: np.ndarray, smooth: int = 1) -> np.ndarray:
    """Every pixel snapped to its nearest ADE20K colour; `smooth` (odd) median-filters the labels,
    which removes thin seams of wrong classes that antialiased stroke edges leave behind."""
    import cv2

    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd number of pixels (1 = off); got {shown(smooth)}")
    labels = snap_labels(image).astype(np.uint8)
    if smooth > 1:
        labels = cv2.medianBlur(labels, smooth)
    return labels_to_map(labels)


def _load_segmenter(local_files_only: bool):
    from transformers import AutoImageProcessor, UperNetForSemanticSegmentation

    processor = AutoImageProcessor.from_pretrained(SEGMENTER_ID, local_files_only=local_files_only)
    model = UperNetForSemanticSegmentation.from_pretrained(
        SEGMENTER_ID, local_files_only=local_files_only
    )
    return processor, model.to(annotator_device()).eval()


ANNOTATORS.add_source(
    AnnotatorSource(
        "upernet",
        _load_segmenter,
        f"{SEGMENTER_ID} (transformers UperNet)",
        SEGMENTER_ID,
        ("config.json", "preprocessor_config.json"),
    )
)


def segment_ade20k(image: np.ndarray) -> np.ndarray:
    """ADE20K class indices (HxW) predicted by the shared UperNet segmenter."""
    import torch
    from PIL import Image

    with ANNOTATORS.using("upernet") as (processor, model):
        inputs = processor(images=Image.fromarray(image), return_tensors="pt")
        device = next(model.parameters()).device
        with torch.inference_mode():
            outputs = model(pixel_values=inputs["pixel_values"].to(device))
        labels = processor.post_process_semantic_segmentation(
            outputs, target_sizes=[image.shape[:2]]
        )[0]
    return labels.cpu().numpy().astype(np.int64)


def _seg_upernet(image: np.ndarray) -> np.ndarray:
    return labels_to_map(segment_ade20k(image) % len(ADE20K_PALETTE))


for _spec in (
    weighted_spec(
        "seg_upernet",
        "UperNet (ADE20K)",
        _seg_upernet,
        f"{SEGMENTER_ID} (transformers UperNet)",
        "seg_palette_snap",
    ),
    PreprocessorSpec(
        id="seg_palette_snap",
        label="Painted map: snap to ADE20K colours (offline)",
        run=snap_to_palette,
        params=(
            ParamSpec(
                "smooth",
                "Clean edges (median, px)",
                "int",
                3,
                1,
                9,
                2,
                info="1 = off. Removes thin seams that antialiased brush edges leave.",
            ),
        ),
        uses_detect_resolution=False,
    ),
):
    register(_spec)
