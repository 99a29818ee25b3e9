"""Score the toy models on held-out generated maps with fixed seeds.

Metrics (all at 64×64, UniPC, fixed generator seeds per sample):
- edge F1: canny of the output vs the reference edges with a 2-px tolerance (precision = share of
  output edge pixels within 2 px of a reference edge, recall the reverse). Canny maps are scored
  against the map itself, scribbles against the ground-truth shape outlines. Each is reported with
  control and at ``controlnet_conditioning_scale=0`` (plain text-to-image, same seeds);
- colour accuracy: share of shapes whose mean output colour (inside the eroded shape mask) is
  nearest to the colour the prompt names, among all colours of the data generator;
- autoencoder ceilings: edge F1 of canny(decode(encode(image))) vs canny(image), and the colour
  accuracy of those round trips (what a perfect UNet could reach);
- generation time of one 64×64 image.

``python -m controlnet_core.toy.evaluate --json results.json --grid docs/toy_samples.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import cv2
import numpy as np
from PIL import Image

from controlnet_core.toy import TOY_RESOLUTION, TOY_WEIGHTS_DIR
from controlnet_core.toy.data import (
    BACKGROUND_COLORS,
    SHAPE_COLORS,
    canny_map,
    generate_sample,
    outline_map,
)

EVAL_SEED = 1_000_003  # the training data uses seed 0: these samples are held out
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0
_ALL_COLORS = {**BACKGROUND_COLORS, **SHAPE_COLORS}


def edge_f1(predicted: np.ndarray, reference: np.ndarray, tolerance: float = 2.0) -> float:
    """F1 of two boolean edge maps, counting a pixel as matched within ``tolerance`` px."""
    predicted = predicted.astype(bool)
    reference = reference.astype(bool)
    if not predicted.any() or not reference.any():
        return 0.0
    dist_to_ref = cv2.distanceTransform((~reference).astype(np.uint8), cv2.DIST_L2, 3)
    dist_to_pred = cv2.distanceTransform((~predicted).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float((dist_to_ref[predicted] <= tolerance).mean())
    recall = float((dist_to_pred[reference] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the generator colour nearest to ``rgb``."""
    names = list(_ALL_COLORS)
    table = np.array([_ALL_COLORS[n] for n in names], np.float32)
    return names[int(np.argmin(((table - rgb) ** 2).sum(1)))]


def load_pipelines(
    weights: pathlib.Path = TOY_WEIGHTS_DIR,
    controlnet: str = "controlnet_edges",
    dtype: str = "float32",
):
    """Load the toy base pipeline and a ControlNet pipeline sharing its weights (``from_pipe``),
    in ``dtype`` ("float32" or "bfloat16")."""
    import torch
    from diffusers import (
        ControlNetModel,
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
    )

    torch.set_num_threads(int(os.environ.get("TOY_EVAL_THREADS", "2")))
    base = StableDiffusionPipeline.from_pretrained(weights / "base", dtype=getattr(torch, dtype))
    net = ControlNetModel.from_pretrained(weights / controlnet, dtype=getattr(torch, dtype))
    pipe = StableDiffusionControlNetPipeline.from_pipe(base, controlnet=net, vae=base.vae)
    pipe.set_progress_bar_config(disable=True)
    return base, pipe


def generate(
    pipe,
    prompts: list[str],
    controls: list[np.ndarray],
    seeds: list[int],
    scale: float = 1.0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
) -> np.ndarray:
    """Run the ControlNet pipeline on uint8 control maps; return uint8 NHWC images."""
    import torch

    out = pipe(
        prompt=prompts,
        image=[Image.fromarray(c) for c in controls],
        num_inference_steps=steps,
        guidance_scale=guidance,
        controlnet_conditioning_scale=scale,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        height=TOY_RESOLUTION,
        width=TOY_RESOLUTION,
        output_type="np",
    ).images
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def score_batch(images: np.ndarray, samples, kind: str) -> dict[str, list]:
    """Per-sample edge F1 (against canny map or outlines), per-shape colour hits (also split by
    whether the prompt names one shape or several) and per-sample background-colour hits."""
    scores: dict[str, list] = {k: [] for k in ("f1", "color_hits", "one", "several", "background")}
    kernel = np.ones((3, 3), np.uint8)
    for img, s in zip(images, samples, strict=True):
        pred = canny_map(img)[:, :, 0] > 0
        ref = s.canny[:, :, 0] > 0 if kind == "canny" else outline_map(s.shapes)
        scores["f1"].append(edge_f1(pred, ref))
        for spec, mask in zip(s.shapes, s.masks, strict=True):
            inner = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            if inner.sum() < 4:
                inner = mask
            hit = nearest_color(img[inner].mean(0)) == spec.color
            scores["color_hits"].append(hit)
            scores["one" if len(s.shapes) == 1 else "several"].append(hit)
        union = np.any(s.masks, axis=0).astype(np.uint8)
        outside = ~cv2.dilate(union, kernel, iterations=2).astype(bool)
        scores["background"].append(nearest_color(img[outside].mean(0)) == s.background)
    return scores


def autoencoder_ceiling(vae, samples) -> tuple[float, float]:
    """Edge F1 and colour accuracy of round-tripped images: the best the autoencoder allows."""
    import torch

    images = np.stack([s.image for s in samples])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        recon = vae.decode(vae.encode(x.to(vae.dtype)).latents).sample.float()
    recon_u8 = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    scores = score_batch(recon_u8, samples, "canny")
    return float(np.mean(scores["f1"])), float(np.mean(scores["color_hits"]))


def evaluate(
    weights: pathlib.Path = TOY_WEIGHTS_DIR,
    count: int = 128,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    batch: int = 16,
    dtype: str = "float32",
) -> dict:
    """Run every metric on ``count`` held-out samples; return a JSON-serialisable dict."""
    base, pipe = load_pipelines(weights, dtype=dtype)
    samples = [generate_sample(EVAL_SEED, i) for i in range(count)]
    results: dict = {"count": count, "steps": steps, "guidance_scale": guidance, "dtype": dtype}
    for kind in ("canny", "scribble"):
        for label, scale in (("control", 1.0), ("strength0", 0.0)):
            scores: dict[str, list] = {}
            for a in range(0, count, batch):
                chunk = samples[a : a + batch]
                images = generate(
                    pipe,
                    [s.caption for s in chunk],
                    [getattr(s, kind) for s in chunk],
                    list(range(a, a + len(chunk))),
                    scale=scale,
                    steps=steps,
                    guidance=guidance,
                )
                for key, values in score_batch(images, chunk, kind).items():
                    scores.setdefault(key, []).extend(values)
            results[f"edge_f1_{kind}_{label}"] = round(float(np.mean(scores["f1"])), 3)
            if label == "control":
                for key, name in (
                    ("color_hits", f"color_accuracy_{kind}"),
                    ("one", f"color_accuracy_{kind}_one_shape"),
                    ("several", f"color_accuracy_{kind}_several_shapes"),
                    ("background", f"background_accuracy_{kind}"),
                ):
                    results[name] = round(float(np.mean(scores[key])), 3)
    ceiling_f1, ceiling_color = autoencoder_ceiling(base.vae, samples)
    results["autoencoder_ceiling_f1"] = round(ceiling_f1, 3)
    results["autoencoder_ceiling_color"] = round(ceiling_color, 3)
    results["seconds_per_image"] = round(time_one_image(pipe, samples[0], steps, guidance), 3)
    return results


def time_one_image(
    pipe, sample, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, repeats: int = 5
) -> float:
    """Median wall time of one 64×64 generation (after a warm-up run)."""
    generate(pipe, [sample.caption], [sample.canny], [0], steps=steps, guidance=guidance)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, [sample.caption], [sample.canny], [r], steps=steps, guidance=guidance)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def save_grid(
    path: pathlib.Path,
    weights: pathlib.Path = TOY_WEIGHTS_DIR,
    guidance: float = DEFAULT_GUIDANCE,
    zoom: int = 3,
) -> None:
    """Save 16 held-out samples as (control map | output) pairs, 4 per row, scribbles on odd ones."""
    _, pipe = load_pipelines(weights)
    samples = [generate_sample(EVAL_SEED, 1000 + i) for i in range(16)]
    controls = [s.scribble if i % 2 else s.canny for i, s in enumerate(samples)]
    images = generate(
        pipe, [s.caption for s in samples], controls, list(range(16)), guidance=guidance
    )
    tiles = [np.concatenate([c, img], axis=1) for c, img in zip(controls, images, strict=True)]
    rows = [np.concatenate(tiles[r * 4 : r * 4 + 4], axis=1) for r in range(4)]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    grid = grid.resize((grid.width * zoom, grid.height * zoom), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    (path.with_suffix(".txt")).write_text("\n".join(s.caption for s in samples) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Score the toy ControlNet on held-out synthetic maps."
    )
    parser.add_argument("--weights", type=pathlib.Path, default=TOY_WEIGHTS_DIR)
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, nargs="+", default=[DEFAULT_GUIDANCE])
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--json", type=pathlib.Path, help="write results here")
    parser.add_argument("--grid", type=pathlib.Path, help="also save a 16-sample grid PNG here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    all_results = []
    for g in args.guidance:
        res = evaluate(args.weights, args.count, args.steps, g, dtype=args.dtype)
        print(json.dumps(res), flush=True)
        all_results.append(res)
    if args.json:
        args.json.write_text(
            json.dumps(all_results if len(all_results) > 1 else all_results[0], indent=2) + "\n"
        )
    if args.grid:
        save_grid(args.grid, args.weights, args.guidance[0])


if __name__ == "__main__":
    main()
