#!/usr/bin/env bash
# Continual pre-training of Llama-3-8B in the paper's domain setting: 1B tokens = 4k steps x 0.25M tokens
# (64 x 4096), TP=2 + distributed optimizer + FP8 (hybrid, delayed scaling; needs Transformer Engine on H100).
# Usage: continual_llama3_8b_fp8.sh CHECKPOINT_DIR TENSORBOARD_DIR TOKENIZER_MODEL BASE DATA_PATH...
#   BASE: Llama-3-8B either as a Hugging Face directory (config.json + *.safetensors), converted once here into
#         CONVERTED_DIR (default BASE-megatron; needs ~20 GB of host memory, one process, a few minutes), or as a
#         checkpoint tools/convert_checkpoint.py already wrote. It is loaded when CHECKPOINT_DIR has no run yet;
#         afterwards the run resumes from CHECKPOINT_DIR.
#   TOKENIZER_MODEL: the Llama-3 tokenizer.json or its directory (e.g. CONVERTED_DIR/tokenizer).
# After training, export for transformers / vLLM:
#   python tools/convert_checkpoint.py megatron-to-hf --load CHECKPOINT_DIR --model CONVERTED_DIR/model.json --hf-dir OUT
set -euo pipefail
export CUDA_DEVICE_MAX_CONNECTIONS=1
CHECKPOINT_PATH=$1; TENSORBOARD_LOGS_PATH=$2; TOKENIZER_MODEL=$3; BASE=$4; shift 4; DATA_PATH=("$@")
GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NNODES=${NNODES:-1}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-29500}
TP=2
REPO=$(cd "$(dirname "$0")/.." && pwd)

BASE_CHECKPOINT=$BASE
if [[ -f "$BASE/config.json" ]]; then  # a Hugging Face directory: convert it once
  BASE_CHECKPOINT=${CONVERTED_DIR:-${BASE%/}-megatron}
  if [[ -z "${DRY_RUN:-}" && ! -f "$BASE_CHECKPOINT/latest_checkpointed_iteration.txt" ]]; then
    if [[ "$NNODES" != 1 ]]; then
      echo "convert the base model once before a multi-node run:" >&2
      echo "  python $REPO/tools/convert_checkpoint.py hf-to-megatron --hf-dir $BASE --save $BASE_CHECKPOINT" \
           "--tensor-model-parallel-size $TP" >&2
      exit 1
    fi
    python "$REPO/tools/convert_checkpoint.py" hf-to-megatron --hf-dir "$BASE" --save "$BASE_CHECKPOINT" \
      --tensor-model-parallel-size "$TP"
  fi
fi
LOAD=$CHECKPOINT_PATH
[[ -f "$CHECKPOINT_PATH/latest_checkpointed_iteration.txt" ]] || LOAD=$BASE_CHECKPOINT
LOAD_ARGS=(--load "$LOAD")
[[ "$LOAD" == "$BASE_CHECKPOINT" ]] && LOAD_ARGS+=(--no-load-optim --no-load-rng)
# The converted model's own shape file (e.g. Llama-3.1's rope scaling); the preset matches Llama-3-8B.
MODEL=llama3-8b
[[ -f "$BASE_CHECKPOINT/model.json" ]] && MODEL=$BASE_CHECKPOINT/model.json

DISTRIBUTED_ARGS=(--nproc_per_node "$GPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK"
                  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
MODEL_ARGS=(--model "$MODEL" --seq-length 4096)
TRAINING_ARGS=(--micro-batch-size 1 --global-batch-size 64 --train-iters 4000
               --lr 1e-5 --min-lr 1e-6 --lr-decay-style cosine --lr-warmup-iters 200
               --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --clip-grad 1.0)
DTYPE_ARGS=(--bf16 --fp8-format hybrid --fp8-amax-history-len 1024 --fp8-amax-compute-algo max)
MODEL_PARALLEL_ARGS=(--tensor-model-parallel-size "$TP" --pipeline-model-parallel-size 1 --sequence-parallel
                     --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather
                     # gather the reshardable optimizer state on one rank per DP group at save time (an 8B model's
                     # fp32 state would otherwise be gathered into host memory on every rank)
                     --distrib-optim-fully-reshardable-mem-efficient)
DATA_ARGS=(--data-path "${DATA_PATH[@]}" --split 99,1,0 --tokenizer-type HuggingFaceTokenizer
           --tokenizer-model "$TOKENIZER_MODEL")
EVAL_AND_LOGGING_ARGS=(--log-interval 10 --save-interval 500 --keep-last 3 --eval-interval 250 --eval-iters 16
                       --save "$CHECKPOINT_PATH" "${LOAD_ARGS[@]}" --tensorboard-dir "$TENSORBOARD_LOGS_PATH")
ARGS=("${MODEL_ARGS[@]}" "${TRAINING_ARGS[@]}" "${DTYPE_ARGS[@]}" "${MODEL_PARALLEL_ARGS[@]}" "${DATA_ARGS[@]}"
      "${EVAL_AND_LOGGING_ARGS[@]}")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%s\n' "${ARGS[@]}"; exit 0; fi
cd "$REPO"
exec torchrun "${DISTRIBUTED_ARGS[@]}" tools/pretrain.py "${ARGS[@]}"
