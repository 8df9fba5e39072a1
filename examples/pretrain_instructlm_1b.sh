#!/usr/bin/env bash
# InstructLM-1.3B from scratch on one 8-GPU node (or several: NNODES, NODE_RANK, MASTER_ADDR).
# Usage: pretrain_instructlm_1b.sh CHECKPOINT_DIR TENSORBOARD_DIR TOKENIZER_MODEL DATA_PATH...
#   DATA_PATH: a `<prefix>_text_document`, or a blend `0.3 prefixA 0.7 prefixB`. DRY_RUN=1 prints the flags.
set -euo pipefail
export CUDA_DEVICE_MAX_CONNECTIONS=1
CHECKPOINT_PATH=$1; TENSORBOARD_LOGS_PATH=$2; TOKENIZER_MODEL=$3; shift 3; DATA_PATH=("$@")
GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NNODES=${NNODES:-1}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-29500}

DISTRIBUTED_ARGS=(--nproc_per_node "$GPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK"
                  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
MODEL_ARGS=(--model instructlm-1.3b --seq-length 2048)
TRAINING_ARGS=(--micro-batch-size 4 --global-batch-size 512 --train-iters 95000   # 100B tokens at 1M tokens/step
               --lr 2e-4 --min-lr 2e-5 --lr-decay-style cosine --lr-warmup-iters 2000
               --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --clip-grad 1.0 --bf16)
MODEL_PARALLEL_ARGS=(--tensor-model-parallel-size 2 --pipeline-model-parallel-size 1 --use-distributed-optimizer)
DATA_ARGS=(--data-path "${DATA_PATH[@]}" --split 990,9,1 --tokenizer-type SentencePieceTokenizer
           --tokenizer-model "$TOKENIZER_MODEL")
EVAL_AND_LOGGING_ARGS=(--log-interval 10 --save-interval 2000 --keep-last 3 --eval-interval 1000 --eval-iters 10
                       --save "$CHECKPOINT_PATH" --load "$CHECKPOINT_PATH" --tensorboard-dir "$TENSORBOARD_LOGS_PATH")
ARGS=("${MODEL_ARGS[@]}" "${TRAINING_ARGS[@]}" "${MODEL_PARALLEL_ARGS[@]}" "${DATA_ARGS[@]}" "${EVAL_AND_LOGGING_ARGS[@]}")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%s\n' "${ARGS[@]}"; exit 0; fi
cd "$(dirname "$0")/.."
exec torchrun "${DISTRIBUTED_ARGS[@]}" tools/pretrain.py "${ARGS[@]}"
