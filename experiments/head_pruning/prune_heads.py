"""EIT head pruning (experiments/head_pruning/README.md): Δ validation bpb against the number
of heads zeroed per layer, for trained LM runs.

  python experiments/head_pruning/prune_heads.py RUN_DIR [RUN_DIR ...] --out DIR

Each RUN_DIR is an `attnlab train` LM workdir with a checkpoint (e.g. the table-L1 sweep's
``attention=standard,layout=uniform,seed=0`` and ``attention=enhanced_interactive,...``).
Writes ``DIR/<run>.json`` (:func:`attnlab.train.head_pruning.pruning_curve`), then
``DIR/table.md`` and ``DIR/head_pruning.png`` from every curve in DIR (those of earlier
invocations included, so runs can be pruned as they land; with no RUN_DIR only the table and
plot are rebuilt): per variant the mean Δbpb over seeds with its 95% interval, and each
variant's seed-paired difference to `standard`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from attnlab.train import head_pruning, loop
from attnlab.train.report import paired, plots


def prune_run(workdir: str, orders: int, seed: int) -> dict:
  run, model, step = loop.load_trained(workdir, expected_task="lm")
  t0 = time.time()
  result = head_pruning.pruning_curve(model, head_pruning.lm_evaluator(run, workdir),
                                      orders=orders, seed=seed)
  result.update(run=os.path.basename(os.path.normpath(workdir)), step=step,
                attention=run.config_dict["attention"]["name"],
                layout=run.config_dict["attention"]["layout"], seed=run.seed,
                seconds=round(time.time() - t0, 1))
  return result


def per_seed_deltas(results: list[dict]) -> dict[str, dict[int, np.ndarray]]:
  """attention name -> seed -> Δbpb ``[k]``: the run's curve minus its own base, averaged over
  its head orders."""
  groups: dict[str, dict[int, np.ndarray]] = {}
  for r in results:
    deltas = np.asarray(r["bpb"]) - r["base_bpb"]  # [k, orders]
    groups.setdefault(r["attention"], {})[int(r["seed"])] = deltas.mean(axis=1)
  return groups


def order_range(results: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
  """(min, max) Δbpb ``[k]`` over every run and head order of ``name``."""
  d = np.concatenate([(np.asarray(r["bpb"]) - r["base_bpb"]).T for r in results
                      if r["attention"] == name])
  return d.min(0), d.max(0)


def markdown(results: list[dict]) -> str:
  """Per variant and k: mean Δbpb over seeds (each seed's mean over its head orders) with the
  95% t-interval over seeds, and the range over all runs and orders; then, for every variant
  other than `standard`, its seed-paired difference to `standard`."""
  m = results[0]["num_heads"]
  groups = per_seed_deltas(results)
  lines = ["| variant | seeds | base bpb | " + " | ".join(f"Δbpb k={k}" for k in range(m)) + " |",
           "|---" * (3 + m) + "|"]
  for name, by_seed in groups.items():
    base = np.mean([r["base_bpb"] for r in results if r["attention"] == name])
    d = np.stack(list(by_seed.values()))
    cells = [paired.interval_cell(paired.t_interval(d[:, k]), signed=True).rsplit(" (n=", 1)[0]
             for k in range(m)]
    seeds = ",".join(str(x) for x in sorted(by_seed))
    lines.append(f"| `{name}` | {seeds} | {base:.3f} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("| variant | range over runs × orders | " + " | ".join(
      f"k={k}" for k in range(m)) + " |")
  lines.append("|---" * (2 + m) + "|")
  for name in groups:
    lo, hi = order_range(results, name)
    lines.append(f"| `{name}` | min, max | " + " | ".join(
        f"{a:+.3f}, {b:+.3f}" for a, b in zip(lo, hi)) + " |")
  if "standard" in groups:
    lines.append("")
    lines.append("| paired by seed | seeds | " + " | ".join(f"k={k}" for k in range(m)) + " |")
    lines.append("|---" * (2 + m) + "|")
    for name, by_seed in groups.items():
      if name == "standard":
        continue
      common = sorted(set(by_seed) & set(groups["standard"]))
      if not common:
        continue
      diff = np.stack([by_seed[s] - groups["standard"][s] for s in common])
      cells = [paired.interval_cell(paired.t_interval(diff[:, k]), signed=True).rsplit(
          " (n=", 1)[0] for k in range(m)]
      lines.append(f"| `{name}` − `standard` | {','.join(map(str, common))} | "
                   + " | ".join(cells) + " |")
  return "\n".join(lines) + (
      "\n\nFirst table: mean over seeds of each run's mean over its head orders, with the 95% "
      "t-interval over seeds ([—]: one seed). Last table: the same for the seed-paired "
      "difference of Δbpb to `standard`; an interval that excludes 0 decides the sign.\n")


def plot(results: list[dict], path: str) -> None:
  """Δbpb against k, one line per variant: mean over seeds with the 95% interval shaded."""
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, by_seed in per_seed_deltas(results).items():
    d = np.stack(list(by_seed.values()))
    plots.band(ax, np.arange(d.shape[1]), d, f"{name} (n={len(d)})", marker="o")
  ax.set_xlabel("heads zeroed per layer (k)")
  ax.set_ylabel("Δ validation bpb")
  ax.set_xticks(range(results[0]["num_heads"]))
  ax.set_title(plots.BAND_TEXT, fontsize=9)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  plots.save(fig, os.path.dirname(path) or ".", os.path.basename(path))


def load_results(out: str) -> list[dict]:
  """Every pruning curve already in ``out`` (one ``<run>.json`` per run)."""
  results = []
  for name in sorted(os.listdir(out)):
    if name.endswith(".json"):
      with open(os.path.join(out, name)) as f:
        r = json.load(f)
      if isinstance(r, dict) and {"bpb", "base_bpb", "attention", "seed"} <= set(r):
        results.append(r)
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="*", help="LM run directories with checkpoints (none: only "
                 "rebuild the table and plot from the curves already in --out)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--orders", type=int, default=5, help="random head orders (default 5)")
  p.add_argument("--seed", type=int, default=0, help="seed of the head orders")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for workdir in args.runs:
    r = prune_run(workdir, args.orders, args.seed)
    with open(os.path.join(args.out, f"{r['run']}.json"), "w") as f:
      json.dump(r, f, indent=1)
    print(f"{r['run']}: base {r['base_bpb']:.4f} bpb, {r['seconds']} s", flush=True)
  results = load_results(args.out)
  if not results:
    p.error(f"no run given and no pruning curve in {args.out!r}")
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(markdown(results))
  plot(results, os.path.join(args.out, "head_pruning.png"))
  print(markdown(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
