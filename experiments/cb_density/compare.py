"""Context Broadcasting and attention density (experiments/cb_density/README.md).

  python experiments/cb_density/compare.py RUNS_DIR --out DIR

RUNS_DIR holds table L1's runs (experiments/lm_ablation/l1_cpu.py), each with
``diagnostics.json`` from ``attnlab diagnose``. Three models are compared, Uniform layout,
matched by seed: `standard`; `standard` with CB at the end of every MLP branch
(``model.cb_position=mlp_out``, the paper's placement); the registered `uniform_broadcast`
layer (softmax heads plus the uniform map on the attention output). Writes ``DIR/table.md``
(per-layer normalised entropy of the softmax heads and validation bpb, mean and 95% interval
over seeds, and the paired entropy difference to `standard`) and ``DIR/cb_entropy.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from attnlab.train.report import paired, plots

MODELS = (("standard", lambda a, m: a["name"] == "standard" and m["cb_position"] == "none"),
          ("standard + CB (mlp_out)",
           lambda a, m: a["name"] == "standard" and m["cb_position"] == "mlp_out"),
          ("uniform_broadcast",
           lambda a, m: a["name"] == "uniform_broadcast" and a["options"]["softmax_heads"]))
"""(label, predicate on the run's config attention and model sections)."""


def load(runs_dir: str) -> dict[str, dict[int, dict]]:
  """label -> seed -> {"entropy": [per layer], "bpb": final bpb} for Uniform runs with
  diagnostics."""
  out: dict[str, dict[int, dict]] = {label: {} for label, _ in MODELS}
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name)
    try:
      with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)["config"]
      with open(os.path.join(path, "diagnostics.json")) as f:
        diag = json.load(f)
    except (OSError, ValueError):
      continue
    attn, model = config["attention"], config["model"]
    if attn["layout"] != "uniform":
      continue
    for label, match in MODELS:
      if match(attn, model):
        with open(os.path.join(path, "metrics.jsonl")) as f:
          final = [json.loads(line) for line in f if '"final": true' in line][-1]
        out[label][config["seed"]] = {
            "entropy": [layer["mean"]["entropy"] for layer in diag["layers"]],
            "bpb": final["bpb"]}
  return out


def cell(values) -> str:
  iv = paired.t_interval(values)
  if iv.n == 1:
    return f"{iv.mean:.3f} [—] (n=1)"
  return f"{iv.mean:.3f} [{iv.lo:.3f}, {iv.hi:.3f}] (n={iv.n})"


def markdown(data: dict) -> str:
  ref = data["standard"]
  layers = len(next(iter(ref.values()))["entropy"]) if ref else 0
  head = "| model | val bpb | " + " | ".join(f"entropy L{j + 1}" for j in range(layers)) + \
      " | Δ mean entropy vs standard (paired) |"
  lines = [head, "|---" * (3 + layers) + "|"]
  for label, runs in data.items():
    if not runs:
      lines.append(f"| {label} | no runs with diagnostics |" + " |" * (layers + 1))
      continue
    seeds = sorted(runs)
    cells = [cell([runs[s]["bpb"] for s in seeds])]
    cells += [cell([runs[s]["entropy"][j] for s in seeds]) for j in range(layers)]
    common = [s for s in seeds if s in ref]
    if label == "standard":
      cells.append("reference")
    elif common:
      diffs = [np.mean(runs[s]["entropy"]) - np.mean(ref[s]["entropy"]) for s in common]
      cells.append(cell(diffs))
    else:
      cells.append("no common seed")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + (
      "\n\nEntropy: attention entropy of the softmax heads divided by log t (1 = uniform), "
      "averaged over heads and over queries that see t ≥ 2 keys (`attnlab diagnose`); mean "
      "[95% t-interval] (n = seeds). Paired Δ: per seed, the mean over layers minus "
      "`standard`'s on the same seed.\n")


def plot(data: dict, path: str) -> None:
  """Entropy per layer, one line per model: the mean over seeds with its 95% t-interval shaded
  (:func:`attnlab.train.report.plots.band`)."""
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for label, runs in data.items():
    if not runs:
      continue
    ent = np.array([runs[s]["entropy"] for s in sorted(runs)])
    plots.band(ax, np.arange(1, ent.shape[1] + 1), ent, f"{label} (n={len(ent)})", marker="o")
  from matplotlib.ticker import MaxNLocator
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("layer")
  ax.set_ylabel("normalised attention entropy")
  ax.set_ylim(0, 1)
  ax.set_title(plots.BAND_TEXT, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  plots.save(fig, os.path.dirname(path) or ".", os.path.basename(path))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs_dir", help="directory of table L1's runs (with diagnostics.json)")
  p.add_argument("--out", required=True, help="output directory")
  args = p.parse_args(argv)
  data = load(args.runs_dir)
  os.makedirs(args.out, exist_ok=True)
  text = markdown(data)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(text)
  plot(data, os.path.join(args.out, "cb_entropy.png"))
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
