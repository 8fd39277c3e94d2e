#!/usr/bin/env bash
# Tables L1 and L2 at the spec size (l1_spec.py: 78 runs), their attention diagnostics and the
# report, in one command, on a machine with an accelerator:
#
#   experiments/lm_ablation/run_l1_gpu.sh WORKDIR [extra attnlab sweep arguments]
#   experiments/lm_ablation/run_l1_gpu.sh WORKDIR --smoke   # 3 steps of seed 0's two `standard` runs (with and without CB), any backend
#
# The sweep resumes where it stopped (rerun the same command); diagnostics are computed once per
# finished run (a run that has diagnostics.json is skipped). Writes WORKDIR/<run>/ (config.json,
# metrics.jsonl, window_bpb.json, diagnostics*), WORKDIR/report.md and the report's PNGs.
# Exit status: that of the sweep, else the number of runs whose diagnostics failed.
# Environment: PYTHON, the interpreter with attnlab installed (default python).
set -uo pipefail

WORKDIR=${1:?usage: run_l1_gpu.sh WORKDIR [--smoke | extra attnlab sweep arguments]}
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
attnlab() { "$PY" -m attnlab.train.cli "$@"; }
EXTRA=("$@")
if [[ "${1:-}" == "--smoke" ]]; then
  EXTRA=(--only 'attention=standard,layout=uniform,seed=0' --config.steps=3 --config.eval_every=3
         --config.eval.windows=8)
else
  "$PY" -c "import jax, sys; b = jax.default_backend(); print('backend:', b, jax.devices());
sys.exit(0 if b in ('gpu', 'tpu') else 'no accelerator: pass --smoke to try the script on CPU')" \
    || exit 1
fi

attnlab sweep --config experiments/lm_ablation/l1_spec.py --workdir "$WORKDIR" --parallel 1 \
  "${EXTRA[@]}"
status=$?
if (( status != 0 )); then
  echo "sweep exit status $status; rerun the same command to resume" >&2
  exit "$status"
fi

failed=0
for run in "$WORKDIR"/*/; do
  [[ -f "$run/config.json" && ! -f "$run/diagnostics.json" ]] || continue
  grep -q '"final": true' "$run/metrics.jsonl" 2>/dev/null || continue
  attnlab diagnose "$run" || { echo "diagnostics failed: $run" >&2; failed=$((failed + 1)); }
done
attnlab report "$WORKDIR" > /dev/null && echo "report: $WORKDIR/report.md"
exit "$failed"
