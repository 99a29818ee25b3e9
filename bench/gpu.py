"""The GPU benchmark of issue 4: full-size SD1.5 architecture, random weights, fp16, 512², 20 UniPC steps.

    python -m bench.gpu --json bench-gpu.json          # on a CUDA machine, no network needed
    python -m bench.gpu --device cpu --size 64 --steps 2 --repeats 1   # a smoke check anywhere
    python -m bench.gpu --arch sdxl --size 1024 --json bench-gpu-sdxl.json   # SDXL (issue 19)

It prints it/s (steps 2..N of the denoising loop, what a progress bar shows) for plain SD, ControlNet,
a comparison (plain + ControlNet, one pass) and a 5-value strength sweep (one pass), the same ratios
as `bench.bench_compare`, and the it/s of diffusers' own StableDiffusionPipeline and
StableDiffusionControlNetPipeline on the same weights, to set next to published numbers (diffusers:
SD1.5 + ControlNet canny, fp16, 512², batch 1: A100 15.0 it/s, T4 4.9 it/s). On an H100 the whole
run (building 1.5 B random parameters, warm-ups, 3 repeats of each case) takes about a minute or two;
then the torch.profiler summary of 5 eager ControlNet steps, and every case again on the compiled path
(`--compile`, controlnet_core.compiled: channels-last, fused QKV, torch.compile with CUDA graphs),
with its warm-up time. `--no-compile` / `--no-profile` leave those out.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.bench_compare import main as compare_main

GPU_DEFAULTS = {
    "arch": "sd15",
    "size": 512,
    "steps": 20,
    "repeats": 3,
    "device": "cuda",
    "dtype": "auto",
    "reference": True,
    "compile": True,
    "profile": True,
    "offload": True,
    "other_sizes": True,
}


def main(argv: Sequence[str] | None = None) -> dict:
    """`bench.bench_compare` with the GPU defaults above (each one can still be overridden)."""
    return compare_main(argv, defaults=GPU_DEFAULTS)


if __name__ == "__main__":
    main()
