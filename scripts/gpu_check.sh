#!/usr/bin/env bash
# Check llmmarl on a GPU machine in one command, offline, in about 6 minutes:
#   1. env     versions, GPU, whether Triton kernels run (they need a C compiler), missing packages
#   2. models  a random-weight model of SmolLM2-135M-Instruct's exact shape becomes the `default` model
#   3. tests   pytest -m gpu (tests/test_gpu.py: bf16 generation + logprobs, grammar, prefix cache, mixed adapters,
#              one GRPO and one PPO update, NashConv reader, ablation harness, exact policy reader and probe
#              suite), then tests/test_backend.py's exact float32 checks on the same device
#   3b. probes the probe suite (scripts/bench_learning.py) on the tiny model: every algorithm, 2 updates each
#   4. bench   rollout throughput: runner at 1/8/32/256 concurrent games vs raw batched generate vs one at a time
# Each step runs under its own time limit, so one failure does not eat the others; the end prints pass/fail.
#
# Usage: scripts/gpu_check.sh [--cpu] [--model-files DIR] [--wheels DIR] [--out DIR]
#   --cpu              degraded mode for a machine without a GPU: checks the harness itself in about a minute
#                      (GPU tests report as skipped, the benchmark runs the tiny model at 1 and 4 games)
#   --model-files DIR  tokenizer files to use (`python scripts/gpu_check.py prepare DIR` writes them where the real
#                      model is installed); default: the local default model's if present, else a tokenizer trained
#                      on the spot (see scripts/gpu_check.py)
#   --wheels DIR       install these wheels first (pip --no-index into OUT/site): see scripts/fetch_wheels.sh
#   --out DIR          where the model cache, logs and benchmark JSON go (default: a new temporary folder)
#
# Needs Python >= 3.11 with torch (CUDA build), transformers, peft, and beyond those: accelerate pydantic numpy
# jinja2 pyyaml typer rich tqdm tokenizers safetensors pettingzoo gymnasium shimmy open-spiel xgrammar trl datasets
# pytest (step 1 names the missing ones; scripts/fetch_wheels.sh downloads them elsewhere as ~44 MB of wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CPU=0; MODEL_FILES=""; WHEELS=""; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --model-files) MODEL_FILES=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)"; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$(mktemp -d -t llmmarl-gpu-check.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
if [ -z "$MODEL_FILES" ]; then  # the local default model's tokenizer, if this machine has made it
  for d in "${LLMMARL_CACHE:-}" "$HOME/.cache/llmmarl"; do
    if [ -n "$d" ] && [ -f "$d/models/SmolLM2-135M-Instruct/tokenizer.json" ]; then
      MODEL_FILES="$d/models/SmolLM2-135M-Instruct"; break
    fi
  done
fi
if [ -n "$WHEELS" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/*.whl || exit 3
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# This check's own model cache: `default` and `tiny` resolve to the random-weight models built in step 2.
export LLMMARL_CACHE="$OUT/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$CPU" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "torch sees no CUDA GPU here. For a quick check of this script on a CPU machine, pass --cpu."; exit 2
fi

declare -a NAMES RESULTS
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/NAME.log, keep the tail on screen
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  grep -v -E "it/s\]|s/it\]|Warning: |warnings.warn|^Loading weights" "$OUT/$name.log" | tail -n "${TAILN:-20}"
  local verdict=PASS
  if [ $rc = 124 ]; then verdict="FAIL (timed out)"; elif [ $rc != 0 ]; then verdict="FAIL (exit $rc)"; fi
  if [ $rc = 0 ] && grep -q -E "^[0-9]+ skipped" "$OUT/$name.log"; then verdict="SKIPPED (see log)"; fi
  echo "=== $name: $verdict in $((SECONDS - t0))s"
  NAMES+=("$name"); RESULTS+=("$verdict")
}

step env 60 "$PY" scripts/gpu_check.py env
if [ "${RESULTS[0]}" != PASS ]; then echo "install the missing packages first"; exit 1; fi
step models 120 "$PY" scripts/gpu_check.py models ${MODEL_FILES:+--model-files "$MODEL_FILES"}
if [ "$CPU" = 1 ]; then
  step gpu_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
  echo "(--cpu: tests/test_backend.py skipped; it takes minutes on a small CPU)"
  step bench 180 "$PY" scripts/gpu_check.py bench --model tiny --concurrency 1 4 --sequential-games 2 \
    --max-new-tokens 8 --out "$OUT/rollout.json"
else
  step gpu_tests 210 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
  step backend_tests 90 "$PY" -m pytest -q -p no:cacheprovider -x tests/test_backend.py
  TAILN=12 step probes 150 "$PY" scripts/bench_learning.py --model tiny --probes bandit coordination \
    --algorithms grpo rloo ppo ppo_central --updates 2 --read-every 2 --set games_per_update=8
  TAILN=12 step bench 170 "$PY" scripts/gpu_check.py bench --model default --concurrency 1 8 32 256 \
    --sequential-games 4 --max-new-tokens 32 --out "$OUT/rollout.json"
fi

echo
echo "==== llmmarl gpu_check summary ($([ "$CPU" = 1 ] && echo "CPU, degraded mode" || echo GPU), ${SECONDS}s, logs in $OUT)"
failed=0
for i in "${!NAMES[@]}"; do
  printf '  %-14s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"
  case "${RESULTS[$i]}" in FAIL*) failed=1 ;; esac
done
grep -h -E "^(GPU|Triton|one-at-a-time|N= *[0-9]+|model )" "$OUT/env.log" "$OUT/bench.log" 2>/dev/null | sed 's/^/  /'
[ "$CPU" = 1 ] && echo "  (no GPU: the GPU tests were skipped; figures are CPU figures of the tiny model)"
if [ $failed = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
exit $failed
