#!/usr/bin/env bash
# The real-engine fidelity job, end to end (optional, not part of CI; about 20 minutes on 2
# cores after a first install of about 11): build the engine, convert the model, serve it,
# calibrate, measure capacity, observe the validation grid, replay every run with
# `servesim fidelity`, stop the server.
#
# Output: $OUT (default /tmp/servesim-real-engine) in the layout of tests/data/fidelity/:
# calibration/ (calibrate's files; cost.toml points at profile.csv), alpaca_lengths.csv, and one
# folder per run with scenario.toml, requests.parquet, summary.json and fidelity.json. Every
# scenario's cost reads ../calibration/profile.csv, so the folder can be copied as a whole.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export REAL_ENGINE_VENV="${REAL_ENGINE_VENV:-$ROOT/.real-engine-venv}"
export PORT="${PORT:-8011}" MAX_NUM_SEQS="${MAX_NUM_SEQS:-32}"
export MAX_NUM_BATCHED_TOKENS="${MAX_NUM_BATCHED_TOKENS:-512}"
OUT="${OUT:-/tmp/servesim-real-engine}"
SERVESIM="${SERVESIM:-$ROOT/.venv/bin/servesim}"
PY="${PROJECT_PYTHON:-$ROOT/.venv/bin/python}"
GENERATOR="${GENERATOR:-alpaca-7b}"   # AlpacaEval model whose real output lengths are used
PROMPTS="${PROMPTS:-$ROOT/../shared/data/alpacaeval_prompts.jsonl}"
MODEL_DIR="$REAL_ENGINE_VENV/smollm2-135m-hf"
URL="http://127.0.0.1:$PORT"
# The client runs at the engine's raised priority, on the frontend's core, away from the
# worker's core (see serve.sh).
CLIENT=(nice -n "${CLIENT_NICE:--15}" taskset -c "${FRONTEND_CPUS:-0}")
PARAMS=(--server-param "max_num_seqs=$MAX_NUM_SEQS"
        --server-param "max_num_batched_tokens=$MAX_NUM_BATCHED_TOKENS")
mkdir -p "$OUT/calibration"

bash "$HERE/setup.sh"
"$REAL_ENGINE_VENV/bin/python" "$HERE/convert.py" "$MODEL_DIR"
MODEL_DIR="$MODEL_DIR" bash "$HERE/serve.sh"
trap 'bash "$HERE/stop.sh"' EXIT

# KV capacity as the server reports it (vllm:cache_config_info).
INFO="$(curl -fsS "$URL/metrics" | grep '^vllm:cache_config_info')"
export BLOCK_TOKENS="$(sed -E 's/.*[{,]block_size="([0-9]+)".*/\1/' <<<"$INFO")"
export KV_BLOCKS="$(sed -E 's/.*num_gpu_blocks="([0-9]+)".*/\1/' <<<"$INFO")"
echo "KV cache: $KV_BLOCKS blocks of $BLOCK_TOKENS tokens"

# 1. Calibration: designed probes, separate from every validation run.
"${CLIENT[@]}" "$SERVESIM" calibrate --endpoint "$URL" --out "$OUT/calibration" \
    --max-batch "$MAX_NUM_SEQS" --max-prompt-tokens "$MAX_NUM_BATCHED_TOKENS" --quiet
printf '[engine.cost]\nkind = "fitted"\npath = "profile.csv"\n' >"$OUT/calibration/cost.toml"
"$PY" "$HERE/make_scenarios.py" engine "$OUT/calibration/cost.toml" "$OUT/engine.toml" \
    ../calibration/profile.csv
"$PY" "$HERE/make_scenarios.py" alpaca "$GENERATOR" 805 "$OUT/alpaca_lengths.csv"

observe() {  # observe NAME ARRIVAL N WORKLOAD [extra observe args]
    local name="$1" arrival="$2" n="$3" workload="$4" dir; shift 4
    dir="$OUT/$name"; mkdir -p "$dir"
    "$PY" "$HERE/make_scenarios.py" run "$OUT/engine.toml" "$name" "$arrival" "$n" \
        "$workload" "$dir/scenario.toml"
    "${CLIENT[@]}" "$SERVESIM" observe "$dir/scenario.toml" --endpoint "$URL" --out "$dir" \
        "${PARAMS[@]}" --quiet "$@"
    "$SERVESIM" fidelity "$dir" "$dir/scenario.toml" --json >"$dir/fidelity.json"
}
throughput() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['throughput_rps'])" \
                   "$OUT/$1/summary.json"; }
rate() { "$PY" -c "import sys; print(round(float(sys.argv[1]) * float(sys.argv[2]), 4))" "$1" "$2"; }

# 2. Capacity: closed loops of 1, 8 and 32 clients, 128 prompt and 64 output tokens (replayed
#    too, but not validation runs: the grid's rates are set from them).
for c in 1 8 32; do observe "capacity_fixed_closed$c" "closed:$c" $((c * 2 > 8 ? c * 2 : 8)) fixed:128:64; done
CAP="$(throughput capacity_fixed_closed32)"
echo "capacity, 128/64 tokens, 32 clients: $CAP requests/s"

# 3. Validation grid, fixed lengths: open loop at 0.3, 0.6, 0.9 and 1.5 of capacity, and two
#    closed loops.
observe fixed_open030 "poisson:$(rate "$CAP" 0.3)" 40 fixed:128:64
observe fixed_open060 "poisson:$(rate "$CAP" 0.6)" 60 fixed:128:64
observe fixed_open090 "poisson:$(rate "$CAP" 0.9)" 90 fixed:128:64
observe fixed_open150 "poisson:$(rate "$CAP" 1.5)" 120 fixed:128:64
observe fixed_closed04 closed:4 40 fixed:128:64
observe fixed_closed16 closed:16 80 fixed:128:64

# 4. AlpacaEval prompts with one model's real output lengths (trace rows in prompt order, as
#    observe sends prompt i as request i).
TRACE=trace:../alpaca_lengths.csv
observe capacity_alpaca_closed32 closed:32 64 "$TRACE" --prompts "$PROMPTS"
ACAP="$(throughput capacity_alpaca_closed32)"
echo "capacity, AlpacaEval, 32 clients: $ACAP requests/s"
observe alpaca_open030 "poisson:$(rate "$ACAP" 0.3)" 40 "$TRACE" --prompts "$PROMPTS"
observe alpaca_open060 "poisson:$(rate "$ACAP" 0.6)" 60 "$TRACE" --prompts "$PROMPTS"
observe alpaca_open090 "poisson:$(rate "$ACAP" 0.9)" 90 "$TRACE" --prompts "$PROMPTS"
observe alpaca_open150 "poisson:$(rate "$ACAP" 1.5)" 120 "$TRACE" --prompts "$PROMPTS"
observe alpaca_closed04 closed:4 40 "$TRACE" --prompts "$PROMPTS"
observe alpaca_closed16 closed:16 80 "$TRACE" --prompts "$PROMPTS"

"$PY" "$HERE/table.py" "$OUT"
