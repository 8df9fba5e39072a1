#!/usr/bin/env bash
# Multi-node preprocessing as a Slurm job array: every array task packs one byte slice of the input
# (tools/preprocess_data.py --num-shards/--shard-index: the input's files in order are cut into equal byte ranges,
# one big file included; a .gz/.zst file goes whole to one task), then one merge job joins the slices in order
# (tools/merge_datasets.py). The merged dataset is byte for byte what one run over the whole input writes.
# Submit from the repository root:
#   JOB=$(sbatch --parsable --array=0-63 examples/preprocess_slurm.sh INPUT OUTPUT_DIR \
#         --tokenizer-type HuggingFaceTokenizer --tokenizer-model /models/llama3 --append-eod [more flags])
#   sbatch --dependency=afterok:$JOB examples/preprocess_slurm.sh --merge OUTPUT_DIR
# Array tasks write OUTPUT_DIR/parts/part-NNNNN_{key}_document.{bin,idx}; the merge writes
# OUTPUT_DIR/${NAME}_{key}_document.{bin,idx} for each of JSON_KEYS. A failed task can be rerun alone
# (sbatch --array=17 ...): its slice is rewritten, nothing else changes.
# Environment: JSON_KEYS (default: text; the same keys as --json-keys), NAME (default: corpus), NUM_SHARDS
# (default: the array's task count), WORKERS (default: the task's CPUs), PYTHON (default: python).
# DRY_RUN=1 prints the commands instead of running them.
#SBATCH --job-name=ipt-preprocess
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32
set -euo pipefail
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
PYTHON=${PYTHON:-python}
JSON_KEYS=${JSON_KEYS:-text}
NAME=${NAME:-corpus}

run() {
    if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ "${1:-}" == "--merge" ]]; then
    OUTPUT_DIR=$2
    for KEY in $JSON_KEYS; do
        # merge_datasets.py merges every dataset of a directory: give it this key's slices only
        KEY_DIR="$OUTPUT_DIR/parts/by_key/$KEY"
        run mkdir -p "$KEY_DIR"
        shopt -s nullglob
        FILES=("$OUTPUT_DIR"/parts/part-*_"${KEY}"_document.{bin,idx})
        shopt -u nullglob
        if [[ ${#FILES[@]} -eq 0 && -z "${DRY_RUN:-}" ]]; then
            echo "error: no slices of key '$KEY' in $OUTPUT_DIR/parts (did the array tasks run?)" >&2; exit 1
        fi
        for FILE in "${FILES[@]}"; do
            run ln -sf "$(cd "$(dirname "$FILE")" && pwd)/$(basename "$FILE")" "$KEY_DIR/"
        done
        run "$PYTHON" "$REPO/tools/merge_datasets.py" --input "$KEY_DIR" \
            --output-prefix "$OUTPUT_DIR/${NAME}_${KEY}_document"
    done
    exit 0
fi

INPUT=$1; OUTPUT_DIR=$2; shift 2
NUM_SHARDS=${NUM_SHARDS:-${SLURM_ARRAY_TASK_COUNT:-1}}
SHARD_INDEX=$(( ${SLURM_ARRAY_TASK_ID:-0} - ${SLURM_ARRAY_TASK_MIN:-0} ))
WORKERS=${WORKERS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}
run "$PYTHON" "$REPO/tools/preprocess_data.py" \
    --input "$INPUT" --output-prefix "$(printf '%s/parts/part-%05d' "$OUTPUT_DIR" "$SHARD_INDEX")" \
    --json-keys $JSON_KEYS --workers "$WORKERS" \
    --num-shards "$NUM_SHARDS" --shard-index "$SHARD_INDEX" "$@"
