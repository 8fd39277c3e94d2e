"""MQAR (experiments/mqar/README.md §2): test accuracy per variant, width and number of
key-value pairs; accuracy-vs-pairs plot per width (mean and 95% t-interval over seeds)."""

from __future__ import annotations

from typing import Sequence

from attnlab.train.report import plots as plotting
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import (ci_cell, group_runs, label, markdown_table,
                                         varying_keys)


AXES = ("attention.name", "model.d_model", "model.d_ff", "data.pairs", "batch_size",
        "model.init_std")
"""The study's axes (the batch follows the pairs, d_ff and the init std the width); any other
field that varies between runs (a different recipe) gets its own rows."""


SOLVED = 0.99
"""A run has solved a setting when its test accuracy is at least this. Where the seeds of a cell
split (some solve, some do not), the cell gives each mode instead of one mean over both."""


def _cell(values: Sequence[float]) -> str:
  solved = [v for v in values if v >= SOLVED]
  rest = [v for v in values if v < SOLVED]
  if not solved or not rest:
    return ci_cell(values)
  return (f"solved {len(solved)}/{len(values)}: {ci_cell(solved)} / not: {ci_cell(rest)}")


def _by_setting(runs: Sequence[RunRecord]) -> dict:
  """``{(variant, d, other settings): {pairs: [accuracy per seed]}}``."""
  groups = group_runs(runs)
  other = [k for k in varying_keys([g.config for g in groups]) if k not in AXES]
  out: dict = {}
  for g in groups:
    c = g.config
    key = (str(c.get("attention.name")), int(c.get("model.d_model", 0)), label(c, other))
    out.setdefault(key, {}).setdefault(int(c.get("data.pairs", 0)), []).extend(
        g.values("accuracy"))
  return out


def mqar_section(runs: Sequence[RunRecord], directory: str) -> tuple[str, list[str]]:
  """The accuracy table (rows variant × d, columns pairs) and the plot."""
  table = _by_setting(runs)
  pairs = sorted({p for cols in table.values() for p in cols})
  others = any(k[2] != "all runs" for k in table)
  rows = [[f"`{name}`" + (f" ({rest})" if others else ""), str(d)]
          + [_cell(cols.get(p, [])) for p in pairs]
          for (name, d, rest), cols in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
  steps = sorted({int(r.config.get("steps", 0)) for r in runs})
  text = ["## Multi-query associative recall (experiments/mqar/README.md §2)", "",
          markdown_table(["variant", "d"] + [f"P={p}" for p in pairs], rows), "",
          "Test accuracy at the answer positions (fixed test sequences per number of pairs P, "
          "sequence length 4 P), mean ± half-width of the 95% t-interval over seeds "
          f"(n = seeds); where some seeds reach accuracy {SOLVED} and others do not, each "
          f"group's mean with its n. Steps: {', '.join(str(s) for s in steps)}." + _curriculum_note(runs)]
  plot = _plot(table, pairs, directory)
  return "\n".join(text), [plot] if plot else []


def _curriculum_note(runs: Sequence[RunRecord]) -> str:
  """Says which runs trained with the curriculum (configs/mqar.py ``curriculum=1``)."""
  stages = sorted({(int(r.config.get("data.start_pairs", 0) or 0),
                    int(r.config.get("data.start_steps", 0) or 0)) for r in runs})
  used = [f"the first {n} steps on {p} pairs" for p, n in stages if n]
  if not used:
    return ""
  every = len(stages) == len(used)
  return (f" Curriculum ({'every run' if every else 'runs labelled start_steps > 0'}): "
          f"{'; '.join(used)}, then P pairs.")


def _plot(table: dict, pairs: list[int], directory: str) -> str | None:
  if not table or not pairs:
    return None
  plt = plotting.pyplot()
  widths = sorted({k[1] for k in table})
  names = sorted({(k[0], k[2]) for k in table})
  styles = dict(zip(names, plotting.styles(len(names))))
  fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 3.8), squeeze=False,
                           sharey=True)
  for ax, d in zip(axes[0], widths):
    for name, rest in names:
      cols = table.get((name, d, rest))
      if not cols:
        continue
      xs = [p for p in pairs if cols.get(p)]
      text = name if rest == "all runs" else f"{name} ({rest})"
      seeds_x = plotting.ragged_rows([cols[p] for p in xs])
      line = plotting.band(ax, xs, seeds_x, text, alpha=0.08, marker="o", **styles[(name, rest)])
      for row in seeds_x:  # every seed as a dot: a cell split between solving and not shows
        ax.plot(xs, row, linestyle="none", marker=".", markersize=4, alpha=0.6,
                color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xticks(pairs, [str(p) for p in pairs])
    ax.set_xticks([], minor=True)  # only the plotted sizes are labelled
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("key-value pairs P (sequence length 4 P)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"MQAR, d = {d}, 2 layers")
    ax.legend(fontsize=7)
  fig.suptitle("mean and 95% t-interval over seeds; dots: single seeds", fontsize=9)
  return plotting.save(fig, directory, "mqar_accuracy_vs_pairs.png")
