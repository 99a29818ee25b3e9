"""Scribble tab: an uploaded drawing (or a photo turned into a fake scribble)."""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import Engine
from demos.builder import create_demo as build_tab
from demos.examples import shapes_drawing, skimage_sample

MODALITY = "scribble"


def create_demo(engine: Engine) -> gr.Blocks:
    examples = [
        (
            shapes_drawing("square_triangle"),
            "a yellow triangle and a green square on a blue background",
        ),
        (skimage_sample("horse.png"), "a horse in a meadow, oil painting"),
    ]
    return build_tab(MODALITY, engine, examples=examples)


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
