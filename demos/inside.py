"""The "Inside the ControlNet" panel of a tab: what the ControlNet adds at each injection point.

One generation with a `ResidualProbe` (see `controlnet_core.inside`) fills it: a heat map per injection
point (mean |residual| over channels, over the control map, labelled with the block, its size and
channel count) and a bar chart of each block's residual norm relative to the UNet's own skip
activation there. Its endpoint, `/<id>_inside`, takes the tab's generate parameters plus
`inside_step`; the tab's other endpoints are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

INSIDE_STEP_CHOICES = [
    ("averaged over the steps", "mean"),
    ("first step", "first"),
    ("middle step", "middle"),
    ("last step", "last"),
]
# A dark-to-bright ramp (black, purple, orange, yellow): strong residuals stand out on the map.
_RAMP = np.array([[0, 0, 0], [90, 20, 140], [230, 90, 40], [255, 230, 80]], dtype=np.float32)
HEAT_SIDE = 160  # each heat map is shown at least this wide
DEFAULT_TIMELINE_COLUMNS = 6  # one row per model: plain SD, then ControlNet


@dataclass
class InsidePanel:
    step: gr.Radio
    button: gr.Button
    heat: gr.Gallery
    bars: gr.BarPlot


def picture_strip(label: str, columns: int, *classes: str) -> gr.Gallery:
    """A gallery of whole, captioned pictures (the results' look: see launch.CSS)."""
    return gr.Gallery(
        label=label,
        format="png",
        columns=columns,
        height="auto",
        object_fit="contain",
        buttons=["download", "fullscreen"],
        elem_classes=["cn-results", *classes],
    )


def inside_panel() -> InsidePanel:
    """The panel's components, in a closed accordion under the results."""
    with gr.Accordion("Inside the ControlNet: what it adds to each UNet block", open=False):
        gr.Markdown(
            "One generation (the first image, same settings and seed) is traced. At each place "
            "where the ControlNet's output is added to the UNet's skip connections (in = the "
            "first convolution, d = down blocks, mid = middle block), the bars show how much it "
            "changes what the decoder sees there (residual norm ÷ the UNet's own activation), "
            "and the heat maps where it acts (mean |residual| over channels, brightest = that "
            "block's strongest, over the control map). Strength 0, or a step outside start/end, "
            "adds exactly 0.",
            elem_classes=["backend-note"],
        )
        with gr.Row():
            step = gr.Radio(label="Trace at", choices=INSIDE_STEP_CHOICES, value="mean", scale=3)
            button = gr.Button("Look inside", scale=1)
        bars = gr.BarPlot(
            x="block",
            y="relative",
            x_title="UNet block (shallow → deep)",
            y_title="residual ÷ skip activation",
            sort=None,
            height=260,
        )
        heat = picture_strip("Residual heat maps, block by block", 4)
    return InsidePanel(step, button, heat, bars)


def heat_image(heat: np.ndarray, control: Image.Image) -> Image.Image:
    """`heat` coloured on the ramp (scaled to its own peak: where this block acts; the bars and the
    caption say how much) over a dimmed grey copy of the control map, at least HEAT_SIDE wide."""
    peak = float(heat.max())
    level = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
    positions = level * (len(_RAMP) - 1)
    low = np.floor(positions).astype(int).clip(0, len(_RAMP) - 2)
    fraction = (positions - low)[..., None]
    colours = _RAMP[low] * (1 - fraction) + _RAMP[low + 1] * fraction
    height, width = heat.shape
    grey = np.asarray(control.convert("L").resize((width, height), Image.BILINEAR), np.float32)
    under = np.repeat(grey[..., None], 3, axis=2) * 0.35
    mixed = np.where(level[..., None] > 0, 0.25 * under + 0.75 * colours, under)
    image = Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
    factor = max(1, -(-HEAT_SIDE // width))
    return image.resize((width * factor, height * factor), Image.NEAREST)


def short_name(name: str) -> str:
    """ "conv_in" -> "in", "down_blocks.1.2" -> "d1.2", "mid_block" -> "mid": bar labels that fit."""
    if name.startswith("down_blocks."):
        return "d" + name.removeprefix("down_blocks.")
    return {"conv_in": "in", "mid_block": "mid"}.get(name, name)


def bar_label(index: int, name: str) -> str:
    """A block's label in the bar chart, also opening its heat map's caption: "01 d0.0"."""
    return f"{index:02d} {short_name(name)}"


def block_caption(
    index: int, name: str, channels: int, height: int, width: int, residual: float
) -> str:
    """A heat map's caption: its bar's label, the block's name in diffusers, size, norm."""
    return (
        f"{bar_label(index, name)} ({name}) · {height}×{width} · {channels} ch · |r| {residual:.3g}"
    )


def inside_outputs(result: Any) -> tuple[list[tuple[Image.Image, str]], pd.DataFrame]:
    """The heat maps (captioned) and the bar chart's table, from a result traced with a probe."""
    record = result.inside
    heats = [
        (
            heat_image(p.heat, result.control_map),
            block_caption(i, p.name, p.channels, p.height, p.width, p.residual_norm),
        )
        for i, p in enumerate(record.points)
    ]
    bars = pd.DataFrame(
        {
            "block": [bar_label(i, p.name) for i, p in enumerate(record.points)],
            "relative": [p.relative for p in record.points],
        }
    )
    return heats, bars


@dataclass
class TimelinePanel:
    button: gr.Button
    strip: gr.Gallery
    note: gr.Markdown


def timeline_panel() -> TimelinePanel:
    """The denoising timeline's components, in a closed accordion under the results."""
    with gr.Accordion("Denoising timeline: when the layout is decided", open=False):
        gr.Markdown(
            "One comparison, step by step: what the model expects the final image to be at a few "
            "steps, plain SD first, then ControlNet (same seed). The layout "
            "is fixed in the first steps, which is why ending the control early (say at 0.3) "
            "keeps the composition and lets the prompt finish the details.",
            elem_classes=["backend-note"],
        )
        button = gr.Button("Compare, step by step")
        strip = picture_strip(
            "Predicted final image at each step", DEFAULT_TIMELINE_COLUMNS, "cn-timeline"
        )
        note = gr.Markdown(elem_classes=["backend-note"])
    return TimelinePanel(button, strip, note)


def timeline_outputs(result: Any, steps: int, decoder: str) -> tuple[list, str]:
    """The strip (plain SD's row, then the ControlNet's) and which decoder drew it."""
    rows: list[list[tuple[Image.Image, str]]] = [[], []]
    for index, images in result.timeline:
        for row, (image, who) in enumerate(zip(images, ("plain SD", "ControlNet"), strict=True)):
            picture = Image.fromarray(image)
            factor = max(1, -(-HEAT_SIDE // picture.width))
            picture = picture.resize((picture.width * factor, picture.height * factor))
            rows[row].append((picture, f"{who} · step {index + 1}/{steps}"))
    note = (
        f"*Drawn by {decoder}; the final images (in the gallery above after Compare) are decoded "
        "by the full VAE.*"
    )
    return rows[0] + rows[1], note
