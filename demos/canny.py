"""Canny tab: photo in, Canny edges as the control map."""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import Engine
from demos.builder import create_demo as build_tab
from demos.examples import shapes_drawing, skimage_sample

MODALITY = "canny"


def create_demo(engine: Engine) -> gr.Blocks:
    examples = [
        (
            shapes_drawing("star_circle", filled=True),
            "a red star and a blue circle on a white background",
        ),
        (skimage_sample("chelsea.png"), "a tiger cat lying on a rug, best quality"),
        (skimage_sample("rocket.jpg"), "a rocket on the launch pad at sunset, photo"),
    ]
    return build_tab(MODALITY, engine, examples=examples)


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
