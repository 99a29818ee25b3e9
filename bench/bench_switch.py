"""Switching tabs: the extra time before the first denoising step when a run uses another ControlNet
than the last one, both already in the cache.

    python -m bench.bench_switch [--backend tiny] [--repeats 20]

Through `Engine.generate` (preprocessor "none", so no detector runs): the time from the call to the
end of its first denoising step, for runs that alternate between two modalities (Canny, Depth)
against runs that repeat one. Medians; the difference is what a tab switch costs (issue 16: ≤ 0.1 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tiny", choices=("tiny", "toy"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from controlnet_core import Engine, GenerationRequest, Settings

    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split()
    print("cpu flags:", " ".join(f for f in ("avx512_bf16", "amx_bf16", "avx2") if f in flags))
    engine = Engine(Settings(backend=args.backend))
    modalities = ("canny", "scribble") if args.backend == "toy" else ("canny", "depth")
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255

    def to_first_step(modality: str) -> float:
        started = time.perf_counter()
        seen: list[float] = []

        def progress(fraction: float, text: str) -> None:
            if text.startswith("Denoising step 1/") and not seen:
                seen.append(time.perf_counter() - started)

        request = GenerationRequest(
            modality=modality, preprocessor="none", prompt="a square", steps=2, resolution=64
        )
        engine.generate(request, image, progress=progress)
        return seen[0]

    for modality in modalities:  # load both ControlNets (and the base) once
        to_first_step(modality)
    same = [to_first_step(modalities[0]) for _ in range(args.repeats)]
    switching = [to_first_step(modalities[i % 2]) for i in range(args.repeats)]
    extra = statistics.median(switching) - statistics.median(same)
    print(
        f"{args.backend}: to the first step, same tab {statistics.median(same) * 1000:.1f} ms, "
        f"switching {statistics.median(switching) * 1000:.1f} ms: extra {extra * 1000:+.1f} ms "
        f"(medians of {args.repeats}); loads: {engine.manager.loads}"
    )


if __name__ == "__main__":
    main()
