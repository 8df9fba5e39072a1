#!/usr/bin/env bash
# The paper's instruction synthesizer, rebuilt: Mistral-7B-v0.1 fine-tuned on the tuning collection with the
# few-shot, masked-loss recipe (Cheng et al. 2024, section 2; docs/tuning.md), on GPU nodes:
#   convert Mistral-7B-v0.1 (HF) -> build tuning data (packed, loss mask) -> tools/pretrain.py --loss-mask-data
#   -> export to HF -> tools/synthesize.py --engine vllm with the tuned model.
# Usage: tune_synthesizer_mistral7b.sh WORK_DIR MISTRAL_HF_DIR COLLECTION_DIR [EVAL_FILES...]
#   MISTRAL_HF_DIR: mistralai/Mistral-7B-v0.1 downloaded (config.json, *.safetensors, tokenizer files).
#   COLLECTION_DIR: instruction-pretrain/ft-instruction-synthesizer-collection downloaded (one folder per dataset),
#                   or your own rows in its format.
#   EVAL_FILES: evaluation sets to decontaminate the tuning data against (n-gram check), optional.
# Every stage is skipped when its output exists, and training resumes from WORK_DIR/checkpoints, so a rerun (or a
# second Slurm allocation) picks up where the last one stopped. Multi-node: run the conversion and data stages once
# (NNODES=1), then launch this on every node with NNODES/NODE_RANK/MASTER_ADDR set.
#
# Hyperparameters. The paper gives them in its appendix, which we could not check: every value marked UNVERIFIED is
# the reference's suggested default (shared reference §2.4), not the authors' number.
#   sequence length 4096 (the released synthesizer's max_model_len)                       UNVERIFIED for tuning
#   full fine-tuning in bf16, AdamW (beta2 0.95, weight decay 0.1), clip 1.0               UNVERIFIED
#   lr 1e-5 cosine to 1e-6, 5% warmup                                                      UNVERIFIED (5e-6..1e-5)
#   EPOCHS=2 over the packed sequences                                                     UNVERIFIED (1..3)
#   global batch 128 x 4096 = 0.5M tokens                                                  UNVERIFIED (0.5..1M)
#   up to 10K examples per dataset, those with the most pairs first                        the paper's rule
# Layout for one node of 8 x H100 80GB: TP=2 x DP=4, distributed optimizer, selective recompute.
set -euo pipefail
export CUDA_DEVICE_MAX_CONNECTIONS=1
WORK=$1; BASE=$2; COLLECTION=$3; shift 3; EVAL_FILES=("$@")
GPUS_PER_NODE=${GPUS_PER_NODE:-8}; NNODES=${NNODES:-1}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}; MASTER_PORT=${MASTER_PORT:-29500}
TP=${TP:-2}; SEQ_LENGTH=${SEQ_LENGTH:-4096}; GLOBAL_BATCH=${GLOBAL_BATCH:-128}; EPOCHS=${EPOCHS:-2}
LR=${LR:-1e-5}; MIN_LR=${MIN_LR:-1e-6}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CONVERTED=$WORK/mistral-7b-v0.1; DATA=$WORK/data/synthesizer-tune; CHECKPOINTS=$WORK/checkpoints
TOK=(--tokenizer-type HuggingFaceTokenizer --tokenizer-model "$CONVERTED/tokenizer")

# 1. Hugging Face -> our checkpoint, once (one process, ~30 GB of host memory in bf16... fp32 for fp16 sources)
if [[ -z "${DRY_RUN:-}" && ! -f "$CONVERTED/latest_checkpointed_iteration.txt" ]]; then
  python "$REPO/tools/convert_checkpoint.py" hf-to-megatron --hf-dir "$BASE" --save "$CONVERTED" \
    --tensor-model-parallel-size "$TP" --dtype bfloat16
fi

# 2. tuning data: rows rendered in the wire format, same-dataset examples packed few-shot, tokens + loss mask
DECONTAM=()
[[ ${#EVAL_FILES[@]} -gt 0 ]] && DECONTAM=(--decontaminate "${EVAL_FILES[@]}")
for split in train valid; do
  prefix=$DATA-$split
  if [[ -z "${DRY_RUN:-}" && ! -f "${prefix}_loss_mask_document.idx" ]]; then
    python "$REPO/tools/build_tuning_data.py" --input "$COLLECTION" --split "$split" "${TOK[@]}" \
      --seq-length "$SEQ_LENGTH" --max-examples-per-dataset 10000 "${DECONTAM[@]}" --output-prefix "$prefix"
  fi
done

# 3. train with the loss mask: EPOCHS passes over the packed training sequences
TRAIN_ITERS=${TRAIN_ITERS:-}
if [[ -z "$TRAIN_ITERS" ]]; then
  if [[ -n "${DRY_RUN:-}" ]]; then TRAIN_ITERS=1000; else
    SEQUENCES=$(python -c "from megatron_ipt.formats.indexed import read_index_header as r; import sys; print(r(sys.argv[1])['sequence_count'])" "$DATA-train_text_document")
    TRAIN_ITERS=$(( (SEQUENCES * EPOCHS + GLOBAL_BATCH - 1) / GLOBAL_BATCH ))
  fi
fi
LOAD=$CHECKPOINTS
LOAD_ARGS=(--load "$LOAD")
if [[ ! -f "$CHECKPOINTS/latest_checkpointed_iteration.txt" ]]; then LOAD_ARGS=(--load "$CONVERTED" --no-load-optim --no-load-rng); fi
DISTRIBUTED_ARGS=(--nproc_per_node "$GPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK"
                  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
MODEL=mistral-7b  # the preset matches Mistral-7B-v0.1; the converted model's own file when it is there
[[ -f "$CONVERTED/model.json" ]] && MODEL=$CONVERTED/model.json
ARGS=(--model "$MODEL" --seq-length "$SEQ_LENGTH"
      --data-path "$DATA-train_text_document" --loss-mask-data --split 100,0,0 "${TOK[@]}"
      --micro-batch-size 1 --global-batch-size "$GLOBAL_BATCH" --train-iters "$TRAIN_ITERS"
      --lr "$LR" --min-lr "$MIN_LR" --lr-decay-style cosine --lr-warmup-fraction 0.05
      --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --clip-grad 1.0
      --bf16 --recompute-granularity selective
      --tensor-model-parallel-size "$TP" --sequence-parallel --use-distributed-optimizer
      --overlap-grad-reduce --overlap-param-gather --distrib-optim-fully-reshardable-mem-efficient
      --log-interval 10 --save "$CHECKPOINTS" --save-interval 500 --keep-last 2 "${LOAD_ARGS[@]}"
      --tensorboard-dir "$WORK/tensorboard")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%s\n' "${ARGS[@]}"; exit 0; fi
cd "$REPO"
torchrun "${DISTRIBUTED_ARGS[@]}" tools/pretrain.py "${ARGS[@]}"
[[ "$NODE_RANK" == 0 ]] || exit 0

# 4. export the tuned model to HF (with the Mistral tokenizer files, so the directory stands alone)
if [[ ! -f "$WORK/synthesizer-hf/config.json" ]]; then
  python tools/convert_checkpoint.py megatron-to-hf --load "$CHECKPOINTS" --model "$CONVERTED/model.json" \
    --tokenizer-dir "$CONVERTED/tokenizer" --hf-dir "$WORK/synthesizer-hf"
fi

# 5. judge it against the base model on the collection's valid rows, then use it as the released synthesizer:
#    e.g. python tools/synthesize.py --engine vllm --model $WORK/synthesizer-hf --input 'raw/*.jsonl' --rounds 2 ...
python tools/judge_synthesizer.py --input "$COLLECTION" --split valid --engine vllm --model "$BASE" --model "$WORK/synthesizer-hf" \
  --name mistral-7b-v0.1 --name tuned --max-rows 500 --output "$WORK/judge.json"
