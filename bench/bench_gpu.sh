#!/usr/bin/env bash
# The GPU benchmark (issue 4) on a machine without network: installs carried wheels if there are any,
# then runs bench.gpu on the SD1.5 architecture (random weights, fp16, 512², 20 UniPC steps) and on
# SDXL's (1024², 20 steps; no profile and no other sizes, so that it fits one call), and writes the
# results next to the log.
# Usage, from the repository root:
#   bash bench/bench_gpu.sh [OUTPUT_DIR] [extra bench.gpu arguments...]
# BENCH_ARCHS="sd15" or "sdxl" runs one of the two (each fits one device call on its own).
# Wheels: put diffusers (and anything else the machine lacks) in .whl/ (git-ignored); see BENCHMARKS.md.
set -euo pipefail

out="${1:-${OUT:-/tmp/bench-out}}"
shift || true
mkdir -p "$out"

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
    for arch in ${BENCH_ARCHS:-sd15 sdxl}; do
        case "$arch" in
            sd15) python3 -m bench.gpu --json "$out/bench-gpu.json" "$@" ;;
            sdxl) python3 -m bench.gpu --arch sdxl --size 1024 --no-profile --no-other-sizes \
                --repeats 2 --json "$out/bench-gpu-sdxl.json" "$@" ;;
            *) echo "BENCH_ARCHS: unknown arch $arch (sd15, sdxl)" >&2; exit 2 ;;
        esac
    done
} 2>&1 | tee "$out/bench-gpu.log"
