#!/usr/bin/env bash
# Instruction synthesis against `vllm serve` replicas: starts REPLICAS servers on this node (TP GPUs each),
# waits until each answers /health, runs the OpenAI-compatible client over all of them, stops the servers.
#   bash examples/synthesize_vllm_serve.sh INPUT OUTPUT_DIR [more synthesize.py flags]
# Environment: MODEL (default instruction-pretrain/instruction-synthesizer), GPUS (8), TP (1),
# REPLICAS (GPUS / TP), BASE_PORT (8000), ROUNDS (2), CONCURRENCY (requests in flight, 64 per replica),
# SERVER_URLS (comma-separated .../v1 URLs of servers already running, e.g. on other nodes: then none is
# started here). Server logs go to OUTPUT_DIR/vllm-serve-N.log. DRY_RUN=1 prints the commands instead.
set -euo pipefail
INPUT=$1; OUTPUT_DIR=$2; shift 2
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
MODEL=${MODEL:-instruction-pretrain/instruction-synthesizer}
GPUS=${GPUS:-8}; TP=${TP:-1}; REPLICAS=${REPLICAS:-$(( GPUS / TP ))}
BASE_PORT=${BASE_PORT:-8000}; ROUNDS=${ROUNDS:-2}
SERVED_NAME=synthesizer
PIDS=()
stop_servers() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }

if [[ -z "${SERVER_URLS:-}" ]]; then
    URLS=()
    for (( i = 0; i < REPLICAS; i++ )); do
        PORT=$(( BASE_PORT + i ))
        DEVICES=$(seq -s, $(( i * TP )) $(( i * TP + TP - 1 )))
        SERVE=(vllm serve "$MODEL" --served-model-name "$SERVED_NAME" --host 0.0.0.0 --port "$PORT"
               --max-model-len 4096 --tensor-parallel-size "$TP" --gpu-memory-utilization 0.9)
        URLS+=("http://127.0.0.1:$PORT/v1")
        if [[ -n "${DRY_RUN:-}" ]]; then echo "CUDA_VISIBLE_DEVICES=$DEVICES $(printf '%q ' "${SERVE[@]}")"; continue; fi
        mkdir -p "$OUTPUT_DIR"
        CUDA_VISIBLE_DEVICES=$DEVICES "${SERVE[@]}" > "$OUTPUT_DIR/vllm-serve-$i.log" 2>&1 &
        PIDS+=($!)
    done
    trap stop_servers EXIT
    SERVER_URLS=$(IFS=,; echo "${URLS[*]}")
    if [[ -z "${DRY_RUN:-}" ]]; then
        for (( i = 0; i < REPLICAS; i++ )); do
            until curl -sf "http://127.0.0.1:$(( BASE_PORT + i ))/health" > /dev/null; do
                kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "vllm serve $i exited; see $OUTPUT_DIR/vllm-serve-$i.log" >&2; exit 1; }
                sleep 5
            done
        done
        echo "all $REPLICAS vllm servers are up: $SERVER_URLS" >&2
    fi
fi
NUM_URLS=$(awk -F, '{print NF}' <<< "$SERVER_URLS")
CONCURRENCY=${CONCURRENCY:-$(( 64 * NUM_URLS ))}

CLIENT=(python "$REPO/tools/synthesize.py"
        --input "$INPUT" --output-dir "$OUTPUT_DIR"
        --engine openai --openai-base-url "$SERVER_URLS" --model "$SERVED_NAME"
        --rounds "$ROUNDS" --max-model-len 4096 --max-new-tokens 400 --temperature 0
        --max-concurrency "$CONCURRENCY" --request-timeout 600 --max-retries 4 --resume
        "$@")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "${CLIENT[@]}"; echo; exit 0; fi
"${CLIENT[@]}"
