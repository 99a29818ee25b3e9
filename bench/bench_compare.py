"""How much the batched sampler saves: a comparison or a sweep in one pass vs separate runs.

    python -m bench.bench_compare --arch sd15 --size 256 --steps 4 --repeats 3 --json out.json

Every case calls `controlnet_core.sampling.sample` on the same base pipeline and ControlNet:

- plain       1 variant, ControlNet scale 0 (skipped): plain SD
- controlnet  1 variant, scale 1: a single ControlNet image (the "single" of issue 4)
- comparison  [plain, controlnet] for one seed in one pass (what `Engine.compare` runs)
- sweep       one variant per sweep scale (default 0, 0.25, 0.5, 1.0, 1.5) in one pass

Each case runs once as a warm-up (1 step, same shapes), then `--repeats` times, the cases interleaved
so that background load hits them alike; times are medians. Ratios:

- comparison ÷ (2 × controlnet): issue 4's ratio
- comparison ÷ (plain + controlnet): against the two separate runs it replaces
- sweep ÷ (N × controlnet): issue 4's ratio
- sweep ÷ (separate runs): each separate run costs `plain` for a scale of 0 and `controlnet` otherwise
  (cost does not depend on a non-zero scale), so the separate total is computed from those medians

Each is given end to end (text encoder + denoising loop + VAE decode, what a user waits for) and for
the denoising loop alone (from the call's start to the last step's callback, which is what the
model-level estimate in issue 4 measured; the VAE decode does not batch into savings, and with few
steps it weighs more than it does at 20).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.components import ARCHES

DEFAULT_SWEEP = (0.0, 0.25, 0.5, 1.0, 1.5)
PROMPT = "a photo of a house by a lake, best quality"
NEGATIVE_PROMPT = "lowres, blurry"


@dataclass
class CaseResult:
    """Timings of one case: seconds end to end and in the denoising loop, one entry per repeat."""

    name: str
    images: int
    controlled: int
    total: list[float] = field(default_factory=list)
    loop: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.total)

    @property
    def loop_median(self) -> float:
        return statistics.median(self.loop)

    @property
    def steady_median(self) -> float:
        return statistics.median(self.steady)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    import diffusers

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    return info


def cases(sweep_scales: Sequence[float], seed: int) -> dict:
    """name -> list of `Variant`s (one ControlNet unit)."""
    from controlnet_core.sampling import UnitSettings, Variant

    def variant(scale: float):
        return Variant(seed, (UnitSettings(scale),))

    return {
        "plain": [variant(0.0)],
        "controlnet": [variant(1.0)],
        "comparison": [variant(0.0), variant(1.0)],
        "sweep": [variant(s) for s in sweep_scales],
    }


def run_once(
    pipe, units, variants, *, steps, size, device, offload=None
) -> tuple[float, float, float]:
    """Seconds of one `sample` call: end to end, to the end of the last denoising step, and from the
    end of the first step to the end of the last (steps 2..N: the steady rate a progress bar shows).
    `size` is a side (a square) or (width, height).
    """
    width, height = (size, size) if isinstance(size, int) else size
    from diffusers import UniPCMultistepScheduler

    from controlnet_core.sampling import sample

    config = pipe.scheduler.config
    marks: dict[int, float] = {}

    def on_step(index: int, total: int) -> None:
        if index in (0, total - 1):
            _sync(device)
            marks[index] = time.perf_counter()

    _sync(device)
    started = time.perf_counter()
    images, _ = sample(
        pipe,
        units,
        variants,
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        steps=steps,
        guidance_scale=7.5,
        width=width,
        height=height,
        scheduler_factory=lambda: UniPCMultistepScheduler.from_config(config),
        on_step=on_step,
        offload=offload,
    )
    _sync(device)
    ended = time.perf_counter()
    if len(images) != len(variants):
        raise RuntimeError(f"expected {len(variants)} images, got {len(images)}")
    return ended - started, marks[steps - 1] - started, marks[steps - 1] - marks[0]


def measure(
    pipe, controlnet, *, size, steps, repeats, device, sweep_scales, seed=0, log=print
) -> dict[str, CaseResult]:
    """Warm up every case (1 step), then time `repeats` interleaved rounds of all cases."""
    from bench.components import control_image
    from controlnet_core.sampling import ControlUnit

    units = [ControlUnit(controlnet, control_image(size, seed))]
    variant_sets = cases(sweep_scales, seed)
    results = {
        name: CaseResult(
            name,
            images=len(variants),
            controlled=sum(v.units[0].conditioning_scale != 0.0 for v in variants),
        )
        for name, variants in variant_sets.items()
    }
    for name, variants in variant_sets.items():
        started = time.perf_counter()
        run_once(pipe, units, variants, steps=1, size=size, device=device)
        log(f"  warm-up {name}: {time.perf_counter() - started:.2f} s")
    for round_index in range(repeats):
        for name, variants in variant_sets.items():
            total, loop, steady = run_once(
                pipe, units, variants, steps=steps, size=size, device=device
            )
            results[name].total.append(total)
            results[name].loop.append(loop)
            results[name].steady.append(steady)
            log(f"  round {round_index + 1}/{repeats} {name}: {total:.3f} s (loop {loop:.3f} s)")
    return results


def measure_all(pipe, controlnet, args, device, sweep_scales) -> dict[str, CaseResult]:
    """`measure` with the command line's size, steps and repeats, logging each timing."""
    return measure(
        pipe,
        controlnet,
        size=args.size,
        steps=args.steps,
        repeats=args.repeats,
        device=device,
        sweep_scales=sweep_scales,
        log=lambda line: print(line, flush=True),
    )


def ratios(results: dict[str, CaseResult]) -> dict[str, dict[str, float]]:
    """Batched time ÷ separate-runs time, end to end ("total") and for the denoising loop ("loop")."""
    out: dict[str, dict[str, float]] = {}
    for kind, pick in (("total", "median"), ("loop", "loop_median")):
        plain = getattr(results["plain"], pick)
        single = getattr(results["controlnet"], pick)
        comparison = getattr(results["comparison"], pick)
        sweep = results["sweep"]
        sweep_time = getattr(sweep, pick)
        separate_sweep = sweep.controlled * single + (sweep.images - sweep.controlled) * plain
        out[kind] = {
            "comparison / (2 x controlnet)": comparison / (2 * single),
            "comparison / (plain + controlnet)": comparison / (plain + single),
            f"sweep / ({sweep.images} x controlnet)": sweep_time / (sweep.images * single),
            "sweep / separate runs": sweep_time / separate_sweep,
            "controlnet / plain": single / plain,
        }
    return out


def iterations_per_second(results: dict[str, CaseResult], steps: int) -> dict[str, dict]:
    """Denoising steps per second of each case's call: steady (steps 2..N, what a progress bar
    shows and what published it/s numbers are) and end to end (steps ÷ the whole call)."""
    out = {}
    for name, result in results.items():
        steady = (steps - 1) / result.steady_median
        out[name] = {
            "images": result.images,
            "it_per_s": steady,
            "image_it_per_s": result.images * steady,
            "end_to_end_it_per_s": steps / result.median,
        }
    return out


def format_report(report: dict) -> str:
    """The human-readable table of one run."""
    s, m = report["settings"], report["machine"]
    lines = [
        f"arch={s['arch']} size={s['size']}x{s['size']} steps={s['steps']} (UniPC, CFG 7.5) "
        f"repeats={s['repeats']} dtype={s['dtype']} sweep scales={s['sweep_scales']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), torch {m['torch']} "
        f"({m['torch_threads']} threads, OMP_NUM_THREADS={m['omp_num_threads_env']}), "
        f"diffusers {m['diffusers']}, device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else ""),
        f"build: {report['build_seconds']:.1f} s, whole run: {report['run_seconds']:.1f} s",
        "",
        f"{'case':<12}{'images':>7}{'median s':>10}{'min s':>9}{'max s':>9}{'loop s':>9}"
        f"{'it/s':>9}{'img·it/s':>10}{'e2e it/s':>10}",
    ]
    for name, case in report["cases"].items():
        its = report["it_per_s"][name]
        lines.append(
            f"{name:<12}{case['images']:>7}{case['median']:>10.3f}{min(case['total']):>9.3f}"
            f"{max(case['total']):>9.3f}{case['loop_median']:>9.3f}"
            f"{its['it_per_s']:>9.2f}{its['image_it_per_s']:>10.2f}{its['end_to_end_it_per_s']:>10.2f}"
        )
    lines += ["", f"{'ratio':<36}{'end to end':>12}{'loop only':>11}"]
    for key in report["ratios"]["total"]:
        lines.append(
            f"{key:<36}{report['ratios']['total'][key]:>12.3f}{report['ratios']['loop'][key]:>11.3f}"
        )
    if "reference" in report:
        lines += ["", "diffusers' own pipelines on the same components (batch 1, steps 2..N):"]
        for name, value in report["reference"].items():
            lines.append(f"  {name:<36}{value['it_per_s']:>8.2f} it/s")
    return "\n".join(lines)


def reference_pipelines(components, controlnet, *, size, steps, repeats, device) -> dict:
    """it/s of diffusers' own pipelines (batch 1), to compare with published numbers."""
    from diffusers import (
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLControlNetPipeline,
        StableDiffusionXLPipeline,
        UniPCMultistepScheduler,
    )

    from bench.components import control_image

    if "text_encoder_2" in components:
        plain, controlled, extra = (
            StableDiffusionXLPipeline,
            StableDiffusionXLControlNetPipeline,
            {},
        )
    else:
        plain, controlled = StableDiffusionPipeline, StableDiffusionControlNetPipeline
        extra = {"requires_safety_checker": False}
    pipes = {
        plain.__name__: (plain(**components, **extra), {}),
        controlled.__name__: (
            controlled(**components, controlnet=controlnet, **extra),
            {"image": control_image(size)},
        ),
    }
    out = {}
    for name, (pipe, extra) in pipes.items():
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)  # as ours
        pipe.set_progress_bar_config(disable=True)
        marks: list[float] = []

        def on_step_end(pipeline, index, timestep, kwargs, marks=marks):
            _sync(device)
            marks.append(time.perf_counter())
            return kwargs

        rates = []
        for attempt in range(repeats + 1):
            marks.clear()
            pipe(
                PROMPT,
                negative_prompt=NEGATIVE_PROMPT,
                num_inference_steps=steps if attempt else 2,
                guidance_scale=7.5,
                height=size,
                width=size,
                generator=torch.Generator().manual_seed(0),
                output_type="latent",  # the steps are timed; SDXL's float32 VAE would refuse
                callback_on_step_end=on_step_end,
                **extra,
            )
            if attempt:  # the first call warms up; steps 2..N give the steady rate, as tqdm shows
                rates.append((len(marks) - 1) / (marks[-1] - marks[0]))
        out[name] = {"it_per_s": statistics.median(rates)}
    return out


def offload_case(pipe, controlnet, args, *, device) -> dict:
    """One ControlNet image with `--offload` (the models in CPU memory, each stage moved onto the
    device while it runs): its seconds and the device's peak memory, to set against the same image
    with every model resident (the "controlnet" case)."""
    from bench.components import control_image
    from controlnet_core.offload import Offloader
    from controlnet_core.sampling import ControlUnit

    models = [getattr(pipe, name, None) for name in ("text_encoder", "text_encoder_2", "unet")]
    models = [m for m in (*models, controlnet, pipe.vae) if m is not None]
    for model in models:
        model.to("cpu")
    offload = Offloader(device)
    units = [ControlUnit(controlnet, control_image(args.size))]
    variants = cases(DEFAULT_SWEEP, 0)["controlnet"]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(args.repeats):
        with offload.running():
            total, _, _ = run_once(
                pipe,
                units,
                variants,
                steps=args.steps,
                size=args.size,
                device=device,
                offload=offload,
            )
        seconds.append(total)
    result = {"median": statistics.median(seconds)}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    for model in models:
        model.to(device)
    print(f"offload, one ControlNet image: {result}", flush=True)
    return result


def compiled_cases(pipe, controlnet, args, *, device, sweep_scales) -> dict:
    """The cases again with the UNet and ControlNet compiled (warm-up timed apart)."""
    from controlnet_core.compiled import Compiled, configure_cache, warm_up

    configure_cache()
    reference = one_image(pipe, controlnet, args.size, args.steps)
    started = time.perf_counter()
    pipe.unet = Compiled(pipe.unet)
    compiled_controlnet = Compiled(controlnet)
    warm_up(pipe.unet, None, args.size)
    warm_up(pipe.unet, compiled_controlnet, args.size)
    _sync(device)
    warm_up_seconds = time.perf_counter() - started
    print(f"compiled and warmed up in {warm_up_seconds:.1f} s", flush=True)
    results = measure_all(pipe, compiled_controlnet, args, device, sweep_scales)
    difference = float(
        np.abs(one_image(pipe, compiled_controlnet, args.size, args.steps) - reference).max()
    )
    print(f"compiled vs eager, one ControlNet image: max |Δ| {difference:.4f} (of 1)")
    its = iterations_per_second(results, args.steps)
    print("compiled it/s: " + ", ".join(f"{n} {v['it_per_s']:.2f}" for n, v in its.items()))
    report = {
        "warm_up_seconds": warm_up_seconds,
        "max_abs_difference_to_eager": difference,
        "cases": {name: {"median": r.median, "images": r.images} for name, r in results.items()},
        "ratios": ratios(results),
        "it_per_s": its,
    }
    if args.other_sizes:
        report["other_sizes"] = other_sizes_case(pipe, compiled_controlnet, args, device=device)
    return report


def other_sizes_case(pipe, controlnet, args, *, device) -> dict:
    """What a compiled server's first request at another size costs (its graphs compile once, with
    dynamic sides), what a third size costs (nothing to compile), and the ControlNet it/s at the
    warm-up's size once those graphs exist (whichever graph torch then picks for it)."""
    from bench.components import control_image
    from controlnet_core.sampling import ControlUnit

    def side(scale: float) -> int:
        return -(-int(args.size * scale) // 64) * 64

    variants = cases(DEFAULT_SWEEP, 0)["controlnet"]
    seconds = {}
    for size in ((side(1.5), args.size), (args.size, side(1.25))):
        units = [ControlUnit(controlnet, control_image(size))]
        total, _, _ = run_once(pipe, units, variants, steps=1, size=size, device=device)
        seconds[f"{size[0]}x{size[1]}"] = total
        print(f"compiled, first {size[0]}x{size[1]} ControlNet step: {total:.1f} s", flush=True)
    units = [ControlUnit(controlnet, control_image(args.size))]
    steady = [
        run_once(pipe, units, variants, steps=args.steps, size=args.size, device=device)[2]
        for _ in range(args.repeats)
    ]
    it_per_s = (args.steps - 1) / float(np.median(steady))
    print(f"compiled ControlNet at {args.size}² after those: {it_per_s:.2f} it/s", flush=True)
    return {"first_step_seconds": seconds, "controlnet_it_per_s_after": it_per_s}


def one_image(pipe, controlnet, size: int, steps: int) -> np.ndarray:
    """The "controlnet" case's image (seed 0), to compare the compiled path with the eager one."""
    from diffusers import UniPCMultistepScheduler

    from bench.components import control_image
    from controlnet_core.sampling import ControlUnit, sample

    config = pipe.scheduler.config
    images, _ = sample(
        pipe,
        [ControlUnit(controlnet, control_image(size))],
        cases(DEFAULT_SWEEP, 0)["controlnet"],
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        steps=steps,
        width=size,
        height=size,
        scheduler_factory=lambda: UniPCMultistepScheduler.from_config(config),
    )
    return images[0]


def profile_steps(pipe, controlnet, *, size, device, steps: int = 5) -> str:
    """torch.profiler's table (top 20 by self time) of one ControlNet image's `steps` steps: where
    a step's time goes (kernels, host syncs, the scheduler, Python)."""
    from torch.profiler import ProfilerActivity, profile

    from bench.components import control_image
    from controlnet_core.sampling import ControlUnit

    units = [ControlUnit(controlnet, control_image(size))]
    variants = cases(DEFAULT_SWEEP, 0)["controlnet"]
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        run_once(pipe, units, variants, steps=steps, size=size, device=device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=key, row_limit=20)


def build_parser(defaults: dict | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ARCHES, default="tiny")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 8)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (fp16 on CUDA/MPS, fp32 on CPU), float32, bfloat16, float16",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--sweep", default=",".join(f"{v:g}" for v in DEFAULT_SWEEP), help="sweep scales"
    )
    switches = {
        "reference": "also time diffusers' own pipelines (batch 1)",
        "compile": "then time every case again on the compiled path (controlnet_core.compiled)",
        "profile": "profile 5 eager ControlNet steps with torch.profiler: where the time goes",
        "offload": "also time one ControlNet image with --offload (models in CPU between stages)",
        "other-sizes": "compiled: the first steps at two other sizes, then the it/s at --size again",
    }
    for name, text in switches.items():
        parser.add_argument(
            f"--{name}", action=argparse.BooleanOptionalAction, default=False, help=text
        )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def main(argv: Sequence[str] | None = None, defaults: dict | None = None) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser(defaults).parse_args(argv)
    if args.size % 8:
        raise SystemExit(f"--size must be a multiple of 8; got {args.size}")
    if args.steps < 2 or args.repeats < 1:
        raise SystemExit("--steps must be at least 2 and --repeats at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for but CUDA is not available")
        torch.backends.cudnn.benchmark = True
    from controlnet_core.models import pick_dtype

    dtype = pick_dtype(device, args.dtype)
    sweep_scales = [float(v) for v in args.sweep.split(",")]

    from bench.components import base_pipeline, build

    run_started = time.perf_counter()
    components, controlnet = build(args.arch, device, dtype)
    build_seconds = time.perf_counter() - run_started
    print(f"built {args.arch} on {device} ({dtype}) in {build_seconds:.1f} s", flush=True)
    pipe = base_pipeline(components)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results = measure_all(pipe, controlnet, args, device, sweep_scales)
    report = {
        "settings": {
            "arch": args.arch,
            "size": args.size,
            "steps": args.steps,
            "repeats": args.repeats,
            "dtype": str(dtype).replace("torch.", ""),
            "scheduler": "UniPC",
            "guidance_scale": 7.5,
            "sweep_scales": sweep_scales,
        },
        "machine": machine_info(device),
        "build_seconds": build_seconds,
        "cases": {
            name: {
                "images": r.images,
                "controlled": r.controlled,
                "total": r.total,
                "loop": r.loop,
                "median": r.median,
                "loop_median": r.loop_median,
                "steady": r.steady,
                "steady_median": r.steady_median,
            }
            for name, r in results.items()
        },
        "ratios": ratios(results),
        "it_per_s": iterations_per_second(results, args.steps),
    }
    if device.type == "cuda":  # whether an 8 GB card holds the models and the sweep's activations
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak GPU memory, all cases: {report['peak_memory_gib']:.2f} GiB", flush=True)
    if args.profile:
        report["profile"] = profile_steps(pipe, controlnet, size=args.size, device=device)
        print(report["profile"], flush=True)
    if args.reference:
        report["reference"] = reference_pipelines(
            components,
            controlnet,
            size=args.size,
            steps=args.steps,
            repeats=args.repeats,
            device=device,
        )
    if args.offload:
        report["offload"] = offload_case(pipe, controlnet, args, device=device)
    if args.compile:  # last: compiling changes the models in place (channels-last, fused QKV)
        report["compiled"] = compiled_cases(
            pipe, controlnet, args, device=device, sweep_scales=sweep_scales
        )
    report["run_seconds"] = time.perf_counter() - run_started
    print()
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
