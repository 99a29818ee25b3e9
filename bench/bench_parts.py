"""Where the time of one step and one image goes, for the full-size SD1.5 architecture on this machine.

    python -m bench.bench_parts --size 256 --repeats 3 --threads 2

Times, per call (median): the UNet on 2, 4 and 10 rows split into its encoder half (conv_in, down
blocks, middle block: the part a ControlNet's residuals do not change) and its decoder half (up blocks);
the ControlNet on 2 and 8 rows with its condition encoder (the convolutions on the full-resolution
control image); the VAE decode of 1, 2 and 5 images. These bound what batching and sharing can save:
only the first step of a comparison or sweep has identical latents for every image, so only there
could the UNet's encoder half (and the ControlNet, scaled per strength) run once for all of them; the
VAE decode grows with the number of images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch


def _timer(marks: dict[str, float], name: str):
    def before(module, args):
        marks[f"{name} start"] = time.perf_counter()

    def after(module, args, output):
        marks[f"{name} end"] = time.perf_counter()

    return before, after


def _elapsed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.components import build

    components, controlnet = build("sd15", torch.device("cpu"), torch.float32)
    unet, vae = components["unet"], components["vae"]
    marks: dict[str, float] = {}
    for name, start, end in (
        ("encoder", unet.conv_in, unet.mid_block),
        ("decoder", unet.up_blocks[0], unet.conv_out),
        ("condition", controlnet.controlnet_cond_embedding, controlnet.controlnet_cond_embedding),
    ):
        before, after = _timer(marks, name)
        start.register_forward_pre_hook(before)
        end.register_forward_hook(after)

    def span(name: str) -> float:
        return marks[f"{name} end"] - marks[f"{name} start"]

    latent = args.size // 8
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=generator)

    times: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    with torch.inference_mode():
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for rows in (2, 4, 10):
                started = time.perf_counter()
                unet(
                    randn(rows, 4, latent, latent), 500, encoder_hidden_states=randn(rows, 77, 768)
                )
                if round_:
                    record(f"UNet x{rows}", time.perf_counter() - started)
                    record(f"  encoder half x{rows}", span("encoder"))
                    record(f"  decoder half x{rows}", span("decoder"))
            for rows in (2, 8):
                started = time.perf_counter()
                controlnet(
                    randn(rows, 4, latent, latent),
                    500,
                    encoder_hidden_states=randn(rows, 77, 768),
                    controlnet_cond=randn(rows, 3, args.size, args.size),
                )
                if round_:
                    record(f"ControlNet x{rows}", time.perf_counter() - started)
                    record(f"  condition encoder x{rows}", span("condition"))
            for images in (1, 2, 5):
                started = time.perf_counter()
                vae.decode(randn(images, 4, latent, latent))
                if round_:
                    record(f"VAE decode x{images}", time.perf_counter() - started)
        # How busy the cores already are at 2 rows: the throughput of one of the UNet's own
        # convolutions (320 -> 320 channels, 3x3, at the 32x32 latent of a 256² image) per batch.
        weight = randn(320, 320, 3, 3)
        throughput = {}
        for rows in (2, 4, 10):
            sample = randn(rows, 320, latent, latent)
            torch.nn.functional.conv2d(sample, weight, padding=1)
            best = min(
                _elapsed(lambda s=sample: torch.nn.functional.conv2d(s, weight, padding=1))
                for _ in range(5)
            )
            throughput[rows] = rows * latent * latent * 320 * 320 * 9 / best / 1e9
    median = {name: statistics.median(values) for name, values in times.items()}
    unet2 = median["UNet x2"]
    print(
        f"sd15 {args.size}², float32, cpu, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}; torch {torch.__version__}"
    )
    print(f"{'call':<28}{'s':>8}{'÷ UNet x2':>11}")
    for name, value in median.items():
        print(f"{name:<28}{value:>8.3f}{value / unet2:>11.2f}")
    for rows, rate in throughput.items():
        print(f"conv 320->320 3x3 at {latent}x{latent}, {rows} rows: {rate:.1f} GMAC/s")
    return median


if __name__ == "__main__":
    main()
