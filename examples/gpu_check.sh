#!/usr/bin/env bash
# The GPU check: proves the CUDA face of this checkout on one GPU in under 8 minutes
# (docs/development.md#checking-a-gpu-machine):
#   1. installs what does not import from a local wheel directory and builds the native extension in place,
#   2. runs the tests marked `cuda` (bf16/fp32 train -> save -> resume bit-exact with NCCL, HF -> ours logits,
#      evaluation, the hf synthesis engine),
#   3. measures tokens/s/GPU, TFLOP/s/GPU and MFU on instructlm-1.3b at seq 4096 in BF16, against a bare
#      megatron-core loop,
# then prints one summary block and writes it as JSON to $OUT.
#
#   WHEELS=wheels/ bash examples/gpu_check.sh        # or: make gpu-check WHEELS=wheels/
#   DRY_RUN=1 bash examples/gpu_check.sh             # no GPU: the same steps on CPU (cuda tests skip, tiny benchmark)
#
# Environment: PYTHON (default python3: the one that holds torch), WHEELS (a directory of wheels, filled by the
# pip download command in docs/development.md#checking-a-gpu-machine; needed only for what does not import),
# OUT (default runs/gpu_check/summary.json; the steps' logs go beside it), DRY_RUN=1 or DEVICE=cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHON
exec "$PYTHON" tools/dev/gpu_check.py
