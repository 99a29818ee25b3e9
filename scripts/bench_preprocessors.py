"""Latency of every preprocessor at 512² on this machine, as a Markdown table.

    HF_HUB_OFFLINE=1 python scripts/bench_preprocessors.py [--repeats 3] [--size 512]

Offline preprocessors run as users get them. Those that need hub weights run their real controlnet_aux /
transformers code around randomly initialised networks of the real architecture (the weights change
the numbers, not the work), marked "random weights"; ones whose network cannot be built offline are
listed as not measured. Each row: first call (includes lazy loading) and the median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def install_random_networks() -> set[str]:
    """Random-weight detectors for the annotators whose networks build offline; their names."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from controlnet_core.preprocessors.annotators import set_annotator
    from tests.test_preprocessors import _random_detectors

    installed = set()
    for name, detector in _random_detectors().items():
        set_annotator(name, detector)
        installed.add(name)
    # The real segmenter's architecture (ConvNeXt-small UperNet), randomly initialised.
    from transformers import (
        ConvNextConfig,
        SegformerImageProcessor,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    backbone = ConvNextConfig(
        hidden_sizes=[96, 192, 384, 768],
        depths=[3, 3, 27, 3],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = UperNetConfig(backbone_config=backbone, num_labels=150, auxiliary_in_channels=384)
    set_annotator(
        "upernet",
        (
            SegformerImageProcessor(size={"height": 512, "width": 512}),
            UperNetForSemanticSegmentation(config).eval(),
        ),
    )
    installed.add("upernet")
    return installed


ANNOTATOR_OF = {
    "hed": "hed",
    "hed_safe": "hed",
    "scribble_hed": "hed",
    "pidinet": "pidinet",
    "pidinet_safe": "pidinet",
    "mlsd": "mlsd",
    "lineart": "lineart",
    "lineart_coarse": "lineart",
    "lineart_anime": "lineart_anime",
    "openpose": "openpose",
    "seg_upernet": "upernet",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()

    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from controlnet_core.preprocessors import PREPROCESSORS, apply_preprocessor
    from demos.examples import depth_scene

    torch.set_num_threads(os.cpu_count() or 1)
    installed = install_random_networks()
    size = args.size
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((size, size)))
    depth = np.asarray(Image.open(depth_scene()).convert("RGB").resize((size, size)))
    print(
        f"Preprocessor latency at {size}², {os.cpu_count()} CPU threads, torch {torch.__version__}"
    )
    print()
    print("| preprocessor | weights | first call (s) | median of next (s) |")
    print("|---|---|---:|---:|")
    for pid, spec in PREPROCESSORS.items():
        annotator = ANNOTATOR_OF.get(pid)
        if spec.weights and annotator not in installed:
            print(f"| {pid} | {spec.weights} | not measured (network needs downloaded parts) | |")
            continue
        kind = "none (offline)" if not spec.weights else "random weights"
        image = depth if pid == "normal_from_depth" else photo
        times = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            apply_preprocessor(pid, image, (size, size), detect_resolution=size)
            times.append(time.perf_counter() - started)
        print(f"| {pid} | {kind} | {times[0]:.3f} | {statistics.median(times[1:]):.3f} |")


if __name__ == "__main__":
    main()
