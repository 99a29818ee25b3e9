"""What the views of issue 15 cost: the inside view (a `ResidualProbe`) on one ControlNet image, and
the denoising timeline (a `Timeline`, drawn by the fitted linear decoder) on a comparison.

    python -m bench.bench_inside --arch sd15 --size 256 --steps 8 --repeats 3

Every case calls `controlnet_core.sampling.sample` on the same models (random weights in the real
SD1.5 architecture with --arch sd15, nothing downloaded), interleaved so background load hits them
alike; times are medians, end to end (the timeline's include drawing its 12 frames). "mean" records
every step (the dearest choice), "middle" one. The issue's targets: at most 10 % more time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch


def run(pipe, units, steps: int, size: int, case: tuple, decoder) -> float:
    from diffusers import UniPCMultistepScheduler

    from controlnet_core.inside import ResidualProbe
    from controlnet_core.sampling import UnitSettings, Variant, sample
    from controlnet_core.timeline import Timeline

    scales, when, frames = case
    config = pipe.scheduler.config
    timeline = Timeline() if frames else None
    started = time.perf_counter()
    sample(
        pipe,
        units,
        [Variant(0, (UnitSettings(scale),)) for scale in scales],
        prompt="a photo of a house by a lake",
        steps=steps,
        width=size,
        height=size,
        scheduler_factory=lambda: UniPCMultistepScheduler.from_config(config),
        probe=ResidualProbe(when) if when else None,
        timeline=timeline,
    )
    if timeline is not None:
        timeline.images(decoder)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from bench.components import base_pipeline, build, control_image
    from controlnet_core.sampling import ControlUnit
    from controlnet_core.timeline import fit_linear_decoder

    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    print("cpu flags:", " ".join(f for f in wanted if f in flags.split()))
    components, controlnet = build(args.arch, "cpu", torch.float32)
    pipe = base_pipeline(components)
    pipe.set_progress_bar_config(disable=True)
    units = [ControlUnit(controlnet, control_image(args.size))]
    started = time.perf_counter()
    decoder = fit_linear_decoder(pipe)
    print(f"linear decoder fitted once in {time.perf_counter() - started:.2f} s")
    cases = {  # (strengths of the variants, inside step, timeline)
        "image": ((1.0,), None, False),
        "image+inside(middle)": ((1.0,), "middle", False),
        "image+inside(mean)": ((1.0,), "mean", False),
        "compare": ((0.0, 1.0), None, False),
        "compare+timeline": ((0.0, 1.0), None, True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for case in cases.values():
        run(pipe, units, 1, args.size, case, decoder)  # warm-up
    for _ in range(args.repeats):
        for name, case in cases.items():
            times[name].append(run(pipe, units, args.steps, args.size, case, decoder))
    print(f"{args.arch} {args.size}² {args.steps} steps, medians of {args.repeats}:")
    for name in cases:
        median = statistics.median(times[name])
        base = statistics.median(times["compare" if name.startswith("compare") else "image"])
        print(f"  {name:22s} {median:7.2f} s   ratio to without {median / base:.3f}")


if __name__ == "__main__":
    main()
