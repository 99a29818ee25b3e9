"""Depth tab: MiDaS / Zoe depth of a photo, or an uploaded depth map used as is (offline)."""

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

MODALITY = "depth"


def create_demo(engine: Engine) -> gr.Blocks:
    rows = [
        (motorcycle_depth(), "a vintage motorcycle in a workshop, photo, best quality", "none"),
        (depth_scene(), "a red ball and a wooden crate on a tiled floor", "none"),
        (skimage_sample("chelsea.png"), "a fox lying on a rug, best quality", "midas"),
    ]
    return build_tab(MODALITY, engine, extra_inputs=examples_hook(rows))


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
