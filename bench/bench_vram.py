"""What --low-vram saves: the VAE's peak memory decoding a 5-image sweep, with and without it.

    python -m bench.bench_vram [--size 768] [--images 5] [--device cpu|cuda]

The full-size SD1.5 VAE (random weights) decodes `--images` latents of a `--size`² image, once as
a whole batch and once as `--low-vram` runs it (one image at a time, in tiles). Each mode runs in a
process of its own; the figure is the growth of the peak memory during the decode (on the CPU the
process's peak RSS, on CUDA torch's peak allocation) and the decode's seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(size: int, images: int, device: str, low_vram: bool) -> dict:
    import torch
    from diffusers import AutoencoderKL

    from bench.components import SD15_VAE_CONFIG

    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    vae = AutoencoderKL(**SD15_VAE_CONFIG).to(device, dtype).eval()
    if low_vram:
        vae.enable_slicing()
        vae.enable_tiling()
    latents = torch.randn(images, 4, size // 8, size // 8, device=device, dtype=dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    with torch.inference_mode():
        decoded = vae.decode(latents).sample
    del decoded
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": time.perf_counter() - started, "peak_growth_gib": (peak - before) / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", choices=("whole", "low_vram"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.size, args.images, args.device, args.one == "low_vram")))
        return
    results = {}
    for mode in ("whole", "low_vram"):
        command = [sys.executable, "-m", "bench.bench_vram", "--one", mode]
        command += ["--size", str(args.size), "--images", str(args.images), "--device", args.device]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"SD1.5 VAE, {args.images} × {args.size}², {args.device}:")
    for mode, figures in results.items():
        print(
            f"  {mode:9s} peak memory +{figures['peak_growth_gib']:.2f} GiB, "
            f"{figures['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
