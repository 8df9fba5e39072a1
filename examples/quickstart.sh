#!/usr/bin/env bash
# The whole pipeline on an embedded default, on CPU, offline. Run through `make quickstart`.
# Stages are appended here as they land: synthesize -> build corpus -> pack -> train -> evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${QUICKSTART_DIR:-runs/quickstart}
mkdir -p "$OUT"
TOKENIZER_MODEL=$(python -m megatron_ipt.assets mistral-tokenizer)

echo "== 1. embedded corpus: CPython's pydoc topics + Newton's Opticks (real text, offline)"
python -m megatron_ipt.assets corpus "$OUT/raw.jsonl"

echo "== 2. pack into Megatron .bin/.idx with the Mistral 32k SentencePiece tokenizer"
python tools/preprocess_data.py \
    --input "$OUT/raw.jsonl" \
    --output-prefix "$OUT/quickstart" \
    --json-keys text \
    --tokenizer-type SentencePieceTokenizer \
    --tokenizer-model "$TOKENIZER_MODEL" \
    --append-eod \
    --workers 2

echo "quickstart done: outputs in $OUT"
