#!/usr/bin/env bash
# The paper's general setting as an ablation on one 8-GPU node (plan: examples/ablation/general_500m.yaml):
# InstructLM-500M from scratch, Vanilla vs Mix vs IPT at 2B tokens each, 3 seeds. Resumable: run it again.
# Usage: ablation_general_500m.sh RAW_JSONL HELD_OUT_JSONL TUNING_DATA TOKENIZER_MODEL RUN_DIR [--set KEY=VALUE ...]
#   TUNING_DATA: the synthesizer's tuning collection as {"context", "QA_list"} JSONL (the Mix baseline's data)
#   DRY_RUN=1 prints the resolved plan and every stage's command.
set -euo pipefail
RAW=$1; HELD_OUT=$2; TUNING=$3; TOKENIZER_MODEL=$4; RUN_DIR=$5; shift 5
cd "$(dirname "$0")/.."
exec python tools/ablate.py --plan examples/ablation/general_500m.yaml --run-dir "$RUN_DIR" \
    --set "corpus=$(realpath "$RAW")" --set "held_out=$(realpath "$HELD_OUT")" \
    --set "instruction_data.tuning_data=$(realpath "$TUNING")" --set "tokenizer.model=$(realpath "$TOKENIZER_MODEL")" \
    --workers "${WORKERS:-16}" ${DRY_RUN:+--dry-run} "$@"
