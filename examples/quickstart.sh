#!/usr/bin/env bash
# The whole pipeline on an embedded default, on CPU, offline. Run through `make quickstart`.
#   raw text -> synthesize -> build corpus -> pack -> train -> evaluate
set -euo pipefail
cd "$(dirname "$0")/.."
# megatron-core and torch print deprecation warnings about their own internals on every rank; keep the output readable.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
OUT=${QUICKSTART_DIR:-runs/quickstart}
mkdir -p "$OUT"
TOKENIZER_MODEL=$(python -m megatron_ipt.assets mistral-tokenizer)
TOKENIZER_ARGS=(--tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER_MODEL")

echo "== 1. embedded corpus: CPython's pydoc topics + Newton's Opticks (real text, offline)"
python -m megatron_ipt.assets corpus "$OUT/raw.jsonl"

# Every 5th document is held out: never synthesized or trained on, it becomes the evaluation set of step 7.
awk 'NR % 5 == 0' "$OUT/raw.jsonl" > "$OUT/held_out.jsonl"
awk 'NR % 5 != 0' "$OUT/raw.jsonl" > "$OUT/train.jsonl"

echo "== 2. synthesize instruction-response pairs for 1/5 of the texts, as the paper does from scratch"
echo "      (model-free rules engine on CPU, 2 rounds; shard 0 of 5 = records 0, 5, 10, ...; the rest stays raw)"
rm -rf "$OUT/synth"
python tools/synthesize.py --input "$OUT/train.jsonl" --output-dir "$OUT/synth" --engine rules --rounds 2 \
    --num-shards 5 --shard-index 0
awk 'NR % 5 != 1' "$OUT/train.jsonl" > "$OUT/train_raw.jsonl"

echo "== 3. render the collections and mix them with the raw texts by the general recipe"
python tools/build_corpus.py --recipe general --collections "$OUT/synth" --raw-input "$OUT/train_raw.jsonl" \
    "${TOKENIZER_ARGS[@]}" --output-dir "$OUT/corpus" --overwrite

echo "== 4. pack into Megatron .bin/.idx with the Mistral 32k SentencePiece tokenizer"
python tools/preprocess_data.py \
    --input "$OUT/corpus/corpus-*.jsonl" \
    --output-prefix "$OUT/quickstart" \
    --json-keys text \
    "${TOKENIZER_ARGS[@]}" \
    --append-eod \
    --workers 2

echo "== 5. train the tiny model on it: TP=2 over 2 CPU processes (gloo), 300 steps"
rm -rf "$OUT/checkpoints" "$OUT/tensorboard"
python -m torch.distributed.run --nproc-per-node 2 tools/pretrain.py \
    --model tiny --tensor-model-parallel-size 2 \
    --micro-batch-size 8 --global-batch-size 16 --train-iters 300 \
    --lr 3e-3 --min-lr 3e-4 --lr-warmup-iters 30 --lr-decay-style cosine \
    --data-path "$OUT/quickstart_text_document" --split 95,5,0 \
    "${TOKENIZER_ARGS[@]}" \
    --log-interval 50 --eval-interval 100 --eval-iters 5 \
    --save "$OUT/checkpoints" --save-interval 150 \
    --tensorboard-dir "$OUT/tensorboard"

echo "== 6. build reading-comprehension tasks from the held-out documents (short: the tiny model sees 64 tokens)"
python tools/evaluate.py build-tasks --input "$OUT/held_out.jsonl" --output-dir "$OUT/eval_tasks" \
    --max-sentence-words 25 --max-passage-words 40

echo "== 7. evaluate the trained checkpoint on them, TP=2 (the run's model.json gives the model)"
python -m torch.distributed.run --nproc-per-node 2 tools/evaluate.py \
    --load "$OUT/checkpoints" --tensor-model-parallel-size 2 "${TOKENIZER_ARGS[@]}" \
    --tasks "$OUT/eval_tasks" --max-new-tokens 16 \
    --output "$OUT/eval_report.json" --tensorboard-dir "$OUT/tensorboard"

echo "quickstart done: outputs in $OUT"
echo "training and evaluation curves: tensorboard --logdir $OUT/tensorboard   (then open http://localhost:6006)"
