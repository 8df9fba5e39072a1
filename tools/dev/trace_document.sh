#!/usr/bin/env bash
# How much of the code one document passes through, raw JSONL -> synthesize (rules, 1 round) -> build_corpus ->
# preprocess_data -> pretrain (1 step): the project files and functions that execute, per file.
#   bash tools/dev/trace_document.sh [python]     (run from any checkout; python defaults to .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-.venv/bin/python}
export PYTHONPATH=$PWD TRACE_ROOT=$PWD PYTHONWARNINGS=ignore
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TRACE_OUT=$work/trace
run() { "$PY" tools/dev/files_executed.py "$@" >/dev/null; }
tok=$("$PY" -m megatron_ipt.assets mistral-tokenizer)
"$PY" -m megatron_ipt.assets corpus "$work/raw.jsonl" >/dev/null 2>&1
head -1 "$work/raw.jsonl" >"$work/one.jsonl"
run tools/synthesize.py --input "$work/one.jsonl" --output-dir "$work/synth" --engine rules --rounds 1
run tools/build_corpus.py --recipe general --collections "$work/synth" --raw-input "$work/one.jsonl" \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$tok" --output-dir "$work/corpus" --overwrite
run tools/preprocess_data.py --input "$work/corpus/corpus-*.jsonl" --output-prefix "$work/packed" --json-keys text \
    --tokenizer-type SentencePieceTokenizer --tokenizer-model "$tok" --append-eod --workers 1
"$PY" -m torch.distributed.run --nproc-per-node 1 tools/dev/files_executed.py tools/pretrain.py --model tiny \
    --micro-batch-size 1 --global-batch-size 1 --train-iters 1 --data-path "$work/packed_text_document" \
    --split 100,0,0 --tokenizer-type SentencePieceTokenizer --tokenizer-model "$tok" >"$work/pretrain.log" 2>&1 ||
    { tail -20 "$work/pretrain.log"; exit 1; }
"$PY" - "$work" <<'PY'
import glob, json, sys
seen = {tuple(pair) for path in glob.glob(sys.argv[1] + "/trace.*.json") for pair in json.load(open(path))}
files = sorted({f for f, _ in seen})
print(f"{len(files)} files, {len(seen)} functions executed")
# What a reader follows: functions called, not module bodies run on import (<module>, class bodies, the dataclass
# and lambda helpers Python generates), nor package __init__ files.
called = {(f, g) for f, g in seen if not g.startswith("<") and g not in ("__init__", "__post_init__", "__repr__")
          and not f.endswith("__init__.py")}
print(f"{len({f for f, _ in called})} files, {len(called)} functions called (module bodies and __init__ left out)")
for f in files:
    print(f"  {f}: {sum(1 for g, _ in seen if g == f)} ({sum(1 for g, _ in called if g == f)} called)")
PY
