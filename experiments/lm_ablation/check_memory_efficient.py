"""`memory_efficient` = `standard` on the same parameters \
(experiments/lm_ablation/README.md §3.2, table L1).

Training `standard` and `memory_efficient` from the same seed gives the same numbers only as
long as float32 rounding differences are not amplified by training (see README.md: `standard`
against itself with ``grad_accum_steps=2`` drifts just as much). This script removes training
from the comparison: for every finished `standard` run of a sweep folder it evaluates the run's
final checkpoint once with `standard` (the xla kernel) and once with `memory_efficient` (the
chunked kernel), through ``attnlab train`` with ``checkpoint.init_from``, one step at lr 0 (the
parameters do not move), and tabulates the two validation bits per byte.

    python experiments/lm_ablation/check_memory_efficient.py runs/lm_ablation \
        --out experiments/lm_ablation/results/memory_efficient_check.md
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile


def final_bpb(workdir: str) -> float:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return next(r["bpb"] for r in reversed(rows) if r.get("final"))


def evaluate(run_dir: str, config: dict, name: str, scratch: str) -> float:
  layout = config["attention"]["layout"]
  workdir = os.path.join(scratch, f"{os.path.basename(run_dir)}-{name}")
  cmd = ["attnlab", "train", "--config",
         f"configs/lm.py:runlocal,attention={name},layout={layout}", "--workdir", workdir,
         f"--config.seed={config['seed']}", "--config.steps=1", "--config.optimizer.lr=0.0",
         f"--config.checkpoint.init_from={os.path.join(run_dir, 'checkpoints')}"]
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return final_bpb(workdir)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("sweep_dir")
  ap.add_argument("--out", default=None, help="also write the Markdown table here")
  args = ap.parse_args()
  runs = sorted(d for d in glob.glob(os.path.join(args.sweep_dir, "attention=standard,*"))
                if os.path.exists(os.path.join(d, "checkpoints")))
  if not runs:
    sys.exit(f"no finished `standard` runs with checkpoints under {args.sweep_dir}")
  lines = ["| run | trained (xla) | standard, re-evaluated | memory_efficient, same params "
           "| abs diff |", "|---|---|---|---|---|"]
  worst = 0.0
  with tempfile.TemporaryDirectory() as scratch:
    for run_dir in runs:
      with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)["config"]
      std = evaluate(run_dir, config, "standard", scratch)
      eff = evaluate(run_dir, config, "memory_efficient", scratch)
      worst = max(worst, abs(std - eff))
      lines.append(f"| `{os.path.basename(run_dir)}` | {final_bpb(run_dir):.7f} | {std:.7f} | "
                   f"{eff:.7f} | {abs(std - eff):.1e} |")
      print(lines[-1], flush=True)
  lines.append("")
  lines.append(f"Largest |difference|: {worst:.1e} bpb "
               f"({'equal' if worst < 5e-4 else 'NOT equal'} at the table's printed precision).")
  text = "\n".join(lines)
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
