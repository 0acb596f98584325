#!/usr/bin/env bash
# Start vLLM's OpenAI server (CPU backend) on 127.0.0.1 in its own process group and wait until
# GET /v1/models answers. Prints the base URL. Stop it with tools/real-engine/stop.sh.
#
# Settings (environment): MODEL_DIR, PORT (8011), MAX_NUM_SEQS (32), MAX_NUM_BATCHED_TOKENS
# (512), KV_SPACE_GB (2), ENGINE_NICE (-15), FRONTEND_CPUS (0), STATE_DIR (where the pid file and server log go).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${REAL_ENGINE_VENV:-$ROOT/.real-engine-venv}"
MODEL_DIR="${MODEL_DIR:-$VENV/smollm2-135m-hf}"
PORT="${PORT:-8011}"
MAX_NUM_SEQS="${MAX_NUM_SEQS:-32}"
MAX_NUM_BATCHED_TOKENS="${MAX_NUM_BATCHED_TOKENS:-512}"
STATE_DIR="${STATE_DIR:-$VENV/run}"
mkdir -p "$STATE_DIR"
LOG="$STATE_DIR/server-$PORT.log"

# Offline; 2 GB of KV cache; reserve no core. The worker's OpenMP threads go on core 1 only
# (VLLM_CPU_OMP_THREADS_BIND): bound to both cores (0-1) the engine is fastest on an idle machine
# (about 30 ms per decode step at batch 1), but whenever anything else runs (its own frontend,
# the client, other work) every step waits for the descheduled thread and the same step took
# 30-70 ms from one probe to the next. On one core it took 39-45 ms, run after run, leaving core
# 0 to the API server, the client and the rest.
export HF_HUB_OFFLINE=1
export VLLM_CPU_KVCACHE_SPACE="${KV_SPACE_GB:-2}"
export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-1}"
export VLLM_CPU_NUM_OF_RESERVED_CPU="${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}"

# The `vllm` console script fails on this distribution (it is named vllm-cpu), so run the module.
# The engine binds its two OpenMP threads to both cores: when another process takes a core, every
# step waits for the descheduled thread and runs 2-4x slower. A raised priority (ENGINE_NICE,
# default -15; needs root, else nice warns and runs at the normal priority) keeps the measured
# engine close to its unloaded speed on a shared machine.
# The frontend (API server and engine-core process, which polls its worker) is pinned to
# FRONTEND_CPUS (default core 0), so that it never takes the worker's core; the worker sets its
# own affinity from VLLM_CPU_OMP_THREADS_BIND.
nice -n "${ENGINE_NICE:--15}" taskset -c "${FRONTEND_CPUS:-0}" setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL_DIR" --served-model-name smollm2-135m \
    --host 127.0.0.1 --port "$PORT" \
    --dtype bfloat16 --max-model-len 2048 --enforce-eager \
    --max-num-seqs "$MAX_NUM_SEQS" --max-num-batched-tokens "$MAX_NUM_BATCHED_TOKENS" \
    --no-enable-prefix-caching >"$LOG" 2>&1 &
echo $! >"$STATE_DIR/server-$PORT.pid"

for _ in $(seq 1 180); do
    if curl -fsS "http://127.0.0.1:$PORT/v1/models" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$PORT"
        exit 0
    fi
    if ! kill -0 "$(cat "$STATE_DIR/server-$PORT.pid")" 2>/dev/null; then
        echo "server exited; see $LOG" >&2
        tail -20 "$LOG" >&2
        exit 1
    fi
    sleep 2
done
echo "server not ready after 360 s; see $LOG" >&2
exit 1
