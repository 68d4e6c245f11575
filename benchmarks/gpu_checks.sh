#!/usr/bin/env bash
# The GPU checks of issues 21 and 25, prepared for a lent GPU machine (python3 with CUDA torch; the
# store packages travel as wheels in .whl/, see /work/.library/device/README.md). Log: ${OUT:-.}/gpu_checks.log.
#
#   bash benchmarks/gpu_checks.sh coils    # issue 25: the trainer's loader with on-the-fly coil synthesis
#                                          # on the GPU, as a ratio to the single-coil loader (about 3 min)
#   bash benchmarks/gpu_checks.sh stage3   # issue 21: paper preset, stage III regression, class-token head:
#                                          # STEPS optimiser steps (default 100), tokens/s and peak memory
#
# Budget: a paper stage-III regression step (batch 16, 23,040 tokens per subject, checkpointing) took
# 2.73 s on an H200 (README); on an H100 a start, the 24-subject synthetic store and the first 60 steps
# did not fit in 320 s (2026-12-06). The script prints a running median every 10 steps, so a run cut
# by its time limit still reports; give stage3 a device call of its own (about 8 min for 100 steps).
set -uo pipefail
part="${1:-coils}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
export PYTHONUNBUFFERED=1
LOG="${OUT:-.}/gpu_checks.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  case "$part" in
    coils)
      timeout 110 python3 benchmarks/bench_coil_loader.py --device cuda --subjects 6 --frames 5 --repeats 3
      timeout 110 python3 benchmarks/bench_coil_loader.py --device cuda --subjects 6 --frames 50 --repeats 2 \
        --modes train eval ;;
    stage3)
      timeout 540 python3 benchmarks/bench_stages.py --preset paper --stage regression --subjects 20 --workers 12 \
        --steps "${STEPS:-100}" --warmup 2 ;;
    *) echo "usage: gpu_checks.sh coils|stage3" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$LOG"
