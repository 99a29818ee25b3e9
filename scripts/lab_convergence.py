"""Does the toy show the paper's "sudden convergence"? Edge F1 on held-out maps while a fresh
ControlNet trains from zero convolutions (the training lab's core, `controlnet_core.toy.lab`).

    python scripts/lab_convergence.py --steps 2000 --every 100 --count 8 --kind canny

Prints one line per checkpoint (step, seconds, mean loss since the last one, mean of the zero
convolutions' norms, held-out edge F1 with the ControlNet) and the plain-SD F1 for reference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--kind", choices=("canny", "scribble"), default="canny")
    parser.add_argument("--drop-prompt", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np

    from controlnet_core import Engine, Settings, TrainingLab

    flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split()
    print("cpu flags:", " ".join(f for f in ("avx512_bf16", "amx_bf16", "avx2") if f in flags))
    lab = TrainingLab(
        Engine(Settings(backend="toy")).manager.base(),
        args.kind,
        args.drop_prompt,
        samples=512,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    started = time.perf_counter()
    print("step  seconds  loss     zero-conv norm  held-out edge F1")
    print(
        f"{0:5d}  {0:7.0f}  {'-':7s}  {0.0:14.4f}  {lab.held_out_f1(args.count):.3f}  (= plain SD)"
    )
    while lab.step < args.steps:
        before = lab.step
        lab.train(args.every)
        loss = float(np.mean(lab.losses[before:]))
        norm = float(np.mean(lab.zero_conv_norms()))
        f1 = lab.held_out_f1(args.count)
        seconds = time.perf_counter() - started
        print(f"{lab.step:5d}  {seconds:7.0f}  {loss:.5f}  {norm:14.4f}  {f1:.3f}", flush=True)


if __name__ == "__main__":
    main()
