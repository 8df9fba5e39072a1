#!/usr/bin/env bash
# The continual CPU demo of tools/ablate.py (docs/ablation.md): SmolLM2-135M-Instruct (real weights, through the
# converter), Vanilla vs IPT with pairs written by the CPU-tuned synthesizer, equal tokens, 2 seeds, evaluated on
# tasks from held-out documents plus held-out perplexity. Needs the tuned synthesizer first:
#   EXPORT_ONLY=1 make synthesizer-demo     (~25 min: runs/synthesizer-demo/tuned-hf)
# Plan: examples/ablation/continual_cpu.yaml; report: $OUT/run/report/report.md. Resumable: run it again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
OUT=${ABLATION_CONTINUAL_DIR:-runs/ablation-continual}
SYNTHESIZER=${SYNTHESIZER:-runs/synthesizer-demo/tuned-hf}
TRAIN_DOCS=${TRAIN_DOCS:-16}       # training documents, each synthesized by the LM
HELD_OUT_DOCS=${HELD_OUT_DOCS:-24} # held-out documents: tasks + perplexity
if [[ ! -f "$SYNTHESIZER/config.json" ]]; then
  echo "error: $SYNTHESIZER: no tuned synthesizer (run: EXPORT_ONLY=1 make synthesizer-demo)" >&2
  exit 1
fi
mkdir -p "$OUT"
# The domain text: documents of the embedded corpus of 80-300 words (short enough for the 135M synthesizer's
# context and for CPU generation), every 3rd held out until there are enough, disjoint by construction.
python -m megatron_ipt.assets corpus "$OUT/raw.jsonl" >/dev/null
python - "$OUT" "$TRAIN_DOCS" "$HELD_OUT_DOCS" <<'PY'
import json, sys
out, n_train, n_held = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [line for line in open(f"{out}/raw.jsonl", encoding="utf-8") if 80 <= len(json.loads(line)["text"].split()) <= 300]
held = [r for i, r in enumerate(rows) if i % 3 == 0][:n_held]
train = [r for r in rows if r not in held][:n_train]
if len(train) < n_train or len(held) < n_held:
    sys.exit(f"error: the embedded corpus has {len(rows)} documents of 80-300 words, fewer than asked")
open(f"{out}/train.jsonl", "w", encoding="utf-8").writelines(train)
open(f"{out}/held_out.jsonl", "w", encoding="utf-8").writelines(held)
print(f"{len(train)} training documents, {len(held)} held-out documents")
PY
SYN=$(realpath "$SYNTHESIZER")
python tools/ablate.py --plan examples/ablation/continual_cpu.yaml --run-dir "$OUT/run" \
    --set "corpus=$(realpath "$OUT/train.jsonl")" --set "held_out=$(realpath "$OUT/held_out.jsonl")" \
    --set "model.hf_dir=$(python -m megatron_ipt.assets smollm2-hf-dir)" \
    --set "synthesizer.args=[--model, $SYN, --max-new-tokens, 200]" "$@"
