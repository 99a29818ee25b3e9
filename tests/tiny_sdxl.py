"""What the SDXL tests share: their prompt, sizes and seed, and one batched sampler run on the tiny
SDXL-shaped models with the pipeline's own scheduler."""

from __future__ import annotations

import numpy as np

from controlnet_core.sampling import sample

PROMPT, NEGATIVE, STEPS, SIZE, SEED = "a red square", "blurry", 3, 64, 5


def run(pipe, units, variants, width=SIZE, height=SIZE, **options) -> np.ndarray:
    """`sample`'s images for `variants` on `pipe` (PROMPT, NEGATIVE, STEPS steps, SIZE²)."""
    config = pipe.scheduler.config
    images, _ = sample(
        pipe,
        units,
        variants,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        steps=STEPS,
        width=width,
        height=height,
        scheduler_factory=lambda: type(pipe.scheduler).from_config(config),
        **options,
    )
    return images
