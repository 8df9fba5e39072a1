#!/usr/bin/env bash
# make ablation-demo: does IPT help on the embedded corpus, from scratch, at the tiny model's scale? Vanilla vs Mix
# vs IPT (rules engine), 3 seeds each, on CPU (~36 min on 2 cores). With a CPU-tuned synthesizer from
# `make synthesizer-demo` (runs/synthesizer-demo/tuned-hf), a second IPT arm uses it. Resumable: run it again.
# Plan: examples/ablation/demo_cpu.yaml; report: $OUT/run/report/report.md; docs/ablation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
OUT=${ABLATION_DEMO_DIR:-runs/ablation-demo}
SYNTHESIZER=${SYNTHESIZER:-runs/synthesizer-demo/tuned-hf}
mkdir -p "$OUT"

# The embedded corpus (535 real documents) in three disjoint slices: every 5th held out (evaluation only), the next
# slice the source of the instruction data (Mix and IPT), the other 321 documents the training corpus.
python -m megatron_ipt.assets corpus "$OUT/raw.jsonl" >/dev/null
awk 'NR % 5 == 0' "$OUT/raw.jsonl" > "$OUT/held_out.jsonl"
awk 'NR % 5 == 1' "$OUT/raw.jsonl" > "$OUT/instruction_source.jsonl"
awk 'NR % 5 == 2 || NR % 5 == 3 || NR % 5 == 4' "$OUT/raw.jsonl" > "$OUT/train.jsonl"

# The instruction data: context-based pairs mined by the rules engine from the instruction-source slice, one entry
# per line in the synthesizer-tuning layout (the paper's Mix baseline adds the synthesizer's tuning collection).
if [[ ! -s "$OUT/tuning.jsonl" ]]; then
  rm -rf "$OUT/instruction_synth"
  python tools/synthesize.py --input "$OUT/instruction_source.jsonl" --output-dir "$OUT/instruction_synth" \
      --engine rules --rounds 1 >/dev/null
  python - "$OUT/instruction_synth" "$OUT/tuning.jsonl" <<'PY'
import glob, json, sys
from megatron_ipt.io.atomic import write_atomic
rows = [json.dumps(entry, ensure_ascii=False) + "\n"
        for path in sorted(glob.glob(sys.argv[1] + "/shard*-part*.jsonl")) for line in open(path, encoding="utf-8")
        for entry in json.loads(line) if entry["QA_list"]]
write_atomic(sys.argv[2], rows)
print(f"instruction data: {len(rows)} entries with pairs -> {sys.argv[2]}")
PY
fi

ARMS='[vanilla, mix, ipt]'
if [[ -f "$SYNTHESIZER/config.json" ]]; then
  echo "a CPU-tuned synthesizer is present ($SYNTHESIZER): adding the arm ipt_lm"
  ARMS="[vanilla, mix, ipt, {name: ipt_lm, kind: ipt, synthesizer: {engine: hf, rounds: 2, args: [--model, $(realpath "$SYNTHESIZER"), --max-new-tokens, 400]}}]"
fi
python tools/ablate.py --plan examples/ablation/demo_cpu.yaml --run-dir "$OUT/run" \
    --set "corpus=$(realpath "$OUT/train.jsonl")" --set "held_out=$(realpath "$OUT/held_out.jsonl")" \
    --set "tokenizer.model=$(python -m megatron_ipt.assets mistral-tokenizer)" \
    --set "instruction_data.tuning_data=$(realpath "$OUT/tuning.jsonl")" --set "arms=$ARMS" \
    --workers 2 "$@"
