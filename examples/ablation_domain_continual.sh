#!/usr/bin/env bash
# The paper's domain setting as an ablation on one 8-GPU node (plan: examples/ablation/domain_continual.yaml):
# continual pre-training of a Hugging Face model, Vanilla vs IPT at 0.5B tokens each, 3 seeds. Resumable.
# Usage: ablation_domain_continual.sh DOMAIN_JSONL HELD_OUT_JSONL GENERAL_INSTRUCTIONS HF_MODEL_DIR RUN_DIR [--set ...]
#   GENERAL_INSTRUCTIONS: {"question", "response"} JSONL (e.g. OpenOrca), mixed 1:1 by tokens in both arms
#   DRY_RUN=1 prints the resolved plan and every stage's command.
set -euo pipefail
DOMAIN=$1; HELD_OUT=$2; GENERAL=$3; HF_MODEL=$4; RUN_DIR=$5; shift 5
cd "$(dirname "$0")/.."
exec python tools/ablate.py --plan examples/ablation/domain_continual.yaml --run-dir "$RUN_DIR" \
    --set "corpus=$(realpath "$DOMAIN")" --set "held_out=$(realpath "$HELD_OUT")" \
    --set "instruction_data.general_instructions=$(realpath "$GENERAL")" --set "model.hf_dir=$(realpath "$HF_MODEL")" \
    --workers "${WORKERS:-16}" ${DRY_RUN:+--dry-run} "$@"
