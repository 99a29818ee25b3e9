"""Toy Stable Diffusion + ControlNet trained in this repo on synthetic coloured shapes.

The shipped weights (``weights/``) are small enough to run offline on a CPU and follow a drawing
visibly; see ``MODEL_CARD.md``. This module only names paths: importing it loads nothing heavy.
``python -m controlnet_core.toy.train`` reproduces the weights, ``python -m
controlnet_core.toy.evaluate`` scores them.
"""

from __future__ import annotations

import pathlib

TOY_WEIGHTS_DIR: pathlib.Path = pathlib.Path(__file__).resolve().parent / "weights"
TOY_RESOLUTION = 64

# Which trained toy ControlNet serves which ControlNet key of the app.
_CONTROLNET_FOLDERS = {
    "canny": "controlnet_edges",
    "scribble": "controlnet_edges",
    "seg": "controlnet_regions",
}


def toy_controlnet_folder(controlnet_key: str) -> pathlib.Path | None:
    """Return the folder of the toy ControlNet serving ``controlnet_key``, or None.

    "canny" and "scribble" map to the edges net (trained on canny maps and hand-drawn-like strokes);
    "seg" maps to the regions net when it is shipped. Any other key, or a net whose folder is absent,
    gives None so the caller can fall back or refuse.
    """
    name = _CONTROLNET_FOLDERS.get(controlnet_key)
    if name is None:
        return None
    folder = TOY_WEIGHTS_DIR / name
    return folder if (folder / "config.json").is_file() else None
