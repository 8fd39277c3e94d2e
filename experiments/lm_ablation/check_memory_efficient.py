"""`memory_efficient` = `standard` on the same parameters \
(experiments/lm_ablation/README.md §3.2, table L1).

Training `standard` and `memory_efficient` from the same seed gives the same numbers only as
long as float32 rounding differences are not amplified by training (see README.md: `standard`
against itself with ``grad_accum_steps=2`` drifts just as much). This script removes training
from the comparison: for every finished `standard` or `memory_efficient` run of a sweep folder
that still has its checkpoints, it evaluates the run's final checkpoint once with `standard`
(the xla kernel) and once with `memory_efficient` (the chunked kernel), through ``attnlab
train`` with ``checkpoint.init_from`` and ``steps=0`` (restore, evaluate, no update), and
tabulates the two validation bits per byte. ``--out X.md`` writes the table and, beside it,
``memory_efficient_check.json``, which ``attnlab report`` turns into the acceptance line
"`memory_efficient` = `standard` on the same parameters". With ``--keep``, the rows already in
that JSON for runs not evaluated now (their checkpoints gone, e.g. from an earlier sitting of a
long sweep) are kept in both files, even when no run has a checkpoint left; the spec must be the
same.

    # the runlocal tables (results/)
    python experiments/lm_ablation/check_memory_efficient.py runs/lm_ablation \\
        --out experiments/lm_ablation/results/memory_efficient_check.md
    # the cpu tables (results_cpu/)
    python experiments/lm_ablation/check_memory_efficient.py runs/lm_cpu \\
        --spec 'experiments/lm_ablation/l1_cpu.py:attention={attention},layout={layout}' \\
        --out experiments/lm_ablation/results_cpu/memory_efficient_check.md --keep
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from attnlab.train.metrics import read_jsonl
from attnlab.train.report.tables import SAME_PARAMETER_CHECK, SAME_PARAMETER_TOL

KERNELS = ("standard", "memory_efficient")
RUN_NAME = re.compile(r"attention=(standard|memory_efficient),layout=(uniform|hybrid),seed=\d+")
"""Plain runs only: a run with further overrides (e.g. CB's ``model.cb_position``) is not what
``--spec`` rebuilds."""


def final_bpb(workdir: str) -> float:
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return next(r["bpb"] for r in reversed(rows) if r.get("final"))


def evaluate(run_dir: str, config: dict, kernel: str, spec: str, scratch: str) -> float:
  """Validation bpb of ``run_dir``'s latest checkpoint with every ``kernel`` layer."""
  layout = config["attention"]["layout"]
  workdir = os.path.join(scratch, f"{os.path.basename(run_dir)}-{kernel}")
  cmd = [sys.executable, "-m", "attnlab.train.cli", "train",
         "--config", spec.format(attention=kernel, layout=layout),
         "--workdir", workdir, f"--config.seed={config['seed']}", "--config.steps=0",
         f"--config.checkpoint.init_from={os.path.join(run_dir, 'checkpoints')}"]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return final_bpb(workdir)


def table_row(row: dict) -> str:
  diff = abs(row["standard"] - row["memory_efficient"])
  return (f"| `{row['run']}` | {row['trained']:.7f} | {row['standard']:.7f} | "
          f"{row['memory_efficient']:.7f} | {diff:.1e} |")


def earlier_rows(out: str, spec: str) -> list[dict]:
  """The rows of the JSON beside ``out`` (none if absent); an error if it used another spec."""
  path = os.path.join(os.path.dirname(out) or ".", SAME_PARAMETER_CHECK)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    earlier = json.load(f)
  if earlier["spec"] != spec:
    sys.exit(f"--keep: {path} was made with --spec {earlier['spec']!r}, not {spec!r}")
  return earlier["runs"]


def has_checkpoint(run_dir: str) -> bool:
  path = os.path.join(run_dir, "checkpoints")
  return os.path.isdir(path) and bool(os.listdir(path))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("sweep_dir")
  ap.add_argument("--spec", default="configs/lm.py:runlocal,attention={attention},layout={layout}",
                  help="the sweep's config with {attention} and {layout} left open "
                       "(default: the runlocal tables')")
  ap.add_argument("--out", default=None,
                  help="also write the Markdown table here, and memory_efficient_check.json "
                       "beside it")
  ap.add_argument("--keep", action="store_true",
                  help="keep the rows of --out's JSON for runs not evaluated now (same spec)")
  args = ap.parse_args()
  if args.keep and not args.out:
    sys.exit("--keep needs --out (the file whose earlier rows are kept)")
  kept = earlier_rows(args.out, args.spec) if args.keep else []
  runs = sorted(d for d in glob.glob(os.path.join(args.sweep_dir, "attention=*"))
                if RUN_NAME.fullmatch(os.path.basename(d)) and has_checkpoint(d))
  if not runs and not kept:
    sys.exit(f"no `standard` or `memory_efficient` runs with checkpoints under {args.sweep_dir}")
  if not runs:
    print(f"no checkpoints under {args.sweep_dir}; writing the {len(kept)} kept rows again",
          file=sys.stderr)
  rows = []
  with tempfile.TemporaryDirectory() as scratch:
    for run_dir in runs:
      with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)["config"]
      bpb = {k: evaluate(run_dir, config, k, args.spec, scratch) for k in KERNELS}
      rows.append({"run": os.path.basename(run_dir), "trained": final_bpb(run_dir), **bpb})
      print(table_row(rows[-1]), flush=True)
  evaluated = {r["run"] for r in rows}
  rows = sorted(rows + [r for r in kept if r["run"] not in evaluated], key=lambda r: r["run"])
  lines = ["| run | trained | standard, same params | memory_efficient, same params "
           "| abs diff |", "|---|---|---|---|---|"] + [table_row(r) for r in rows]
  worst = max(abs(r["standard"] - r["memory_efficient"]) for r in rows)
  lines += ["", f"Largest |difference|: {worst:.1e} bpb "
                f"({'equal' if worst < SAME_PARAMETER_TOL else 'NOT equal'} at the table's printed "
                "precision)."]
  text = "\n".join(lines)
  print(text)
  if args.out:
    directory = os.path.dirname(args.out) or "."
    os.makedirs(directory, exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")
    with open(os.path.join(directory, SAME_PARAMETER_CHECK), "w") as f:
      json.dump({"spec": args.spec, "runs": rows}, f, indent=1)


if __name__ == "__main__":
  main()
