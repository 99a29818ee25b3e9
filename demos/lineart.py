"""Lineart tab: learned line drawings, or the classical standard lineart offline."""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import Engine
from demos.builder import create_demo as build_tab
from demos.examples import skimage_sample
from demos.extras import examples_hook

MODALITY = "lineart"


def create_demo(engine: Engine) -> gr.Blocks:
    rows = [
        (
            skimage_sample("astronaut.png"),
            "an astronaut, ink illustration, best quality",
            "lineart_standard",
        ),
        (
            skimage_sample("chelsea.png"),
            "a cat, detailed pencil drawing, coloured",
            "lineart_standard",
        ),
        (skimage_sample("coffee.png"), "a cup of coffee, watercolor", "lineart"),
    ]
    return build_tab(MODALITY, engine, extra_inputs=examples_hook(rows))


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
