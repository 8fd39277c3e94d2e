"""Copy finished runs' records (never checkpoints) between a sweep's workdir and a results folder.

  python experiments/collect.py collect RUNS_DIR RESULTS_DIR   # commit RESULTS_DIR afterwards
  python experiments/collect.py restore RESULTS_DIR RUNS_DIR   # on a fresh machine, before a sweep

``collect`` copies, for every run of RUNS_DIR that is done (its ``metrics.jsonl`` has the
``"final": true`` row, as ``attnlab sweep`` decides), the files a report and a README need:
``config.json``, ``metrics.jsonl`` and the analysis files next to them (:data:`RECORDS`,
``*.png``), skipping runs whose copy is already identical. ``restore`` copies the same files
back into an empty workdir, so that ``attnlab sweep`` on it skips the committed runs (it
compares their config.json with the sweep's) and trains only the rest. Checkpoints stay
behind: analyses that need a trained model (``attnlab ood``, ``attnlab diagnose``, head pruning)
run before a machine is given up, and their output files are collected with the run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys

from attnlab.train.sweep import is_done

RECORDS = ("config.json", "metrics.jsonl", "window_bpb.json", "diagnostics.json", "ood.json",
           "ood.md", "heads.json")
"""The files of a run directory that are its record (plus every ``*.png``)."""


def record_files(run_dir: str) -> list[str]:
  """The names of ``run_dir``'s record files that exist."""
  names = sorted(os.listdir(run_dir))
  return [n for n in names if n in RECORDS or n.endswith(".png")]


def copy_runs(src: str, dst: str) -> list[str]:
  """Copy the record of every finished run of ``src`` into ``dst/<run>/``; returns the runs
  whose record changed (new or different files)."""
  changed = []
  for name in sorted(os.listdir(src)):
    run = os.path.join(src, name)
    if not os.path.isdir(run) or not is_done(run):
      continue
    out = os.path.join(dst, name)
    new = False
    for f in record_files(run):
      target = os.path.join(out, f)
      if os.path.exists(target) and filecmp.cmp(os.path.join(run, f), target, shallow=False):
        continue
      os.makedirs(out, exist_ok=True)
      shutil.copy2(os.path.join(run, f), target)
      new = True
    if new:
      changed.append(name)
  return changed


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("action", choices=("collect", "restore"))
  p.add_argument("src", help="collect: the sweep's workdir; restore: the results folder")
  p.add_argument("dst", help="collect: the results folder; restore: the sweep's workdir")
  args = p.parse_args(argv)
  if not os.path.isdir(args.src):
    p.error(f"{args.src!r} is not a directory")
  for name in copy_runs(args.src, args.dst):
    print(f"{args.action}: {name}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
