#!/usr/bin/env bash
# Slurm: one torchrun per node through srun, rendezvous on the first node of the allocation.
#   sbatch --nodes=4 examples/pretrain_slurm.sh examples/pretrain_instructlm_1b.sh CKPT TB TOKENIZER DATA_PATH...
#SBATCH --job-name=megatron-ipt
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
set -euo pipefail
SCRIPT=$1; shift
export NNODES=${SLURM_NNODES:-1}
if [[ -z "${MASTER_ADDR:-}" ]]; then
    MASTER_ADDR=localhost
    if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); fi
fi
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}
export GPUS_PER_NODE=${GPUS_PER_NODE:-8}
if [[ -n "${DRY_RUN:-}" ]]; then exec bash "$SCRIPT" "$@"; fi
# Each task gets its node rank from SLURM_NODEID and runs the launch script's torchrun.
srun --ntasks-per-node=1 bash -c 'NODE_RANK=$SLURM_NODEID exec bash "$0" "$@"' "$SCRIPT" "$@"
