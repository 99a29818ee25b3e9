"""Model-level costs behind the batched sampler's savings: one UNet / ControlNet call per batch size.

    python -m bench.bench_models --arch sd15 --size 256 --repeats 2 --threads 1

With classifier-free guidance a step runs the UNet on 2 rows per image. A single ControlNet image costs
U(2) + C(2) per step (U, C: one UNet / ControlNet call on that many rows); a comparison (plain +
ControlNet) U(4) + C(2), since the plain variant skips the ControlNet; a 5-value sweep whose first
value is 0 U(10) + C(8). The ratios these imply, per denoising step, are what `bench.bench_compare`
can at best measure for the whole loop; a gap between the two is the sampler's own overhead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence

import torch

UNET_ROWS = (2, 4, 10)
CONTROLNET_ROWS = (2, 8)


def main(argv: Sequence[str] | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="sd15")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--channels-last", action="store_true", help="models and inputs in channels-last layout"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.bench_compare import _sync
    from bench.components import build
    from controlnet_core.models import pick_dtype

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtype = pick_dtype(device, args.dtype)
    components, controlnet = build(args.arch, device, dtype)
    unet = components["unet"]
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        unet.to(memory_format=layout)
        controlnet.to(memory_format=layout)
    latent = args.size // 8
    generator = torch.Generator().manual_seed(0)

    def inputs(rows: int):
        def randn(*shape):
            return torch.randn(shape, generator=generator).to(device, dtype)

        return (
            randn(rows, unet.config.in_channels, latent, latent).to(memory_format=layout),
            randn(rows, 77, unet.config.cross_attention_dim),
            randn(rows, 3, args.size, args.size).to(memory_format=layout),
        )

    calls = {}
    for rows in UNET_ROWS:
        sample, text, _ = inputs(rows)
        calls[f"unet x{rows}"] = lambda s=sample, e=text: unet(s, 500, encoder_hidden_states=e)
    for rows in CONTROLNET_ROWS:
        sample, text, cond = inputs(rows)
        calls[f"controlnet x{rows}"] = lambda s=sample, e=text, c=cond: controlnet(
            s, 500, encoder_hidden_states=e, controlnet_cond=c
        )
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()  # warm-up
        for _ in range(args.repeats):
            for name, call in calls.items():
                _sync(device)
                started = time.perf_counter()
                call()
                _sync(device)
                times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    u2 = median["unet x2"]
    single = u2 + median["controlnet x2"]
    comparison = median["unet x4"] + median["controlnet x2"]
    sweep = median["unet x10"] + median["controlnet x8"]
    implied = {
        "comparison / (2 x controlnet)": comparison / (2 * single),
        "sweep / (5 x controlnet)": sweep / (5 * single),
    }
    print(
        f"arch={args.arch} size={args.size} dtype={dtype} device={device} "
        f"threads={torch.get_num_threads()} repeats={args.repeats} torch {torch.__version__}"
        f"{' channels_last' if args.channels_last else ''}"
    )
    print(f"{'call':<16}{'median s':>10}{'÷ unet x2':>11}")
    for name, value in median.items():
        print(f"{name:<16}{value:>10.3f}{value / u2:>11.2f}")
    for name, value in implied.items():
        print(f"implied {name:<32}{value:.3f}")
    return {"median": median, "implied": implied, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    main()
