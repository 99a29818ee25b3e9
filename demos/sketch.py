"""Sketch tab: draw on the canvas; the strokes are the scribble map."""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import Engine
from demos.builder import create_demo as build_tab

MODALITY = "sketch"


def create_demo(engine: Engine) -> gr.Blocks:
    return build_tab(MODALITY, engine)


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
