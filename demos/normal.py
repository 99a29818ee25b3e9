"""Normal map tab: NormalBae from a photo, or normals computed from an uploaded depth map (offline)."""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import Engine
from demos.builder import create_demo as build_tab
from demos.examples import depth_scene, motorcycle_depth, skimage_sample
from demos.extras import examples_hook

MODALITY = "normal"


def create_demo(engine: Engine) -> gr.Blocks:
    rows = [
        (motorcycle_depth(), "a chrome motorcycle, studio photo", "normal_from_depth"),
        (depth_scene(), "a marble ball and a stone block on a floor", "normal_from_depth"),
        (skimage_sample("astronaut.png"), "a bronze statue of an astronaut", "normalbae"),
    ]
    return build_tab(MODALITY, engine, extra_inputs=examples_hook(rows))


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
