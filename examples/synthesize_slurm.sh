#!/usr/bin/env bash
# Instruction synthesis as a Slurm job array, vLLM offline engine on GPUs: every array task is one shard
# (input record i goes to shard i % NUM_SHARDS) and runs with --resume, so a requeued or resubmitted task
# continues where it stopped. Submit from the repository root:
#   sbatch --array=0-15 --gpus-per-task=1 examples/synthesize_slurm.sh INPUT OUTPUT_DIR [more synthesize.py flags]
# Environment: MODEL (default instruction-pretrain/instruction-synthesizer), ROUNDS (2; 3 for domain corpora),
# TP (tensor parallel size, = --gpus-per-task), NUM_SHARDS (default: the array's task count).
# DRY_RUN=1 prints the command instead of running it.
#SBATCH --job-name=ipt-synthesize
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --requeue
set -euo pipefail
INPUT=$1; OUTPUT_DIR=$2; shift 2
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
MODEL=${MODEL:-instruction-pretrain/instruction-synthesizer}
ROUNDS=${ROUNDS:-2}
TP=${TP:-1}
NUM_SHARDS=${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-1}}
SHARD_INDEX=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))

CMD=(python "$REPO/tools/synthesize.py"
     --input "$INPUT" --output-dir "$OUTPUT_DIR"
     --engine vllm --model "$MODEL" --rounds "$ROUNDS"
     --max-model-len 4096 --max-new-tokens 400 --temperature 0
     --tensor-parallel-size "$TP" --gpu-memory-utilization 0.9
     --num-shards "$NUM_SHARDS" --shard-index "$SHARD_INDEX" --resume
     "$@")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "${CMD[@]}"; echo; exit 0; fi
exec "${CMD[@]}"
