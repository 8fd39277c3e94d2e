"""The slurm launcher of :mod:`attnlab.train.sweep`: an sbatch array script, one task a run."""

from __future__ import annotations

import os
import shlex
from typing import Sequence

from attnlab.train import config_loading
from attnlab.train.sweep import Run


def _absolute_spec(spec: str) -> str:
  path, arg = config_loading.split_spec(spec)
  if os.path.exists(path):
    path = os.path.abspath(path)
  return f"{path}:{arg}" if arg else path


def slurm_script(runs: Sequence[Run], workdir: str, parallel: int = 0,
                 job_name: str = "attnlab-sweep", relaunch: Sequence[str] = ()) -> str:
  """An sbatch array script: task i runs ``attnlab train`` for ``runs[i]`` (done runs exit 0,
  except those in ``relaunch``, whose resumable settings changed: ``attnlab train`` decides).

  ``parallel`` > 0 caps the number of array tasks running at once (``--array=0-N%P``).
  """
  workdir = os.path.abspath(workdir)
  n = len(runs)
  throttle = f"%{parallel}" if parallel and parallel > 0 else ""
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --array=0-{max(n - 1, 0)}{throttle}",
      f"#SBATCH --output={workdir}/slurm/%A_%a.out",
      "# Add your cluster's resources here, e.g.:",
      "# #SBATCH --gres=gpu:1",
      "# #SBATCH --time=24:00:00",
      "set -euo pipefail",
      'ATTNLAB="${ATTNLAB:-attnlab}"',
      "RUNS=(",
  ]
  lines += [f"  {shlex.quote(r.name)}" for r in runs]
  lines += [")", "RELAUNCH=(" + " ".join("1" if r.name in relaunch else "0" for r in runs) + ")",
            "ARGS=("]
  for r in runs:
    args = Run(r.name, _absolute_spec(r.spec), r.overrides).train_args(workdir)
    lines.append("  " + shlex.quote(shlex.join(args)))
  lines += [
      ")",
      'NAME="${RUNS[$SLURM_ARRAY_TASK_ID]}"',
      f'RUN_DIR={shlex.quote(workdir)}/"$NAME"',
      'if [ "${RELAUNCH[$SLURM_ARRAY_TASK_ID]}" = 0 ] && '
      'grep -qs \'"final": true\' "$RUN_DIR/metrics.jsonl"; then',
      '  echo "$NAME already finished"; exit 0',
      "fi",
      'mkdir -p "$RUN_DIR"',
      'eval "$ATTNLAB ${ARGS[$SLURM_ARRAY_TASK_ID]}"',
      "",
  ]
  return "\n".join(lines)
