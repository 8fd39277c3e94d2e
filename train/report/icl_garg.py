"""Garg et al. in-context linear functions (experiments/icl_garg/README.md §2): table B1 with
least squares, 3-NN and averaging on the same prompts; normalised error against k."""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from attnlab.train.report import icl_plateau
from attnlab.train.report import ood as ood_tables
from attnlab.train.report import plots as plotting
from attnlab.train.report import testsets
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import (
    Group, all_final_keys, ci_cell, fmt, group_runs, markdown_table, memory_efficient_checks,
    metric_index)


GARG_LABELS = {"least_squares": "least squares", "3nn": "3-nearest neighbours",
               "averaging": "averaging"}


def icl_garg_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table B1 (normalised error at k = d/2, d−1, d, 2d) with baselines per test set; table B2
  for runs with ``ood.json``; nerr-vs-k plot."""
  groups = group_runs(runs)
  groups, ids, warnings = testsets.split_by_test_set(groups)
  keys = all_final_keys(groups)
  curve = metric_index(keys, r"nerr@k=(\d+)")
  d = int(groups[0].config.get("data.d", 0)) if groups else 0
  ks = [k for k in dict.fromkeys((d // 2, d - 1, d, 2 * d)) if k in curve]
  header = ["setting", "left the plateau"] + [f"k={k}" for k in ks]
  modes = [icl_plateau.modes(g) for g in groups]
  rows = [[g.label, m.fraction() if m else "—"]
          + [icl_plateau.cell(g, curve[k], m) for k in ks] for g, m in zip(groups, modes)]
  base = {name: metric_index(keys, rf"{re.escape(name)}_nerr@k=(\d+)") for name in GARG_LABELS}
  ref_sets = testsets.reference_row_sets(groups, ids)
  ref_runs = ref_sets[0][1]
  for suffix, rs in ref_sets:
    for name, idx in base.items():
      if idx:
        rows.append([f"*{GARG_LABELS[name]}* (computed: same test prompts){suffix}", ""]
                    + [f"*{fmt(testsets.reference_value(rs, idx[k]))}*" if k in idx else "—"
                       for k in ks])
  checks = memory_efficient_checks(groups, list(curve.values()))
  ls = base.get("least_squares", {})
  for g, m in zip(groups, modes):
    if 2 * d in curve and 2 * d in ls and g.mean(curve[2 * d]) is not None:
      value = (icl_plateau.cell(g, curve[2 * d], m) if m and m.bimodal
               else fmt(g.mean(curve[2 * d])))
      checks.append(f"- {g.label}: normalised error at k = 2d is {value} (least squares "
                    f"{fmt(testsets.reference_value(g.runs, ls[2 * d]))}; no acceptance band)")
  dims = sorted({g.config.get("data.d") for g in groups})
  text = ["## Garg et al. in-context linear functions "
          "(experiments/icl_garg/README.md §2, table B1)", ""]
  text += (warnings + [""]) if warnings else []
  text += [markdown_table(header, rows), "",
          f"Table B1. Normalised squared error (squared error / d, d = "
          f"{', '.join(str(x) for x in dims)}; the zero predictor scores 1) of the prediction "
          "of y_k from k in-context examples on fixed test prompts, mean ± 95% t-interval "
          "half-width over seeds (n); where some seeds left the plateau and others did not, "
          f"each mode's (left / plateau; {icl_plateau.GARG_RULE}). "
          + testsets.note(groups, ids) + " Published "
          "headline (Garg et al., 12 layers, 500k steps): the trained transformer's error is "
          "close to least squares'. Acceptance: `memory_efficient` = `standard`."]
  if checks:
    text += [""] + checks
  b2 = ood_tables.b2_section(runs)
  if b2:
    text += ["", b2]
  plots = [p for p in (_garg_plot(groups, curve, base, d, directory, ref_runs),
                       plotting.train_loss_plot(groups, directory, "icl_garg",
                                                _curriculum_spans(groups)),
                       ood_tables.b2_plot(runs, directory))
           if p]
  return "\n".join(text), plots


def _curriculum_spans(groups: Sequence[Group]) -> list[tuple[float, float]]:
  if not groups:
    return []
  c = groups[0].config
  dims, points = c.get("curriculum.dims"), c.get("curriculum.points")
  if not dims or not points or (dims[0] == dims[1] and points[0] == points[1]):
    return []
  interval = int(dims[3])
  end = max(interval * math.ceil((dims[1] - dims[0]) / dims[2]),
            int(points[3]) * math.ceil((points[1] - points[0]) / points[2]))
  return [(s, min(s + interval, end)) for s in range(0, end, interval)]


def _garg_plot(groups, curve: dict, base: dict, d: int, directory: str,
               ref_runs) -> str | None:
  if not curve or not groups:
    return None
  plt = plotting.pyplot()
  n = len(groups)
  cols = min(n, 3)
  rows_n = math.ceil(n / cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False,
                           sharey=True)
  ks = list(curve)
  for ax, g in zip(axes.flat, groups):
    m = icl_plateau.modes(g)
    if m is not None and m.bimodal:
      for runs, text, color in ((m.left, "left the plateau", "black"),
                                (m.plateau, "plateau", "tab:red")):
        part = Group(g.config, runs, g.label)
        plotting.band(ax, ks, plotting.curve(part, ks, lambda k: curve[k]),
                      f"model, {text} (n={len(runs)})", color=color)
    else:
      plotting.band(ax, ks, plotting.curve(g, ks, lambda k: curve[k]), "model", color="black")
    if len(g.runs) == 1:  # one seed: the 90% bootstrap band over test prompts, when logged
      lo, hi = (plotting.curve(g, ks, lambda k: f"nerr_{p}@k={k}")[0] for p in ("p05", "p95"))
      if np.isfinite(lo).all() and np.isfinite(hi).all():
        ax.fill_between(ks, lo, hi, color="black", alpha=0.15, linewidth=0,
                        label="90% bootstrap band (prompts)")
    present = [(name, idx) for name, idx in base.items() if idx]
    for (name, idx), style in zip(present, plotting.REFERENCE_STYLES):
      x = [k for k in ks if k in idx]
      ax.plot(x, [testsets.reference_value(ref_runs, idx[k]) for k in x],
              label=GARG_LABELS[name], **style)
    ax.axhline(1.0, color="0.8", linestyle="-", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 1.25)
    ax.set_xlim(0, max(ks))
    ax.set_xlabel("in-context examples k")
    ax.set_ylabel("normalised squared error")
    ax.set_title(g.label.replace("`", ""), fontsize=9)
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  fig.suptitle(f"Garg et al. linear regression, d = {d} (band: 95% t-interval over seeds, or the "
               "90% bootstrap band over test prompts for one seed)", fontsize=10)
  return plotting.save(fig, directory, "icl_garg_nerr_vs_k.png")
