"""Table A6 of experiments/icl_regression/README.md from the `attnlab ood` JSONs of several runs:
per shift and prompt length, the model's mean test MSE over seeds with a 95% t-interval, per
head count, beside the baselines (the same prompts for every run, so one number each).

    python experiments/icl_regression/a6_table.py experiments/icl_regression/results_a6/*/ood.json \
        --out experiments/icl_regression/results_a6/table_a6.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from scipy import stats

from attnlab.train.icl_ood import BASELINES, LABELS


def mean_ci(values) -> tuple[float, float, float]:
  """Mean and the 95% t-interval half-width over seeds (0 for one seed)."""
  v = np.asarray(values, np.float64)
  if len(v) < 2:
    return float(v.mean()), float("nan"), len(v)
  half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
  return float(v.mean()), float(half), len(v)


def table(docs: list[dict]) -> str:
  by_heads = defaultdict(list)
  for doc in docs:
    by_heads[doc["num_heads"]].append(doc)
  first = docs[0]
  for doc in docs[1:]:  # the baselines are only one row if every run saw the same prompts
    if (doc["prompt_seed"], doc["n_prompts"]) != (first["prompt_seed"], first["n_prompts"]):
      raise SystemExit("runs were evaluated on different prompts (seed or count differ)")
  shifts, lengths = first["shifts"], [str(l) for l in first["lengths"]]
  lines = ["| shift | predictor | " + " | ".join(f"L = {l}" for l in lengths) + " |",
           "|---|---|" + "---|" * len(lengths)]
  for shift in shifts:
    for heads in sorted(by_heads):
      runs = by_heads[heads]
      cells = []
      for l in lengths:
        m, half, n = mean_ci([d["mse"]["model"][shift][l] for d in runs])
        cells.append(f"{m:.3f} ± {half:.3f}" if n > 1 else f"{m:.3f}")
      seeds = ",".join(str(d["seed"]) for d in sorted(runs, key=lambda d: d["seed"]))
      lines.append(f"| `{shift}` | **H = {heads}** (seeds {seeds}) | " + " | ".join(cells) + " |")
    for name in BASELINES:
      cells = [f"{first['mse'][name][shift][l]:.3f}" for l in lengths]
      lines.append(f"| `{shift}` | {LABELS[name]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("jsons", nargs="+", help="`attnlab ood` JSON outputs")
  ap.add_argument("--out", default=None, help="also write the Markdown table here")
  args = ap.parse_args()
  docs = []
  for path in args.jsons:
    with open(path) as f:
      docs.append(json.load(f))
  text = table(docs)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
