"""EIT head pruning (experiments/head_pruning/README.md): Δ validation bpb against the number
of heads zeroed per layer, for trained LM runs.

  python experiments/head_pruning/prune_heads.py RUN_DIR [RUN_DIR ...] --out DIR

Each RUN_DIR is an `attnlab train` LM workdir with a checkpoint (e.g. the table-L1 sweep's
``attention=standard,layout=uniform,seed=0`` and ``attention=enhanced_interactive,...``).
Writes ``DIR/<run>.json`` (:func:`attnlab.train.head_pruning.pruning_curve`), ``DIR/table.md``
and ``DIR/head_pruning.png`` (one line per variant: mean Δbpb over seeds and orders, the band
the range over them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from attnlab.train import head_pruning, loop


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


def group_deltas(results: list[dict]) -> dict[str, np.ndarray]:
  """attention name -> Δbpb ``[runs * orders, k]`` (each run's curve minus its own base)."""
  groups: dict[str, list] = {}
  for r in results:
    deltas = np.asarray(r["bpb"]) - r["base_bpb"]  # [k, orders]
    groups.setdefault(r["attention"], []).append(deltas.T)
  return {name: np.concatenate(v, axis=0) for name, v in groups.items()}


def markdown(results: list[dict]) -> str:
  lines = ["| variant | runs | base bpb | " + " | ".join(
      f"Δbpb k={k}" for k in range(results[0]["num_heads"])) + " |"]
  lines.append("|---" * (3 + results[0]["num_heads"]) + "|")
  for name, d in group_deltas(results).items():
    runs = [r for r in results if r["attention"] == name]
    base = np.mean([r["base_bpb"] for r in runs])
    cells = [f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
             for m, lo, hi in zip(d.mean(0), d.min(0), d.max(0))]
    lines.append(f"| `{name}` | {len(runs)} | {base:.3f} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\nCells: mean over runs × orders [min, max].\n"


def plot(results: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, d in group_deltas(results).items():
    k = np.arange(d.shape[1])
    ax.plot(k, d.mean(0), marker="o", label=name)
    ax.fill_between(k, d.min(0), d.max(0), alpha=0.2)
  ax.set_xlabel("heads zeroed per layer (k)")
  ax.set_ylabel("Δ validation bpb")
  ax.set_xticks(range(results[0]["num_heads"]))
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", nargs="+", help="LM run directories with checkpoints")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--orders", type=int, default=5, help="random head orders (default 5)")
  p.add_argument("--seed", type=int, default=0, help="seed of the head orders")
  args = p.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  results = []
  for workdir in args.runs:
    r = prune_run(workdir, args.orders, args.seed)
    with open(os.path.join(args.out, f"{r['run']}.json"), "w") as f:
      json.dump(r, f, indent=1)
    print(f"{r['run']}: base {r['base_bpb']:.4f} bpb, {r['seconds']} s", flush=True)
    results.append(r)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(markdown(results))
  plot(results, os.path.join(args.out, "head_pruning.png"))
  print(markdown(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
