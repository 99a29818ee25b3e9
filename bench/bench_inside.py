"""What recording the inside view costs: one ControlNet image with and without a `ResidualProbe`.

    python -m bench.bench_inside --arch sd15 --size 256 --steps 8 --repeats 3

Both cases call `controlnet_core.sampling.sample` on the same models (random weights in the real
SD1.5 architecture with --arch sd15, nothing downloaded), interleaved so background load hits them
alike; times are medians, end to end. "mean" records every step (the dearest choice), "middle" one.
The issue's target: at most 10 % more time than without.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch


def run(pipe, units, steps: int, size: int, when: str | None) -> float:
    from diffusers import UniPCMultistepScheduler

    from controlnet_core.inside import ResidualProbe
    from controlnet_core.sampling import UnitSettings, Variant, sample

    config = pipe.scheduler.config
    started = time.perf_counter()
    sample(
        pipe,
        units,
        [Variant(0, (UnitSettings(1.0),))],
        prompt="a photo of a house by a lake",
        steps=steps,
        width=size,
        height=size,
        scheduler_factory=lambda: UniPCMultistepScheduler.from_config(config),
        probe=ResidualProbe(when) if when else None,
    )
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

    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    print("cpu flags:", " ".join(f for f in wanted if f in flags.split()))
    components, controlnet = build(args.arch, "cpu", torch.float32)
    pipe = base_pipeline(components)
    pipe.set_progress_bar_config(disable=True)
    units = [ControlUnit(controlnet, control_image(args.size))]
    cases = {"off": None, "middle": "middle", "mean": "mean"}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for when in cases.values():
        run(pipe, units, 1, args.size, when)  # warm-up
    for _ in range(args.repeats):
        for name, when in cases.items():
            times[name].append(run(pipe, units, args.steps, args.size, when))
    off = statistics.median(times["off"])
    print(f"{args.arch} {args.size}² {args.steps} steps, medians of {args.repeats}:")
    for name in cases:
        median = statistics.median(times[name])
        print(f"  {name:6s} {median:7.2f} s   ratio to off {median / off:.3f}")


if __name__ == "__main__":
    main()
