"""Human pose tab: OpenPose / mediapipe skeletons from a photo, or a preset pose with no photo at all.

The preset section renders a built-in pose (core: `render_pose_preset`) into the tab's input image and
switches the preprocessor to "none", so Generate uses the skeleton as drawn. It is also an API endpoint
of its own, `/pose_preset`.
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr

from controlnet_core import POSE_PRESETS, Engine, parse_flag, render_pose_preset
from demos.builder import TabView, endpoint
from demos.builder import create_demo as build_tab
from demos.examples import pose_preset_image, skimage_sample
from demos.extras import add_examples
from demos.hosting import light_work, user_errors

MODALITY = "pose"


@user_errors
def preset_map(name: str, mirror: bool, scale: float, shift_x: float, shift_y: float):
    """The preset skeleton as the input image, and the preprocessor set to "none"."""
    image = render_pose_preset(
        name, 512, 512, parse_flag("mirror", mirror), float(scale), float(shift_x), float(shift_y)
    )
    return image, "none"


def add_presets(tab: TabView) -> None:
    # The map we put into the input must keep exact colours: PNG, not the default lossy WebP.
    tab.source.format = "png"
    with gr.Accordion("Pose presets (no photo needed)", open=True):
        with gr.Row():
            preset = gr.Dropdown(label="Preset", choices=list(POSE_PRESETS), value="standing")
            mirror = gr.Checkbox(label="Mirror", value=False)
        with gr.Row():
            scale = gr.Slider(label="Scale", minimum=0.5, maximum=1.5, step=0.05, value=1.0)
            shift_x = gr.Slider(label="Shift →", minimum=-0.5, maximum=0.5, step=0.01, value=0.0)
            shift_y = gr.Slider(label="Shift ↓", minimum=-0.5, maximum=0.5, step=0.01, value=0.0)
        use = gr.Button("Use this pose")
    use.click(
        preset_map,
        inputs=[preset, mirror, scale, shift_x, shift_y],
        outputs=[tab.source, tab.preprocessor],
        **endpoint(
            preset_map,
            "pose_preset",
            "A ready OpenPose skeleton (standing, t-pose, sitting…) to use as the Pose control map.",
        ),
        **light_work(tab.settings),
    )
    add_examples(
        tab,
        [
            (
                skimage_sample("astronaut.png"),
                "an astronaut in a white suit, best quality",
                "mediapipe_pose",
            ),
            (pose_preset_image("t-pose"), "a knight in shining armour, full body", "none"),
            (
                pose_preset_image("sitting"),
                "a woman sitting on a bench in a park, full body",
                "none",
            ),
        ],
    )


def create_demo(engine: Engine) -> gr.Blocks:
    return build_tab(MODALITY, engine, extra_inputs=add_presets)


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
