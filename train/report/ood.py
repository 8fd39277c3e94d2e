"""Tables A6 and B2: out-of-distribution results (``attnlab ood``) of the runs that have them.

``attnlab ood`` writes ``<run>/ood.json`` (train/icl_ood.py for icl_regression, table A6 of
experiments/icl_regression/README.md; train/garg_ood.py for icl_garg, table B2 of
experiments/icl_garg/README.md). Rows are (shift, setting) with the model's mean ± 95%
t-interval over seeds (n), or, for a setting whose seeds split between the single-head plateau
and leaving it (:mod:`.icl_plateau`), each mode's mean with its n; then the baselines, one number
each: every run must have been evaluated on the same prompts (fingerprint ``prompts_sha256``, or
seed, count and data parameters for older files). Runs on other prompts are left out of the
table and named in a bold warning.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from attnlab.train.report import icl_paired, icl_plateau, paired
from attnlab.train.report import plots as plotting
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import Group, ci_cell, group_runs, markdown_table
from attnlab.train.report.testsets import run_name


PROMPT_FIELDS = ("prompts_sha256", "prompt_seed", "n_prompts", "noise_var", "d", "n_points",
                 "shifts")
"""What must agree between two runs' ``ood.json`` for their baselines to be one row (a field
missing from an older file is not compared)."""


def _same_prompts(a: dict, b: dict) -> bool:
  return all(json.dumps(a[k], sort_keys=True) == json.dumps(b[k], sort_keys=True)
             for k in PROMPT_FIELDS if a.get(k) is not None and b.get(k) is not None)


def split_by_prompts(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], list[str]]:
  """``(runs on the most common prompt set, warning lines naming the others)``."""
  clusters: list[list[RunRecord]] = []
  for r in runs:
    for c in clusters:
      if _same_prompts(c[0].ood, r.ood):
        c.append(r)
        break
    else:
      clusters.append([r])
  clusters.sort(key=lambda c: -len(c))
  warnings = [f"- **LEFT OUT: evaluated on other prompts** than the "
              f"{len(clusters[0])} runs of this table "
              f"(prompt seed {c[0].ood.get('prompt_seed')}, {c[0].ood.get('n_prompts')} "
              f"prompts, fingerprint {c[0].ood.get('prompts_sha256', 'none')}): "
              + ", ".join(run_name(r) for r in c) for c in clusters[1:]]
  return (clusters[0] if clusters else []), warnings


def _value(run: RunRecord, metric: str, name: str, shift: str, col) -> float | None:
  v = run.ood.get(metric, {}).get(name, {}).get(shift, {}).get(str(col))
  return None if v is None else float(v)


def _nan(v: float | None) -> float:
  """NaN for a missing value, and for zeros and round-off (below 1e-9: the exact baselines on
  noise-free prompts), which a log axis cannot show."""
  return np.nan if v is None or v < 1e-9 else v


def _cell(group: Group, metric: str, shift: str, col, modes) -> str:
  def vals(runs):
    return [v for v in (_value(r, metric, "model", shift, col) for r in runs) if v is not None]
  if modes is None or not modes.bimodal or not vals(group.runs):
    return ci_cell(vals(group.runs))
  return f"left {ci_cell(vals(modes.left))} / plateau {ci_cell(vals(modes.plateau))}"


def ood_table(runs: Sequence[RunRecord], *, metric: str, columns: Sequence, column_name: str,
              baselines: Sequence[str], labels: dict, default_keys=("attention.name",)
              ) -> tuple[str, list[str]]:
  """``(Markdown table, warnings)`` over the runs' ``ood.json``: rows (shift, setting) and
  (shift, baseline), columns ``columns`` (prompt lengths L or in-context examples k)."""
  kept, warnings = split_by_prompts(runs)
  groups = group_runs(kept, default_keys=default_keys)
  first = kept[0].ood
  header = ["shift", "predictor"] + [f"{column_name} = {c}" for c in columns]
  rows = []
  for shift in first.get("shifts", []):
    for g in groups:
      modes = icl_plateau.modes(g)
      seeds = ",".join(str(r.config.get("seed")) for r in
                       sorted(g.runs, key=lambda r: str(r.config.get("seed"))))
      left = f"; left the plateau: {modes.fraction()}" if modes and modes.bimodal else ""
      rows.append([f"`{shift}`", f"**{g.label}** (seeds {seeds}{left})"]
                  + [_cell(g, metric, shift, c, modes) for c in columns])
    for name in baselines:
      vals = [_value(kept[0], metric, name, shift, c) for c in columns]
      rows.append([f"`{shift}`", labels.get(name, name)]
                  + ["—" if v is None else f"{v:.3f}" for v in vals])
  return markdown_table(header, rows), warnings


def paired_ood_table(runs: Sequence[RunRecord], *, metric: str, columns: Sequence,
                     column_name: str, train_column, default_keys) -> str | None:
  """Markdown table: per (shift, variant group with a `standard` group of the same setting),
  the seed-paired difference ``variant − standard`` of the model's ``metric`` at every column,
  and its reading at ``train_column``; None when no group pairs. Runs on other prompts than
  the table's are left out as in :func:`ood_table`."""
  kept, _ = split_by_prompts(runs)
  pairs = icl_paired.with_standard(group_runs(kept, default_keys=default_keys))
  if not pairs:
    return None
  rows = []
  for shift in kept[0].ood.get("shifts", []):
    for g, ref in pairs:
      cells = [icl_paired.seed_difference(
          g.runs, ref.runs, lambda r, c=c: _value(r, metric, "model", shift, c))
          for c in columns]
      at_train = dict(zip(columns, cells)).get(train_column)
      rows.append([f"`{shift}`", g.label] + [paired.interval_cell(c, signed=True) for c in cells]
                  + [icl_paired.reading(at_train)])
  header = (["shift", "variant − `standard`"] + [f"Δ {column_name} = {c}" for c in columns]
            + [f"at {column_name} = {train_column}"])
  return markdown_table(header, rows)


def a6_section(runs: Sequence[RunRecord]) -> str | None:
  """Table A6 for icl_regression runs with ``ood.json``."""
  from attnlab.train import icl_ood
  runs = [r for r in runs if r.ood and r.ood.get("task", "icl_regression") == "icl_regression"]
  if not runs:
    return None
  lengths = runs[0].ood.get("lengths", list(icl_ood.LENGTHS))
  table, warnings = ood_table(runs, metric="mse", columns=lengths, column_name="L",
                              baselines=runs[0].ood.get("baselines", icl_ood.BASELINES),
                              labels=icl_ood.LABELS,
                              default_keys=("attention.name", "model.num_heads"))
  doc = runs[0].ood
  return "\n".join(
      ["## Out-of-distribution prompts (experiments/icl_regression/README.md, table A6)", "",
       table, "",
       f"Table A6 (`attnlab ood`, train/icl_ood.py). Test MSE (noisy query label included) on "
       f"{doc.get('n_prompts')} prompts per shift (prompt seed {doc.get('prompt_seed')}, the "
       "same prompts for every run), mean ± 95% t-interval half-width over seeds (n); a "
       "setting whose seeds split between the single-head plateau and leaving it gives each "
       f"mode ({icl_plateau.RULE}). Baselines: one number each (same prompts)."]
      + ([""] + warnings if warnings else [])
      + _a6_paired(runs, lengths))


def a6_plot(runs: Sequence[RunRecord], directory: str) -> str | None:
  """Table A6 as a plot (:func:`ood_plot`), for icl_regression runs with ``ood.json``."""
  from attnlab.train import icl_ood
  runs = [r for r in runs if r.ood and r.ood.get("task", "icl_regression") == "icl_regression"]
  if not runs:
    return None
  return ood_plot(runs, directory, name="icl_regression_ood_mse_vs_L", metric="mse",
                  columns=runs[0].ood.get("lengths", list(icl_ood.LENGTHS)), column_name="L",
                  baselines=runs[0].ood.get("baselines", icl_ood.BASELINES),
                  labels=icl_ood.LABELS, ylabel="test MSE",
                  default_keys=("attention.name", "model.num_heads"))


def b2_plot(runs: Sequence[RunRecord], directory: str) -> str | None:
  """Table B2 as a plot (:func:`ood_plot`) over every k, for icl_garg runs with ``ood.json``."""
  from attnlab.train import garg_ood
  runs = [r for r in runs if r.ood and r.ood.get("task") == "icl_garg"]
  if not runs:
    return None
  return ood_plot(runs, directory, name="icl_garg_ood_nerr_vs_k", metric="nerr",
                  columns=runs[0].ood.get("ks", []), column_name="k",
                  baselines=runs[0].ood.get("baselines", garg_ood.BASELINES),
                  labels=garg_ood.LABELS, ylabel="normalised squared error", log_x=False)


def _a6_paired(runs: Sequence[RunRecord], lengths: Sequence) -> list[str]:
  train_len = int(runs[0].config.get("data.n_context", 40))
  table = paired_ood_table(runs, metric="mse", columns=lengths, column_name="L",
                           train_column=train_len,
                           default_keys=("attention.name", "model.num_heads"))
  if table is None:
    return []
  return ["", "### Variants against `standard` out of distribution, paired by seed", "", table,
          "", "Seed-paired differences of the test MSE to `standard` of the same setting under "
          "each shift (same seeds, so the same training prompts, and the same OOD prompts): "
          f"mean [95% t-interval] (n = seeds). At L = {train_len} (the training length): lower "
          "/ higher when the interval excludes 0, else not distinguishable."]


def summary_table(runs: Sequence[RunRecord], *, metric: str, column, baselines: Sequence[str],
                  labels: dict, default_keys=("attention.name",)) -> str:
  """One column of :func:`ood_table` turned around: a row per shift, a column per setting (its
  cell as in the full table) and per baseline, so every shift's settings read side by side."""
  kept, _ = split_by_prompts(runs)
  groups = group_runs(kept, default_keys=default_keys)
  modes = [icl_plateau.modes(g) for g in groups]
  header = ["shift"] + [g.label + (f" (left: {m.fraction()})" if m and m.bimodal else "")
                        for g, m in zip(groups, modes)]
  header += [f"*{labels.get(b, b)}*" for b in baselines]
  rows = []
  for shift in kept[0].ood.get("shifts", []) if kept else []:
    base = [_value(kept[0], metric, b, shift, column) for b in baselines]
    rows.append([f"`{shift}`"] + [_cell(g, metric, shift, column, m)
                                  for g, m in zip(groups, modes)]
                + ["—" if v is None else f"*{v:.3f}*" for v in base])
  return markdown_table(header, rows)


def b2_section(runs: Sequence[RunRecord]) -> str | None:
  """Table B2 for icl_garg runs with ``ood.json``, at k = d/2, d − 1, d, 2d."""
  from attnlab.train import garg_ood
  runs = [r for r in runs if r.ood and r.ood.get("task") == "icl_garg"]
  if not runs:
    return None
  d = int(runs[0].ood["d"])
  ks = [k for k in dict.fromkeys((d // 2, d - 1, d, 2 * d)) if k in runs[0].ood.get("ks", [])]
  table, warnings = ood_table(runs, metric="nerr", columns=ks, column_name="k",
                              baselines=runs[0].ood.get("baselines", garg_ood.BASELINES),
                              labels=garg_ood.LABELS)
  doc = runs[0].ood
  return "\n".join(
      ["## Out-of-distribution prompts (experiments/icl_garg/README.md, table B2)", "",
       table, "",
       f"Table B2 (`attnlab ood`, train/garg_ood.py). Normalised squared error of the "
       f"prediction from k in-context examples, d = {d}, {doc.get('n_prompts')} prompts per "
       f"setting (prompt seed {doc.get('prompt_seed')}, the same for every run), mean ± 95% "
       "t-interval half-width over seeds (n), or each mode's where some seeds left the "
       f"plateau and others did not ({icl_plateau.GARG_RULE}); baselines on the same prompts. "
       "— : undefined (an orthogonal query needs k < d)."]
      + ([""] + warnings if warnings else [])
      + (["", f"### Table B2 at k = 2d = {2 * d}, every shift side by side", "",
         summary_table(runs, metric="nerr", column=2 * d,
                       baselines=runs[0].ood.get("baselines", garg_ood.BASELINES),
                       labels=garg_ood.LABELS), "",
         f"The k = {2 * d} column of table B2 (for `orthogonal_query`, undefined at k ≥ d, "
         f"see k = {d - 1} above); italic: the baselines on the same prompts."]
         if 2 * d in ks else []))


def ood_plot(runs: Sequence[RunRecord], directory: str, *, name: str, metric: str,
             columns: Sequence, column_name: str, baselines: Sequence[str], labels: dict,
             ylabel: str, default_keys=("attention.name",), log_x: bool = True) -> str | None:
  """One panel per shift: the model's ``metric`` against the column (prompt length L or
  examples k) for every setting (mean, shaded 95% t-interval over seeds; a bimodal setting one
  curve per mode) and the baselines as grey lines; log y. Returns the PNG's name or None."""
  kept, _ = split_by_prompts([r for r in runs if r.ood])
  if not kept:
    return None
  shifts = kept[0].ood.get("shifts", [])
  groups = group_runs(kept, default_keys=default_keys)
  curves = []  # (label, runs)
  for g, text in zip(groups, plotting.legend_labels(groups, default_keys)):
    modes = icl_plateau.modes(g)
    if modes is not None and modes.bimodal:
      curves += [(f"{text} (left the plateau, n={len(modes.left)})", modes.left),
                 (f"{text} (plateau, n={len(modes.plateau)})", modes.plateau)]
    else:
      curves.append((text, g.runs))
  plt = plotting.pyplot()
  cols = min(4, len(shifts))
  rows_n = -(-len(shifts) // cols)
  fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols, 3.0 * rows_n), squeeze=False)
  styles = plotting.styles(len(curves))
  x = np.asarray(columns, float)
  for ax, shift in zip(axes.flat, shifts):
    drawn = []  # every plotted mean and baseline value: the y range (bands may reach below 0)
    for (text, rs), style in zip(curves, styles):
      ys = np.array([[_nan(_value(r, metric, "model", shift, c)) for c in columns]
                     for r in rs], float)
      line = plotting.band(ax, x, ys, text, **style)
      drawn += list(line.get_ydata())
    for b, style in zip(baselines, plotting.REFERENCE_STYLES):
      ys = [_nan(_value(kept[0], metric, b, shift, c)) for c in columns]
      ax.plot(x, ys, label=labels.get(b, b).replace("`", ""), **style)
      drawn += ys
    finite = [v for v in drawn if np.isfinite(v)]
    if finite:
      ax.set_ylim(min(finite) / 1.3, max(finite) * 1.3)
    if log_x:
      ax.set_xscale("log")
      ax.set_xticks(x)
      ax.set_xticklabels([str(c) for c in columns])
    ax.set_yscale("log")
    plotting.plain_log_ticks(ax)
    ax.set_title(shift, fontsize=9)
    ax.set_xlabel(column_name, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
  handles, texts = axes.flat[0].get_legend_handles_labels()
  spare = list(axes.flat)[len(shifts):]
  for ax in spare:
    ax.axis("off")
  if spare:
    spare[0].legend(handles, texts, fontsize=7, loc="center")
  else:
    axes.flat[0].legend(fontsize=6)
  fig.suptitle(f"{name}: {plotting.BAND_TEXT}; baselines in grey", fontsize=9)
  return plotting.save(fig, directory, f"{name}.png")
