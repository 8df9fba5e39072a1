#!/bin/bash
# A Megatron-LM launch script run on tools/pretrain.py: Megatron-LM's examples/gpt3/train_gpt3_175b_distributed.sh with
# the same flags and the same layout, scaled down to a tiny GPT-3-shaped model that trains on 2 CPU processes. The model
# is given by flags alone, so it is Megatron-LM's default GPT: LayerNorm, GeLU, biases, learned positions, dropout 0.1.
# What differs from the original, and nothing else:
# - sizes: 2 layers, hidden 64, 4 heads, sequence 64; batch 4 of 1 over 40 iterations (500000 in the original), with the decay/eval/save lengths scaled alike; tensor parallel 2 and pipeline parallel 1 for the
#   original's 8 x 16 (2 processes);
# - paths: tools/pretrain.py instead of pretrain_gpt.py, GPUS_PER_NODE and MASTER_PORT from the environment;
# - --tokenizer-type GPT2BPETokenizer is added: the original relies on --vocab-file/--merge-file alone, but Megatron-LM's
#   tokenizer type has no default (its build_tokenizer refuses None), so the original needs it too;
# - --step-batch-size-schedule is dropped: Megatron-LM's own argument check refuses it beside --global-batch-size (and
#   we refuse it, the batch size being fixed for a run).
# Usage: megatron_lm_style_gpt3.sh CHECKPOINT_PATH TENSORBOARD_LOGS_PATH VOCAB_FILE MERGE_FILE DATA_PATH

export CUDA_DEVICE_MAX_CONNECTIONS=1

GPUS_PER_NODE=${GPUS_PER_NODE:-2}
# Change for multinode config
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
NUM_NODES=1
NODE_RANK=0
WORLD_SIZE=$(($GPUS_PER_NODE*$NUM_NODES))

CHECKPOINT_PATH=$1       # where checkpoints go (and resume from)
TENSORBOARD_LOGS_PATH=$2 # TensorBoard event files
VOCAB_FILE=$3            # a GPT-2-style vocab.json
MERGE_FILE=$4            # its merges.txt
DATA_PATH=$5             # PREFIX_text_document, tokenized with those two files

PRETRAIN_SCRIPT_PATH="$(dirname "$0")/../tools/pretrain.py"

DISTRIBUTED_ARGS=(
    --nproc_per_node $GPUS_PER_NODE
    --nnodes $NUM_NODES
    --master_addr $MASTER_ADDR
    --master_port $MASTER_PORT
)

GPT_MODEL_ARGS=(
    --num-layers 2
    --hidden-size 64
    --num-attention-heads 4
    --seq-length 64
    --max-position-embeddings 64
    --attention-backend auto # Can use (flash/fused/unfused/local)
)

TRAINING_ARGS=(
    --micro-batch-size 1
    --global-batch-size 4
    --train-iters 40
    --weight-decay 0.1
    --adam-beta1 0.9
    --adam-beta2 0.95
    --init-method-std 0.006
    --clip-grad 1.0
    --fp16
    --lr 6.0e-5
    --lr-decay-style cosine
    --min-lr 6.0e-6
    --lr-warmup-fraction .001
    --lr-decay-iters 34
)

MODEL_PARALLEL_ARGS=(
    --tensor-model-parallel-size 2
    --pipeline-model-parallel-size 1
)

DATA_ARGS=(
    --data-path $DATA_PATH
    --tokenizer-type GPT2BPETokenizer
    --vocab-file $VOCAB_FILE
    --merge-file $MERGE_FILE
    --split 949,50,1
)

EVAL_AND_LOGGING_ARGS=(
    --log-interval 1
    --save-interval 20
    --eval-interval 20
    --save $CHECKPOINT_PATH
    --load $CHECKPOINT_PATH
    --eval-iters 2
    --tensorboard-dir $TENSORBOARD_LOGS_PATH
)

torchrun ${DISTRIBUTED_ARGS[@]} "$PRETRAIN_SCRIPT_PATH" \
    ${GPT_MODEL_ARGS[@]} \
    ${TRAINING_ARGS[@]} \
    ${MODEL_PARALLEL_ARGS[@]} \
    ${DATA_ARGS[@]} \
    ${EVAL_AND_LOGGING_ARGS[@]}
