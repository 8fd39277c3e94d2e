"""Plot helpers shared by the study sections (PNG, 150 dpi, written into the sweep directory)."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from attnlab.train.report.tables import Group, label, t_interval, varying_keys

DPI = 150


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


BAND_TEXT = "mean, shaded 95% t-interval over seeds"


def band(ax, x, ys: np.ndarray, label_text: str, alpha: float = 0.2, **kw):
  """Mean line over seeds (rows of ``ys``; NaN entries left out) with the two-sided 95% Student-t
  interval of the mean shaded wherever at least two seeds have a value (:func:`.tables.t_interval`);
  one seed draws the line alone."""
  ys = np.atleast_2d(np.asarray(ys, np.float64))
  stats = np.array([t_interval(col) for col in ys.T]).reshape(-1, 2)
  mean, half = stats[:, 0], stats[:, 1]
  line, = ax.plot(x, mean, label=label_text.replace("`", ""), **kw)
  if np.any(np.isfinite(half)):  # NaN half-widths leave gaps in the shading
    ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=alpha, linewidth=0)
  return line


LINESTYLES = ("-", "--", "-.", ":")


def styles(n: int) -> list[dict]:
  """``n`` distinct (colour, line style) pairs: the ten tab10 colours with solid lines, then
  again dashed, dash-dotted, dotted."""
  plt = pyplot()
  cmap = plt.get_cmap("tab10")
  return [dict(color=cmap(i % 10), linestyle=LINESTYLES[(i // 10) % len(LINESTYLES)])
          for i in range(n)]


def legend_labels(groups: Sequence[Group], default_keys=("attention.name",)) -> list[str]:
  """One distinct legend label per plotted group, naming every field that varies between
  them (a corpus, a CB position, an option: not only the variant)."""
  configs = [g.config for g in groups]
  if not configs:
    return []
  vary = varying_keys(configs) or [k for k in default_keys if k in configs[0]]
  labels = [label(c, vary) for c in configs]
  if len(set(labels)) < len(labels):  # a switched-off or default value was left out: spell all
    labels = [", ".join(f"{k.split('.')[-1]}={c.get(k)}" for k in vary) or "all runs"
              for c in configs]
  return [t.replace("`", "") for t in labels]


def plain_log_ticks(ax, axis: str = "y"):
  """Plain decimal tick labels on a log axis ("0.3", "2", "1000", not "3×10⁻¹"). Under a decade
  of range the ticks are evenly spaced round numbers (the powers of ten alone would leave one
  label or none); up to two decades the minor ticks at 2 and 5 × 10^k are labelled too; beyond
  that only the powers of ten."""
  from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator
  target = ax.yaxis if axis == "y" else ax.xaxis
  lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
  decades = math.log10(hi / lo) if lo > 0 and hi > lo else 3.0
  if decades < 1:
    target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    target.set_minor_locator(NullLocator())
  target.set_major_formatter(FuncFormatter(_plain))
  if decades < 1 or decades >= 2:
    target.set_minor_formatter(NullFormatter())
    return

  def minor(v, _pos=None):
    if v <= 0:
      return ""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return _plain(v) if any(abs(mantissa - k) < 1e-6 for k in (2, 5)) else ""
  target.set_minor_formatter(FuncFormatter(minor))


def _plain(v, _pos=None) -> str:
  if not (v > 0 and math.isfinite(v)):
    return ""
  if v >= 1 and abs(v - round(v)) < 1e-9 * v:
    return f"{int(round(v))}"
  digits = max(0, 2 - math.floor(math.log10(v)))  # three significant digits at most
  return f"{v:.{digits}f}".rstrip("0").rstrip(".")


REFERENCE_STYLES = [dict(color=c, linestyle=ls, linewidth=1.2) for c, ls in (
    ("0.15", "--"), ("0.45", "-."), ("0.3", ":"), ("0.6", "--"), ("0.2", (0, (5, 1, 1, 1))),
    ("0.5", (0, (1, 2))), ("0.35", (0, (8, 2))))]


def curve(group: Group, xs: Sequence, key_of: Callable[[Any], str]) -> np.ndarray:
  return np.array([[r.final_metrics().get(key_of(x), np.nan) for x in xs] for r in group.runs])


def series(group: Group, metric: str, splits=("eval", "test")) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values [seeds, steps]) of ``metric`` over training, on the steps all seeds share."""
  per_run = []
  for r in group.runs:
    per_run.append({row["step"]: row[metric] for row in r.rows
                    if row.get("split") in splits and isinstance(row.get(metric), (int, float))})
  steps = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
  return np.array(steps), np.array([[p[s] for s in steps] for p in per_run])


def save(fig, directory: str, name: str) -> str:
  path = os.path.join(directory, name)
  fig.tight_layout()
  fig.savefig(path, dpi=DPI)
  pyplot().close(fig)
  return name


def train_loss_plot(groups: Sequence[Group], directory: str, task: str,
                    shade: Sequence[tuple[float, float]] = ()) -> str | None:
  """Training loss vs step per group (log y), with optional shaded step ranges."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  drawn = False
  for g, text, style in zip(groups, legend_labels(groups), styles(len(groups))):
    steps, ys = series(g, "loss", splits=("train",))
    if len(steps):
      band(ax, steps, ys, text, **style)
      drawn = True
  if not drawn:
    plt.close(fig)
    return None
  for i, (a, b) in enumerate(shade):
    ax.axvspan(a, b, color="grey", alpha=0.08 if i % 2 else 0.0, linewidth=0)
  ax.set_yscale("log")
  plain_log_ticks(ax)
  ax.set_xlabel("training step")
  ax.set_ylabel("training loss (mean squared error)" if task != "lm"
                else "training loss (nats/byte)")
  ax.set_title(f"{task}: training loss ({BAND_TEXT})", fontsize=9)
  ax.legend(fontsize=7)
  return save(fig, directory, f"{task}_train_loss.png")


def ragged_rows(columns: Sequence[Sequence[float]]) -> np.ndarray:
  """Per-x lists of seed values (of unequal lengths) as a [seeds, x] array padded with NaN, the
  shape :func:`band` takes."""
  depth = max((len(c) for c in columns), default=0)
  out = np.full((depth, len(columns)), np.nan)
  for j, col in enumerate(columns):
    out[:len(col), j] = [float(v) for v in col]
  return out
