#!/usr/bin/env bash
# The whole GPU benchmark suite in one go (at most 9 minutes on one H100: the step limits).
#
#   experiments/benchmarks/run_gpu_suite.sh OUT_DIR            # on a GPU machine
#   experiments/benchmarks/run_gpu_suite.sh OUT_DIR --part2    # what the first run missed
#   experiments/benchmarks/run_gpu_suite.sh OUT_DIR --part3    # every variant's train step
#   experiments/benchmarks/run_gpu_suite.sh OUT_DIR --smoke    # tiny sizes, any machine (CPU)
#
# On one H200 the full suite does not fit in one 10-minute call (compiles fill it; README, GPU
# section). --part2 appends to the committed kernel and layer results the cases the first run
# did not reach (causal jax.xla, Pallas, attnlab.cudnn; every variant's layer at L = 4096 and
# 16384); --part3 times every variant's train step alone. Each fits one call.
#
# Writes under OUT_DIR: environment.txt, attention_kernels_gpu.json, train_step_gpu.json,
# attention_layers_gpu.json, variant_steps_gpu.json, a log per step and tables.md (the markdown
# tables of all four).
# Each step has a wall-clock limit and the benchmarks save after every row, so a step that runs
# out of time keeps what it measured and the suite goes on. Exit status: number of failed steps.
#
# Environment: PYTHON (default python), XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.92).
set -uo pipefail

OUT=${1:?usage: run_gpu_suite.sh OUT_DIR [--smoke]}
MODE=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
mkdir -p "$OUT"
cd "$ROOT"

# The package must import. Where it is not installed, a folder of links rebuilds its layout
# (attnlab/__init__.py plus attnlab.models, attnlab.train and attnlab.configs) from this
# checkout (no install, no network). The checks run outside the repository root, whose own
# attnlab/ folder (only __init__.py) would otherwise shadow the package.
if ! (cd / && "$PY" -c "import attnlab.models, attnlab.train") 2>/dev/null; then
  PKG=$(mktemp -d)
  mkdir -p "$PKG/attnlab"
  ln -sfn "$ROOT/attnlab/__init__.py" "$PKG/attnlab/__init__.py"
  for sub in models train configs; do ln -sfn "$ROOT/$sub" "$PKG/attnlab/$sub"; done
  export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}"
  (cd / && "$PY" -c "import attnlab.models, attnlab.train") || { echo "cannot import attnlab"; exit 1; }
fi

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  lscpu 2>/dev/null | grep -i "model name" || true
  uptime
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

if [[ "$MODE" == "--smoke" ]]; then
  # The GPU code paths at toy sizes on whatever backend is here (cuDNN/Pallas rows then
  # record errors); checks the script end to end in a few minutes.
  FORCE=(--force)
  KERNELS=(--lengths 64,128 --heads 2 --head-dim 16 --repeats 2 --warmup 1)
  LAYERS=(--layer-lengths 64 --d-model 32 --layer-heads 4 --repeats 1 --warmup 1
          --variants standard,memory_efficient)
  TRAIN=(--sizes smoke --impl xla --rounds 2 --steps 1 --variants none)
  VARIANTS=(--variants all --variant-size smoke --variant-rounds 1
            --variant-steps 1)
  LIMITS=(300 300 300 300)
elif [[ "$MODE" == "--part2" ]]; then
  FORCE=()
  cp "$HERE/results/attention_kernels_gpu.json" "$HERE/results/attention_layers_gpu.json" "$OUT/"
  KERNELS=(--deadline-s 140 --append --kernels jax.xla,pallas.mha,attnlab.cudnn
           --lengths 4096,16384,32768)
  LAYERS=(--deadline-s 330 --append --layer-lengths 4096,16384
          --variants "$(cd / && "$PY" -c "from attnlab.models import attention
print(','.join(n for n in sorted(attention.REGISTRY) if n != 'standard'))")")
  TRAIN=(--variants none)
  VARIANTS=()
  LIMITS=(160 0 370 0)
elif [[ "$MODE" == "--part3" ]]; then
  FORCE=()
  KERNELS=()
  LAYERS=()
  TRAIN=()
  VARIANTS=(--variants all --variant-size gpt2_t1024 --variant-rounds 3)
  LIMITS=(0 0 0 540)
else
  FORCE=()
  KERNELS=(--deadline-s 120)
  LAYERS=(--deadline-s 60)
  TRAIN=(--variants none)
  # Every variant's step at T = 1024 (4 GPT-2-small layers, batch 8), relative to standard.
  VARIANTS=(--variants all --variant-size gpt2_t1024 --variant-rounds 3)
  LIMITS=(140 230 80 100)
fi

failed=0
step() {  # step NAME LIMIT_S command...   (a limit of 0 skips the step)
  local name=$1 limit=$2
  shift 2
  [[ "$limit" == 0 ]] && return
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc, $((SECONDS - t0)) s"
  if [[ $rc -ne 0 ]]; then
    failed=$((failed + 1))
    tail -n 5 "$OUT/$name.log"
  fi
}

# ${X[@]+"${X[@]}"}: an empty array expands to nothing under `set -u`.
step attention_kernels "${LIMITS[0]}" "$PY" "$HERE/bench_attention.py" --device gpu \
  ${FORCE[@]+"${FORCE[@]}"} --section kernels ${KERNELS[@]+"${KERNELS[@]}"} \
  --out "$OUT/attention_kernels_gpu.json"
step train_step "${LIMITS[1]}" "$PY" "$HERE/bench_train_step.py" --device gpu \
  ${FORCE[@]+"${FORCE[@]}"} ${TRAIN[@]+"${TRAIN[@]}"} --out "$OUT/train_step_gpu.json"
step attention_layers "${LIMITS[2]}" "$PY" "$HERE/bench_attention.py" --device gpu \
  ${FORCE[@]+"${FORCE[@]}"} --section layers ${LAYERS[@]+"${LAYERS[@]}"} \
  --out "$OUT/attention_layers_gpu.json"
step variant_steps "${LIMITS[3]}" "$PY" "$HERE/bench_train_step.py" --device gpu \
  ${FORCE[@]+"${FORCE[@]}"} --sizes "" ${VARIANTS[@]+"${VARIANTS[@]}"} \
  --out "$OUT/variant_steps_gpu.json"

{
  echo "# GPU benchmark tables"
  echo
  cat "$OUT/environment.txt" | sed 's/^/    /'
  for f in attention_kernels_gpu attention_layers_gpu; do
    if [[ -f "$OUT/$f.json" ]]; then
      echo; echo "## $f"; echo
      "$PY" "$HERE/bench_attention.py" --render "$OUT/$f.json"
    fi
  done
  for f in train_step_gpu variant_steps_gpu; do
    if [[ -f "$OUT/$f.json" ]]; then
      echo; echo "## $f"; echo
      "$PY" "$HERE/bench_train_step.py" --render "$OUT/$f.json"
    fi
  done
} > "$OUT/tables.md" 2>&1
echo "tables: $OUT/tables.md; failed steps: $failed"
exit "$failed"
