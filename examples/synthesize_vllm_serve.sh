#!/usr/bin/env bash
# Instruction synthesis against `vllm serve` replicas: starts REPLICAS servers on this node (TP GPUs each),
# waits until each answers /health, runs the OpenAI-compatible client over all of them, stops the servers.
#   bash examples/synthesize_vllm_serve.sh INPUT OUTPUT_DIR [more synthesize.py flags]
# Environment: MODEL (default instruction-pretrain/instruction-synthesizer), GPUS (8), TP (1),
# REPLICAS (GPUS / TP), BASE_PORT (8000), ROUNDS (2), CONCURRENCY (requests in flight, 64 per replica),
# SERVER_URLS (comma-separated .../v1 URLs of servers already running, e.g. on other nodes: then none is
# started here). Server logs go to OUTPUT_DIR/vllm-serve-N.log. DRY_RUN=1 prints the commands instead.
# Access: the servers listen on HOST (default 127.0.0.1: this node only). HOST=0.0.0.0 (or an address other nodes
# reach) serves other nodes and then requires an API key: VLLM_API_KEY or API_KEY, else one is generated and
# written (mode 600) to API_KEY_FILE (default OUTPUT_DIR/vllm-api-key). The servers get the key as VLLM_API_KEY
# (the environment, not argv, which every user of the node can read) and the client as OPENAI_API_KEY. A client
# on another node (SERVER_URLS=...) takes VLLM_API_KEY / API_KEY, else reads API_KEY_FILE when it exists.
set -euo pipefail
INPUT=$1; OUTPUT_DIR=$2; shift 2
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
MODEL=${MODEL:-instruction-pretrain/instruction-synthesizer}
GPUS=${GPUS:-8}; TP=${TP:-1}; REPLICAS=${REPLICAS:-$(( GPUS / TP ))}
BASE_PORT=${BASE_PORT:-8000}; ROUNDS=${ROUNDS:-2}
HOST=${HOST:-127.0.0.1}
API_KEY=${VLLM_API_KEY:-${API_KEY:-}}
API_KEY_FILE=${API_KEY_FILE:-$OUTPUT_DIR/vllm-api-key}
SERVED_NAME=synthesizer
PIDS=()
stop_servers() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

if [[ -z "${SERVER_URLS:-}" ]]; then
    if ! is_loopback "$HOST" && [[ -z "$API_KEY" ]]; then
        if [[ -s "$API_KEY_FILE" ]]; then  # a requeued job keeps the key its clients already hold
            API_KEY=$(< "$API_KEY_FILE")
        else
            API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
            if [[ -n "${DRY_RUN:-}" ]]; then
                echo "DRY_RUN: a new API key would be written to $API_KEY_FILE" >&2
            else
                mkdir -p "$(dirname "$API_KEY_FILE")"
                (umask 077; printf '%s\n' "$API_KEY" > "$API_KEY_FILE")
                echo "vllm serve listens on $HOST (other nodes): its API key is in $API_KEY_FILE" >&2
            fi
        fi
    fi
    # the client and the health checks reach the servers here: the loopback unless HOST is one address
    LOCAL=127.0.0.1
    [[ $HOST == 0.0.0.0 || $HOST == :: ]] || LOCAL=$HOST
    [[ $LOCAL == *:* ]] && LOCAL="[$LOCAL]"
    URLS=()
    for (( i = 0; i < REPLICAS; i++ )); do
        PORT=$(( BASE_PORT + i ))
        DEVICES=$(seq -s, $(( i * TP )) $(( i * TP + TP - 1 )))
        SERVE=(vllm serve "$MODEL" --served-model-name "$SERVED_NAME" --host "$HOST" --port "$PORT"
               --max-model-len 4096 --tensor-parallel-size "$TP" --gpu-memory-utilization 0.9
               --enable-prompt-tokens-details)
        ENVS=("CUDA_VISIBLE_DEVICES=$DEVICES")
        [[ -n "$API_KEY" ]] && ENVS+=("VLLM_API_KEY=$API_KEY")
        URLS+=("http://$LOCAL:$PORT/v1")
        if [[ -n "${DRY_RUN:-}" ]]; then echo "$(printf '%q ' "${ENVS[@]}" "${SERVE[@]}")"; continue; fi
        mkdir -p "$OUTPUT_DIR"
        env "${ENVS[@]}" "${SERVE[@]}" > "$OUTPUT_DIR/vllm-serve-$i.log" 2>&1 &
        PIDS+=($!)
    done
    trap stop_servers EXIT
    SERVER_URLS=$(IFS=,; echo "${URLS[*]}")
    if [[ -z "${DRY_RUN:-}" ]]; then
        for (( i = 0; i < REPLICAS; i++ )); do
            until curl -sf "http://$LOCAL:$(( BASE_PORT + i ))/health" > /dev/null; do
                kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "vllm serve $i exited; see $OUTPUT_DIR/vllm-serve-$i.log" >&2; exit 1; }
                sleep 5
            done
        done
        echo "all $REPLICAS vllm servers are up: $SERVER_URLS" >&2
    fi
elif [[ -z "$API_KEY" && -s "$API_KEY_FILE" ]]; then
    API_KEY=$(< "$API_KEY_FILE")  # written by the script that started the servers (a shared file system)
fi
NUM_URLS=$(awk -F, '{print NF}' <<< "$SERVER_URLS")
CONCURRENCY=${CONCURRENCY:-$(( 64 * NUM_URLS ))}

CLIENT=(python "$REPO/tools/synthesize.py"
        --input "$INPUT" --output-dir "$OUTPUT_DIR"
        --engine openai --openai-base-url "$SERVER_URLS" --model "$SERVED_NAME"
        --rounds "$ROUNDS" --max-model-len 4096 --max-new-tokens 400 --temperature 0
        --max-concurrency "$CONCURRENCY" --request-timeout 600 --max-retries 4 --resume
        "$@")
# the client sends OPENAI_API_KEY as its Bearer token
CLIENT_ENV=()
[[ -n "$API_KEY" ]] && CLIENT_ENV=("OPENAI_API_KEY=$API_KEY")
if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "${CLIENT_ENV[@]}" "${CLIENT[@]}"; echo; exit 0; fi
env "${CLIENT_ENV[@]}" "${CLIENT[@]}"
