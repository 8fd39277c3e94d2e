"""Relational match-to-sample (experiments/match_to_sample/README.md §2): test accuracy per
variant and training-set size, with parameter counts; accuracy vs training-set size (log x),
mean and 95% t-interval over seeds."""

from __future__ import annotations

from typing import Sequence

from attnlab.train.report import paired
from attnlab.train.report import plots as plotting
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import (ci_cell, group_runs, label, markdown_table,
                                         varying_keys)


AXES = ("attention.name", "data.train_size", "model.match_params", "model.match_options",
        "attention.options")
"""The study's axes; any other field that varies between runs gets its own rows."""


def _by_setting(runs: Sequence[RunRecord]) -> tuple[dict, dict, dict]:
  """``{model: {train_size: [accuracy per seed]}}``, ``{model: parameter counts}`` and
  ``{model: {train_size: [runs]}}``; a model is the variant name, with the other fields that
  vary between runs."""
  groups = group_runs(runs)
  other = [k for k in varying_keys([g.config for g in groups])
           if not any(k == a or k.startswith(a + ".") for a in AXES)]
  acc: dict = {}
  params: dict = {}
  members: dict = {}
  for g in groups:
    rest = label(g.config, other) if other else ""
    name = str(g.config.get("attention.name")) + (f" ({rest})" if rest else "")
    n = int(g.config.get("data.train_size", 0))
    acc.setdefault(name, {}).setdefault(n, []).extend(g.values("accuracy"))
    members.setdefault(name, {}).setdefault(n, []).extend(g.runs)
    counts = {int(r.info.get("task", {}).get("parameters", 0)) for r in g.runs}
    params.setdefault(name, set()).update(counts)
  return acc, {k: sorted(v) for k, v in params.items()}, members


def match_to_sample_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """The accuracy table (rows variants, columns training-set sizes) and the plot."""
  acc, params, members = _by_setting(runs)
  sizes = sorted({n for cols in acc.values() for n in cols})
  rows = [[f"`{name}`", ", ".join(f"{p:,}" for p in params[name])]
          + [ci_cell(cols.get(n, [])) for n in sizes] for name, cols in sorted(acc.items())]
  text = ["## Relational match-to-sample (experiments/match_to_sample/README.md §2)", "",
          markdown_table(["variant", "parameters"] + [f"n={n}" for n in sizes], rows), "",
          "Test accuracy (5,000 fixed test examples per seed; chance 0.5) against the number of "
          "training examples, mean ± half-width of the 95% t-interval over seeds."]
  text += _paired_lines(members, sizes)
  plot = _plot(acc, sizes, params, directory)
  return "\n".join(text), [plot] if plot else []


def _paired_lines(members: dict, sizes: list[int]) -> list[str]:
  """``relational`` minus ``standard`` accuracy at each size, paired by seed (the same pool,
  training and test examples), with the verdict on "relational is ahead" (difference > 0)."""
  rel, std = members.get("relational"), members.get("standard")
  if not rel or not std:
    return []
  cells, verdicts = [], []
  for n in sizes:
    p = paired.pair(rel.get(n, []), std.get(n, []), "accuracy", "accuracy", windows=False)
    cells.append(paired.interval_cell(p.seed, signed=True))
    verdicts.append(paired.verdict(p, 0.0, "above")[0])
  return ["", markdown_table(["difference (seed-paired)"] + [f"n={n}" for n in sizes],
                             [["`relational` − `standard`"] + cells,
                              ["claim \"relational ahead\" (> 0)"] + verdicts]), "",
          "Accuracy of `relational` minus `standard` on the same seed (same object pool, "
          "training and test examples), mean [95% t-interval] (n=seeds); supported when the "
          "whole interval is above 0, contradicted when below, else not decided."]


def _plot(acc: dict, sizes: list[int], params: dict, directory: str) -> str | None:
  if not acc or not sizes:
    return None
  plt = plotting.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for (name, cols), style in zip(sorted(acc.items()), plotting.styles(len(acc))):
    xs = [n for n in sizes if cols.get(n)]
    text = f"{name} ({', '.join(f'{p:,}' for p in params[name])} params)"
    plotting.band(ax, xs, plotting.ragged_rows([cols[n] for n in xs]), text, alpha=0.15, marker="o",
                  **style)
  ax.axhline(0.5, color="0.7", linewidth=0.8, linestyle=":", label="chance")
  ax.set_xscale("log")
  ax.set_xticks(sizes, [str(n) for n in sizes])
  ax.set_xticks([], minor=True)  # only the plotted sizes are labelled
  ax.set_ylim(0.4, 1.02)
  ax.set_xlabel("training examples")
  ax.set_ylabel("test accuracy")
  ax.set_title("match-to-sample, 2 layers, d = 64 (mean, 95% t-interval)", fontsize=9)
  ax.legend(fontsize=7)
  return plotting.save(fig, directory, "match_to_sample_accuracy.png")
