#!/usr/bin/env bash
# The whole pipeline on an embedded default, on CPU, offline. Run through `make quickstart`.
#   raw text -> synthesize -> build corpus -> pack -> train -> evaluate
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${QUICKSTART_DIR:-runs/quickstart}
mkdir -p "$OUT"
TOKENIZER_MODEL=$(python -m megatron_ipt.assets mistral-tokenizer)
TOKENIZER_ARGS=(--tokenizer-type SentencePieceTokenizer --tokenizer-model "$TOKENIZER_MODEL")

echo "== 1. embedded corpus: CPython's pydoc topics + Newton's Opticks (real text, offline)"
python -m megatron_ipt.assets corpus "$OUT/raw.jsonl"

echo "== 2. synthesize instruction-response pairs (model-free rules engine on CPU; 2 rounds, as the paper does from scratch)"
rm -rf "$OUT/synth"
python tools/synthesize.py --input "$OUT/raw.jsonl" --output-dir "$OUT/synth" --engine rules --rounds 2

echo "== 3. render and mix by the general recipe (1/5 of the texts instruction-augmented, the rest raw)"
python tools/build_corpus.py --recipe general --collections "$OUT/synth" "${TOKENIZER_ARGS[@]}" \
    --output-dir "$OUT/corpus" --overwrite

echo "== 4. pack into Megatron .bin/.idx with the Mistral 32k SentencePiece tokenizer"
python tools/preprocess_data.py \
    --input "$OUT/corpus/corpus-*.jsonl" \
    --output-prefix "$OUT/quickstart" \
    --json-keys text \
    "${TOKENIZER_ARGS[@]}" \
    --append-eod \
    --workers 2

echo "quickstart done: outputs in $OUT"
