"""In-context linear regression (experiments/icl_regression/README.md §1): tables A1/A2 with the
closed-form predictors, the published trained rows and the §1.5 acceptance bands; table A5
(multi-task); plots."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

from attnlab.train.report import icl_paired, icl_plateau, testsets
from attnlab.train.report import ood as ood_tables
from attnlab.train.report import plots as plotting
from attnlab.train.report.icl_heads_table import heads_table
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import (
    Group, all_final_keys, band_check, check, ci_cell, fmt, group_runs, markdown_table,
    memory_efficient_checks, metric_index)


# experiments/icl_regression/README.md §1.5.
HE_REFERENCE_LABELS = {
    "multihead_estimator": "multi-head estimator (ω, μ) = (±0.13, ±3.45)",
    "single_head_optimum": "single-head optimum",
    "gd": "GD (η = 0.897)",
    "dgd": "debiased GD",
    "debiased_gd": "debiased GD",
    "ridge": "ridge λ = σ²d (Bayes)",
    "zero": "zero predictor",
}
HE_PUBLISHED_TRAINED = {
    1: {10: 0.847, 20: 0.574, 40: 0.406, 100: 0.281},
    2: {10: 0.579, 20: 0.366, 40: 0.241, 100: 0.168},
    4: {10: 0.573, 20: 0.364, 40: 0.245, 100: 0.170},
    8: {10: 0.584, 20: 0.374, 40: 0.236, 100: 0.168},
}
HE_BANDS = {"multi": (0.23, 0.26), "single": (0.38, 0.45), "dgd_tol": 0.03,
            "smoke_steps": 2000, "smoke": {1: 0.45, 2: 0.30}}


# Config fields added after some committed runs were made, with the value those runs used: a
# run whose config.json lacks them is the same setting as one that spells them out, so the
# report drops them where they hold this value (labels then name only the departures).
CONFIG_DEFAULTS = {"data.kind": "linear", "model.normalization": "softmax",
                   "data.covariance": "isotropic"}


def icl_regression_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table A1/A2 (MSE at each L), reference rows per test set, acceptance bands, per-head
  scores, table A6 (runs with ``ood.json``), plots."""
  runs = [dataclasses.replace(r, config={k: v for k, v in r.config.items()
                                         if CONFIG_DEFAULTS.get(k, object()) != v})
          for r in runs]
  multitask = [r for r in runs if r.config.get("data.kind") == "multitask"]
  runs = [r for r in runs if r.config.get("data.kind") != "multitask"]
  if not runs:
    return _multitask_section(multitask, directory)
  groups = group_runs(runs, default_keys=("attention.name", "model.num_heads"))
  groups, ids, warnings = testsets.split_by_test_set(groups)
  keys = all_final_keys(groups)
  lengths = metric_index(keys, r"mse@L=(\d+)")
  modes = {id(g): icl_plateau.modes(g) for g in groups}
  plateau_col = any(m is not None for m in modes.values())
  header = (["setting"] + [f"MSE@L={l}" for l in lengths]
            + (["left the plateau"] if plateau_col else []))
  rows = []
  for g in groups:
    m = modes[id(g)]
    rows.append([g.label] + [icl_plateau.cell(g, k, m) for k in lengths.values()]
                + ([m.fraction() if m else "—"] if plateau_col else []))
  pad = [""] if plateau_col else []
  refs = {name: metric_index(keys, rf"{re.escape(name)}_mse@L=(\d+)")
          for name in HE_REFERENCE_LABELS}
  ref_sets = testsets.reference_row_sets(groups, ids)
  for suffix, ref_runs in ref_sets:
    for name, idx in refs.items():
      if idx:
        rows.append([f"*{HE_REFERENCE_LABELS[name]}* (computed: closed form on the same test "
                     f"prompts){suffix}"]
                    + [f"*{fmt(testsets.reference_value(ref_runs, idx[l]))}*"
                       if l in idx else "—" for l in lengths] + pad)
  isotropic = [g for g in groups if g.config.get("data.d") == 5
               and g.config.get("data.covariance", "isotropic") == "isotropic"]
  if isotropic:
    for h, vals in HE_PUBLISHED_TRAINED.items():
      rows.append([f"*trained H={h}* (published, `plots.ipynb`, 0.1 removed)"]
                  + [f"*{vals[l]:.3f}*" if l in vals else "—" for l in lengths] + pad)
  checks = _icl_checks(groups, refs, modes)
  checks += memory_efficient_checks(groups, list(lengths.values()))
  text = ["## In-context linear regression (experiments/icl_regression/README.md §1)", ""]
  if warnings:
    text += warnings + [""]
  text += [markdown_table(header, rows), "",
           "Table A1/A2. Test MSE (raw, including the σ² = 0.1 label-noise floor), mean ± the "
           "95% t-interval half-width over seeds (n = seeds). "
           + testsets.note(groups, ids) + " "
           + (f"Settings with two or more heads: {icl_plateau.RULE}"
              + (f"; {icl_plateau.HEAD_RULE}" if any(
                  m is not None and not icl_plateau.isotropic(g.config)
                  for g in groups for m in [modes[id(g)]]) else "")
              + "; when the seeds split, the cells give each mode's mean (left / plateau) with "
              "its n instead of one mean. " if plateau_col else "")
           + "Acceptance (§1.5, "
           f"`standard` at L = 40): H ≥ 2 in [{HE_BANDS['multi'][0]}, {HE_BANDS['multi'][1]}]; "
           f"H = 1 in [{HE_BANDS['single'][0]}, {HE_BANDS['single'][1]}]; H ≥ 2 within "
           f"±{HE_BANDS['dgd_tol']} of debiased GD at every L; smoke (≤ 2k steps, §1.3): "
           "MSE@40 < 0.30 (H = 2), < 0.45 (H = 1); `memory_efficient` = `standard`. The bands "
           f"assume at least {HE_BANDS['smoke_steps']:,} training steps (the smoke preset); "
           "shorter runs are marked not applicable."]
  if checks:
    text += [""] + checks
  differences = icl_paired.variant_differences(groups, lengths)
  if differences:
    text += ["", "### Variants against `standard`, paired by seed", "", differences]
  heads = heads_table(groups)
  if heads:
    text += ["", "### Per-head scores (§1.6)", "", heads]
  a6 = ood_tables.a6_section(runs)
  if a6:
    text += ["", a6]
  plots = _icl_plots(groups, lengths, refs, directory, ref_sets[0][1])
  plots += [p for p in (plotting.train_loss_plot(groups, directory, "icl_regression"),
                        _head_dynamics_plot(groups, directory),
                        ood_tables.a6_plot(runs, directory)) if p]
  if multitask:
    more, files = _multitask_section(multitask, directory)
    text += ["", more]
    plots += files
  return "\n".join(text), plots


# experiments/icl_regression/README.md §1.6 reference lines (omega ÷ sqrt(d+2))
HE_OMEGA_REF, HE_MU_REF = 0.13, 3.5


def _head_dynamics_plot(groups: Sequence[Group], directory: str) -> str | None:
  """A-P2: omega_h and mu_h against step (first seed of each group that logged them), with the
  ±0.13 and ±3.5 reference lines. Heads are not comparable across seeds (any permutation and
  sign pairing is a solution), so seeds are not averaged."""
  shown = []
  for g in groups:
    run = min(g.runs, key=lambda r: r.config.get("seed", 0))
    rows = [r for r in run.rows if r.get("split") == "train" and "omega@h=0" in r]
    if rows:
      shown.append((g, run, rows))
  if not shown:
    return None
  plt = plotting.pyplot()
  fig, axes = plt.subplots(len(shown), 2, figsize=(10, 2.8 * len(shown)), squeeze=False)
  for (g, run, rows), (ax_w, ax_m) in zip(shown, axes):
    steps = [r["step"] for r in rows]
    heads = sorted(int(k.split("=")[1]) for k in rows[-1] if k.startswith("omega@h="))
    for h in heads:
      ax_w.plot(steps, [r.get(f"omega@h={h}") for r in rows], label=f"head {h}")
      ax_m.plot(steps, [r.get(f"mu@h={h}") for r in rows], label=f"head {h}")
    for ax, ref, name in ((ax_w, HE_OMEGA_REF, "ω_h (mean diag M_xx ÷ sqrt(d+2))"),
                          (ax_m, HE_MU_REF, "μ_h (OV entry on y)")):
      for sign in (1, -1):
        ax.axhline(sign * ref, color="0.5", linestyle="--", linewidth=0.8)
      ax.axhline(0, color="0.85", linewidth=0.6, zorder=0)
      ax.set_xscale("log")
      plotting.plain_log_ticks(ax, "x")
      ax.set_xlabel("training step")
      ax.set_ylabel(name)
      ax.set_title(f"{g.label.replace('`', '')}, seed {run.config.get('seed', 0)}", fontsize=9)
      ax.legend(fontsize=6)
  fig.suptitle("Per-head ω and μ during training (dashed: ±0.13 and ±3.5, "
               "experiments/icl_regression/README.md §1.6)",
               fontsize=10)
  return plotting.save(fig, directory, "icl_regression_heads_vs_step.png")


def _head_counts(run: RunRecord) -> tuple[int, int] | None:
  """(active heads, shared heads) of a multitask run from its final per-head, per-task mu."""
  from attnlab.train.icl_heads import serving_heads
  mu = {}
  for key, value in run.final_metrics().items():
    m = re.fullmatch(r"mu@h=(\d+),t=(\d+)", key)
    if m:
      mu[(int(m.group(1)), int(m.group(2)))] = value
  if not mu:
    return None
  heads = sorted({h for h, _ in mu})
  tasks = sorted({t for _, t in mu})
  s = serving_heads([[mu.get((h, t), 0.0) for t in tasks] for h in heads])
  return int(s["active"].sum()), int(s["shared"].sum())


def _solution_modes(group: Group, counts: dict) -> list[tuple[Group, str]]:
  """``[(runs, label note)]``: the group itself, or, when its seeds end with different numbers
  of shared heads (different solutions, e.g. one ± pair serving both tasks against a pair
  per task), one part per number of shared heads, most seeds first. ``counts``: each run's
  :func:`_head_counts`, by ``id(run)``."""
  by_shared: dict[int, list[RunRecord]] = {}
  for r in group.runs:
    c = counts[id(r)]
    by_shared.setdefault(-1 if c is None else c[1], []).append(r)
  if len(by_shared) < 2:
    return [(group, "")]
  n = len(group.runs)
  parts = sorted(by_shared.items(), key=lambda kv: (-len(kv[1]), kv[0]))
  return [(Group(group.config, part, group.label),
           f", {'?' if shared < 0 else shared} shared ({len(part)} of {n} seeds)")
          for shared, part in parts]


def _multitask_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """Table A5 (experiments/icl_regression/README.md §1.9): per-task test MSE, active and shared
  heads per H."""
  groups = group_runs(runs, default_keys=("attention.name", "model.num_heads"))
  groups, ids, warnings = testsets.split_by_test_set(groups)
  keys = all_final_keys(groups)
  per_task = metric_index(keys, r"mse_task(\d+)@L=\d+")
  header = (["setting"] + [f"MSE task {t}" for t in per_task]
            + ["active heads", "shared heads (serve both tasks)"])
  run_counts = {id(r): _head_counts(r) for g in groups for r in g.runs}
  counts_of = {id(g): [c for c in (run_counts[id(r)] for r in g.runs) if c is not None]
               for g in groups}
  rows, split = [], False
  for g in groups:
    for part, note in _solution_modes(g, run_counts):
      split = split or bool(note)
      counts = [c for c in (run_counts[id(r)] for r in part.runs) if c is not None]
      rows.append([g.label + note] + [ci_cell(part.values(k)) for k in per_task.values()]
                  + [ci_cell([c[0] for c in counts], 1) if counts else "n/a",
                     ci_cell([c[1] for c in counts], 1) if counts else "n/a"])
  for suffix, ref_runs in testsets.reference_row_sets(groups, ids):
    for name, text in (("ridge", "Bayes posterior mean per task (ridge on its coordinates)"),
                       ("zero", "zero predictor")):
      idx = metric_index(keys, rf"{name}_mse_task(\d+)@L=\d+")
      if idx:
        rows.append([f"*{text}* (computed: same test prompts){suffix}"]
                    + [f"*{fmt(testsets.reference_value(ref_runs, idx[t]))}*" if t in idx
                       else "—" for t in per_task] + ["", ""])
  text = ["## Multi-task superposition (experiments/icl_regression/README.md §1.9, table A5)", ""]
  text += (warnings + [""]) if warnings else []
  text += [markdown_table(header, rows), "",
          "Table A5. Two tasks y1 = β1ᵀx[1:4], y2 = β2ᵀx[3:6] (d = 6, overlapping "
          "coordinates "
          "3-4), read out by two outputs; test MSE per task on noiseless query labels, mean ± "
          "95% t-interval half-width over seeds (n). " + testsets.note(groups, ids)
          + " Head h serves task t if |μ_{h,t}| > 0.1 max |μ| (final parameters); "
          "shared heads serve both. Published claim: shared heads at H = 3 (superposition), "
          "none at H ≥ 4 (split-up)."
          + (" Where the seeds of one H end with different numbers of shared heads (different "
             "solutions), each solution is a row of its own with its share of the seeds, "
             "not one mean over both." if split else "")]
  checks = []
  for g in groups:
    h = g.config.get("model.num_heads")
    counts = counts_of[id(g)]
    if h is None or not counts:
      continue
    if h == 3:
      checks.append(check(all(c[1] >= 1 for c in counts),
                          f"{g.label}: at least one shared head (found {[c[1] for c in counts]})"))
    elif h >= 4:
      checks.append(check(all(c[1] == 0 for c in counts),
                          f"{g.label}: no shared head (found {[c[1] for c in counts]})"))
  if checks:
    text += [""] + checks
  plots = [p for p in (plotting.train_loss_plot(groups, directory, "icl_multitask"),) if p]
  return "\n".join(text), plots


def _icl_checks(groups: Sequence[Group], refs: dict, modes: dict) -> list[str]:
  """§1.5 bands for `standard` (on the seeds that left the plateau when a group is bimodal)."""
  out = []
  dgd = refs.get("dgd") or refs.get("debiased_gd") or {}
  for g0 in groups:
    g, note = icl_plateau.mode_group(g0, modes.get(id(g0)))
    c = g.config
    if (c.get("attention.name") != "standard" or c.get("data.d") != 5
        or c.get("data.covariance", "isotropic") != "isotropic"
        or not math.isclose(c.get("data.noise_var", 0.1), 0.1)):
      continue
    h = c.get("model.num_heads")
    m40 = g.mean("mse@L=40")
    if m40 is None or h is None:
      continue
    lo, hi = HE_BANDS["multi"] if h >= 2 else HE_BANDS["single"]
    need = HE_BANDS["smoke_steps"]  # the bands are for runs of the smoke preset or longer
    out.append(band_check(lo <= m40 <= hi,
                          f"{g.label}{note}: MSE@40 = {m40:.3f} in [{lo}, {hi}]", need, g))
    if c.get("steps", 0) <= HE_BANDS["smoke_steps"] and h in HE_BANDS["smoke"]:
      bound = HE_BANDS["smoke"][h]
      out.append(band_check(m40 < bound,
                            f"{g.label}{note}: smoke MSE@40 = {m40:.3f} < {bound}", need, g))
    if h >= 2 and dgd:
      ref = lambda k: testsets.reference_value(g.runs, k)
      gaps = {l: abs(g.mean(f"mse@L={l}") - ref(k)) for l, k in dgd.items()
              if g.mean(f"mse@L={l}") is not None and ref(k) is not None}
      if gaps:
        worst = max(gaps, key=gaps.get)
        out.append(band_check(gaps[worst] <= HE_BANDS["dgd_tol"],
                              f"{g.label}{note}: |MSE − debiased GD| ≤ "
                              f"{HE_BANDS['dgd_tol']} at every "
                              f"L (largest {gaps[worst]:.3f} at L={worst})", need, g))
  return out


def _icl_plots(groups, lengths: dict, refs: dict, directory: str, ref_runs) -> list[str]:
  """A-P3 (``standard`` at every H, with the closed-form predictors of the first test set's
  runs ``ref_runs``) and, when other variants ran, A-P5 (every variant at the H values they ran
  at)."""
  if not lengths or not groups:
    return []
  std = [g for g in groups if g.config.get("attention.name") == "standard"]
  others = [g for g in groups if g.config.get("attention.name") != "standard"]
  out = []
  if std or not others:
    out.append(_icl_plot(std or groups, lengths, refs, directory, "icl_regression_mse_vs_L.png",
                         "MSE vs prompt length (`standard`)", ref_runs))
  if others:
    heads = {g.config.get("model.num_heads") for g in others}
    chosen = [g for g in groups if g.config.get("model.num_heads") in heads]
    out.append(_icl_plot(chosen, lengths, refs, directory,
                         "icl_regression_variants_mse_vs_L.png",
                         "MSE vs prompt length per variant", ref_runs))
  return out


def _icl_plot(groups, lengths: dict, refs: dict, directory: str, name: str,
              title: str, ref_runs) -> str:
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  ls = list(lengths)
  for g, style in zip(groups, plotting.styles(len(groups))):
    plotting.band(ax, ls, plotting.curve(g, ls, lambda l: f"mse@L={l}"), g.label, marker="o",
                  **style)
  present = [(key, idx) for key, idx in refs.items() if idx]
  for (key, idx), style in zip(present, plotting.REFERENCE_STYLES):
    x = [l for l in ls if l in idx]
    ax.plot(x, [testsets.reference_value(ref_runs, idx[l]) for l in x],
            label=HE_REFERENCE_LABELS[key],
            **style)
  ax.set_yscale("log")
  plotting.plain_log_ticks(ax)
  ax.set_xlabel("test prompt length L (context pairs)")
  ax.set_ylabel("test MSE (includes the 0.1 noise floor)")
  ax.set_title(f"In-context regression: {title.replace('`', '')}")
  ax.legend(fontsize=6, ncol=2)
  return plotting.save(fig, directory, name)
