"""What SDXL costs a CPU user: the full-size SDXL architecture with one ControlNet, in bfloat16.

    python -m bench.bench_cpu_sdxl [--size 1024] [--steps 3] [--json FILE]

SDXL runs on a CPU, slowly. This measures, through `controlnet_core.sampling.sample` and in one
process: the seconds of a denoising step with guidance (2 UNet rows, as the tabs' CFG 5 runs) and
without (1 row: Fast mode's LCM at CFG 1), the VAE decode (float32, as the app keeps SDXL's own VAE
on a CPU), and from those the time of a 25-step image (the tabs' SDXL default) and of a 6-step Fast
mode image. Steps 2..N are timed (the first warms caches up). The weights are random and built
straight in bfloat16 (10 GB; in float32 the ControlNet and the UNet would need 20 GB), so nothing
is downloaded and the images are noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.bench_cpu import cpu_flags, run


def build(device: str = "cpu"):
    """A full-size SDXL pipeline and a ControlNet from its UNet, bfloat16 (VAE float32)."""
    from diffusers import ControlNetModel

    from bench.components import base_pipeline, sdxl_components
    from controlnet_core.tiny import randomize_control_outputs

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        components = sdxl_components(seed=0, device=device)
        controlnet = ControlNetModel.from_unet(components["unet"])
    finally:
        torch.set_default_dtype(previous)
    randomize_control_outputs(controlnet, seed=1)
    controlnet.eval().requires_grad_(False)
    components["vae"] = components["vae"].to(torch.float32)
    return base_pipeline(components), controlnet


def step_seconds(pipe, controlnet, *, size: int, steps: int, guidance: float, scheduler: str):
    """(median seconds of steps 2..N, seconds of the whole call) for one ControlNet image."""
    marks: list[float] = []
    whole, _ = run(
        pipe,
        controlnet,
        size,
        steps,
        scheduler,
        guidance,
        on_step=lambda index, total: marks.append(time.perf_counter()),
    )
    gaps = [later - earlier for earlier, later in zip(marks, marks[1:], strict=False)]
    return statistics.median(gaps), whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3, help="timed steps: 2..N (N ≥ 2)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (steps 2..N are timed)")
    print(f"cpu flags: {cpu_flags()}; {torch.get_num_threads()} torch threads; {args.size}²")
    started = time.perf_counter()
    pipe, controlnet = build()
    print(f"built SDXL + ControlNet in bfloat16 in {time.perf_counter() - started:.0f} s")
    figures: dict[str, float] = {}
    step, whole = step_seconds(
        pipe, controlnet, size=args.size, steps=args.steps, guidance=5.0, scheduler="UniPC"
    )
    figures["step_cfg_s"] = step
    print(f"a step with guidance (2 rows): {step:.1f} s")
    fast, _ = step_seconds(
        pipe, controlnet, size=args.size, steps=args.steps, guidance=1.0, scheduler="LCM"
    )
    figures["step_fast_s"] = fast
    print(f"a Fast mode step (1 row): {fast:.1f} s")
    # What the first call spent outside its steps: text encoding, the first step, the decode.
    figures["outside_steps_s"] = whole - (args.steps - 1) * step
    figures["image_25_steps_s"] = figures["outside_steps_s"] + 24 * step
    figures["fast_6_steps_s"] = figures["outside_steps_s"] + 5 * fast
    print(
        f"a 25-step image: about {figures['image_25_steps_s'] / 60:.0f} min; a 6-step Fast mode "
        f"image: about {figures['fast_6_steps_s'] / 60:.1f} min"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"size": args.size, "cpu_flags": cpu_flags(), **figures}, out, indent=2)


if __name__ == "__main__":
    main()
