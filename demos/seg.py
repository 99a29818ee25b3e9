"""Segmentation tab: UperNet on a photo, or paint a map yourself with named ADE20K classes (offline).

The painting canvas only offers the colours of `PAINT_CLASSES` (color_mode="fixed"), listed with their
class names in a legend. "Use painting as map" snaps every pixel to its nearest ADE20K colour (brush
antialiasing leaves in-between colours at stroke edges), puts the result into the tab's input and sets
the preprocessor to "none".
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as `python demos/<tab>.py`: the repo root holds the packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradio as gr
import numpy as np

from controlnet_core import PAINT_CLASSES, Engine, class_color, hex_color, snap_to_palette
from demos.builder import CANVAS_SIZE, TabView
from demos.builder import create_demo as build_tab
from demos.examples import seg_landscape, skimage_sample
from demos.extras import add_examples
from demos.hosting import light_work, limit_canvas_input, user_errors

MODALITY = "seg"
DEFAULT_BACKGROUND = "sky"
DEFAULT_BRUSH = "mountain"


def solid_canvas(class_name: str) -> np.ndarray:
    """A canvas filled with one class's colour (what you paint on)."""
    width, height = CANVAS_SIZE
    return np.full((height, width, 3), class_color(class_name), dtype=np.uint8)


def legend_html() -> str:
    swatches = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 10px 2px 0">'
        f'<span style="width:14px;height:14px;border:1px solid #0004;border-radius:3px;'
        f'background:{hex_color(class_color(name))};margin-right:4px"></span>{name}</span>'
        for name in PAINT_CLASSES
    )
    return f'<div style="font-size:0.85em;line-height:1.4">{swatches}</div>'


def painting_to_map(value) -> np.ndarray:
    """The editor's composite, every pixel snapped to its ADE20K class colour."""
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        raise gr.Error("The canvas is empty: pick a class colour and paint first.")
    array = np.asarray(composite)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    return snap_to_palette(np.ascontiguousarray(array.astype(np.uint8)), smooth=3)


@user_errors
def use_painting(value):
    return painting_to_map(value), "none"


def add_painting(tab: TabView) -> None:
    # The map we put into the input must keep exact colours: PNG, not the default lossy WebP.
    tab.source.format = "png"
    with gr.Accordion("Paint a segmentation map (works offline)", open=True):
        gr.Markdown(
            "Pick a background class, then a class colour in the brush menu, and paint regions. "
            "Each colour is one ADE20K class:"
        )
        gr.HTML(legend_html())
        background = gr.Dropdown(
            label="Background class (resets the canvas)",
            choices=list(PAINT_CLASSES),
            value=DEFAULT_BACKGROUND,
        )
        canvas = limit_canvas_input(
            gr.ImageEditor(
                label="Segmentation painting",
                value=solid_canvas(DEFAULT_BACKGROUND),
                type="numpy",
                image_mode="RGB",
                canvas_size=CANVAS_SIZE,
                brush=gr.Brush(
                    colors=[hex_color(class_color(name)) for name in PAINT_CLASSES],
                    default_color=hex_color(class_color(DEFAULT_BRUSH)),
                    default_size=24,
                    color_mode="fixed",
                ),
                layers=False,
                transforms=(),
                sources=(),
                height=420,
            ),
            tab.settings.max_image_pixels,
        )
        use = gr.Button("Use painting as map")
    background.change(solid_canvas, inputs=background, outputs=canvas, api_visibility="private")
    use.click(
        use_painting,
        inputs=canvas,
        outputs=[tab.source, tab.preprocessor],
        api_visibility="private",
        **light_work(tab.settings),
    )
    add_examples(
        tab,
        [
            (seg_landscape(), "a lake in the mountains at sunrise, best quality", "none"),
            (seg_landscape(), "a lake in the mountains, oil painting", "seg_palette_snap"),
            (skimage_sample("astronaut.png"), "an astronaut in a garden", "seg_upernet"),
        ],
    )


def create_demo(engine: Engine) -> gr.Blocks:
    return build_tab(MODALITY, engine, extra_inputs=add_painting)


if __name__ == "__main__":
    from demos.launch import launch_single

    launch_single(create_demo)
