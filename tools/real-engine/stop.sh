#!/usr/bin/env bash
# Stop the server started by serve.sh: its whole process group (the API server and its engine
# core child), by the pid it recorded.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${REAL_ENGINE_VENV:-$ROOT/.real-engine-venv}"
PORT="${PORT:-8011}"
STATE_DIR="${STATE_DIR:-$VENV/run}"
PID_FILE="$STATE_DIR/server-$PORT.pid"
[[ -f "$PID_FILE" ]] || { echo "no server recorded on port $PORT"; exit 0; }
PID="$(cat "$PID_FILE")"
kill -TERM -- "-$PID" 2>/dev/null || true
for _ in $(seq 1 30); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 1
done
kill -KILL -- "-$PID" 2>/dev/null || true
rm -f "$PID_FILE"
echo "stopped server $PID"
