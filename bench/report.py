"""Markdown tables (as in BENCHMARKS.md) from the JSON files that `bench.bench_compare --json` writes.

python -m bench.report results/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RATIO_KEYS = (
    "comparison / (2 x controlnet)",
    "comparison / (plain + controlnet)",
    "sweep / (5 x controlnet)",
    "sweep / separate runs",
    "controlnet / plain",
)


def markdown(report: dict) -> str:
    """One results section: settings, per-case times and it/s, ratios end to end and loop only."""
    s, m = report["settings"], report["machine"]
    device = m["device"] + (f" ({m['gpu']})" if "gpu" in m else "")
    lines = [
        f"`{s['arch']}`, {s['size']}², {s['steps']} UniPC steps, CFG {s['guidance_scale']:g}, "
        f"{s['dtype']}, {device}, {m['torch_threads']} torch thread(s), "
        f"median of {s['repeats']}; whole run {report['run_seconds']:.0f} s",
        "",
        "| case | images | median s (min–max) | loop s | it/s | image·it/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, case in report["cases"].items():
        its = report["it_per_s"][name]
        lines.append(
            f"| {name} | {case['images']} | {case['median']:.3f} "
            f"({min(case['total']):.3f}–{max(case['total']):.3f}) | {case['loop_median']:.3f} "
            f"| {its['it_per_s']:.2f} | {its['image_it_per_s']:.2f} |"
        )
    lines += ["", "| ratio | end to end | denoising loop |", "| --- | ---: | ---: |"]
    for key, value in report["ratios"]["total"].items():
        lines.append(f"| {key} | {value:.2f} | {report['ratios']['loop'][key]:.2f} |")
    if "reference" in report:
        lines += ["", "| diffusers pipeline, batch 1 | it/s |", "| --- | ---: |"]
        for name, value in report["reference"].items():
            lines.append(f"| {name} | {value['it_per_s']:.2f} |")
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    for path in paths:
        print(f"<!-- {path} -->")
        print(markdown(json.loads(Path(path).read_text())))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
