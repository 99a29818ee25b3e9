"""What a CPU user waits for: one ControlNet image on the full-size SD1.5 architecture, in one run.

    python -m bench.bench_cpu [--size 512] [--steps 20] [--threads N] [--json FILE]

Cases, all through `controlnet_core.sampling.sample` (one canny-like ControlNet, seed 0):

- float32, UniPC, `--steps` steps, CFG 7.5: what a CPU user got before bfloat16 became the default;
- bfloat16, the same: what `--dtype auto` runs on a CPU with AVX512-BF16 or AMX;
- bfloat16 + live previews: the same with the gallery's previews at their default rate (one per second
  of sampling), and at every step (the dearest case);
- Fast mode: bfloat16, the LCM sampler, 4 and 6 steps, CFG 1 (one UNet row per image). The few-step
  LoRA is fused into the weights, so the UNet costs what the plain one costs; the random weights here
  carry none.

Also: how far the bfloat16 image is from the float32 one (same seed, same weights). The weights are
random (nothing is downloaded), so the images are noise; the per-pixel differences still measure how
far bfloat16 arithmetic carries a 20-step run. Every case is end to end (text encoder, loop, VAE).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch


def cpu_flags() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    return " ".join(flag for flag in wanted if flag in text.split())


def run(
    pipe,
    controlnet,
    size: int,
    steps: int,
    scheduler: str,
    guidance: float,
    preview=None,
    on_step=None,
):
    from bench.components import control_image
    from controlnet_core.models import make_scheduler
    from controlnet_core.sampling import ControlUnit, UnitSettings, Variant, sample

    started = time.perf_counter()
    arrays, _ = sample(
        pipe,
        [ControlUnit(controlnet, control_image(size))],
        [Variant(0, (UnitSettings(1.0),))],
        prompt="a photo of a house by a lake",
        steps=steps,
        guidance_scale=guidance,
        width=size,
        height=size,
        scheduler_factory=lambda: make_scheduler(scheduler, pipe.scheduler.config),
        preview=preview,
        on_step=on_step,
    )
    return time.perf_counter() - started, arrays[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.components import base_pipeline, build
    from controlnet_core.models import cpu_has_fast_bfloat16
    from controlnet_core.timeline import LivePreview, fit_linear_decoder

    print(
        f"cpu flags: {cpu_flags()}; fast bfloat16: {cpu_has_fast_bfloat16()}; "
        f"{torch.get_num_threads()} torch threads; {args.size}², {args.steps} steps"
    )
    pipes = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        components, controlnet = build("sd15", "cpu", dtype)
        pipe = base_pipeline(components)
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = (pipe, controlnet)
        run(pipe, controlnet, 64, 1, "UniPC", 7.5)  # warm-up
    decoder = fit_linear_decoder(pipes["bfloat16"][0])
    shown = []

    def previews(interval: float) -> LivePreview:
        return LivePreview(lambda: decoder, lambda *update: shown.append(update[0]), interval)

    cases = {
        "float32, UniPC": ("float32", args.steps, "UniPC", 7.5, None),
        "bfloat16, UniPC": ("bfloat16", args.steps, "UniPC", 7.5, None),
        "bfloat16 + previews (1 per s)": ("bfloat16", args.steps, "UniPC", 7.5, 1.0),
        "bfloat16 + previews (every step)": ("bfloat16", args.steps, "UniPC", 7.5, 0.0),
        "Fast: bfloat16, LCM 4 steps, CFG 1": ("bfloat16", 4, "LCM", 1.0, None),
        "Fast: bfloat16, LCM 6 steps, CFG 1": ("bfloat16", 6, "LCM", 1.0, None),
    }
    seconds, images, counts = {}, {}, {}
    for name, (dtype, steps, scheduler, guidance, interval) in cases.items():
        pipe, controlnet = pipes[dtype]
        shown.clear()
        preview = previews(interval) if interval is not None else None
        seconds[name], images[name] = run(
            pipe, controlnet, args.size, steps, scheduler, guidance, preview
        )
        counts[name] = len(shown)
        print(f"  {name:40s} {seconds[name]:7.1f} s  previews shown: {counts[name]}", flush=True)
    base = seconds["float32, UniPC"]
    print("\n| case | s per image | × faster than float32 | previews |")
    print("| --- | ---: | ---: | ---: |")
    for name in cases:
        print(f"| {name} | {seconds[name]:.1f} | {base / seconds[name]:.2f} | {counts[name]} |")
    bf16 = seconds["bfloat16, UniPC"]
    for name in ("bfloat16 + previews (1 per s)", "bfloat16 + previews (every step)"):
        print(f"{name}: cost {seconds[name] / bf16 - 1:+.1%} of the run without")
    difference = np.abs(images["bfloat16, UniPC"] - images["float32, UniPC"])
    psnr = 10 * np.log10(1.0 / max(float((difference**2).mean()), 1e-12))
    print(
        f"bfloat16 vs float32 image: mean |Δ| {difference.mean():.4f}, 99th percentile "
        f"{np.percentile(difference, 99):.4f}, max {difference.max():.4f} (of 1), PSNR {psnr:.1f} dB"
    )
    if args.json:
        report = {
            "cpu_flags": cpu_flags(),
            "threads": torch.get_num_threads(),
            "size": args.size,
            "steps": args.steps,
            "seconds": seconds,
            "previews": counts,
            "bf16_vs_fp32": {
                "mean": float(difference.mean()),
                "p99": float(np.percentile(difference, 99)),
                "max": float(difference.max()),
                "psnr_db": psnr,
            },
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        }
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
