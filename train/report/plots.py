"""Plot helpers shared by the study sections (PNG, 150 dpi, written into the sweep directory)."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from attnlab.train.report.tables import Group

DPI = 150


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def band(ax, x, ys: np.ndarray, label_text: str, **kw):
  """Mean line with a shaded mean ± std band over seeds (rows of ``ys``)."""
  mean = np.nanmean(ys, axis=0)
  line, = ax.plot(x, mean, label=label_text.replace("`", ""), **kw)
  if ys.shape[0] > 1:
    std = np.nanstd(ys, axis=0, ddof=1)
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
  return line


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
  for g in groups:
    steps, ys = series(g, "loss", splits=("train",))
    if len(steps):
      band(ax, steps, ys, g.label)
      drawn = True
  if not drawn:
    plt.close(fig)
    return None
  for i, (a, b) in enumerate(shade):
    ax.axvspan(a, b, color="grey", alpha=0.08 if i % 2 else 0.0, linewidth=0)
  ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("training loss (mean squared error)" if task != "lm"
                else "training loss (nats/byte)")
  ax.set_title(f"{task}: training loss (mean ± std over seeds)")
  ax.legend(fontsize=7)
  return save(fig, directory, f"{task}_train_loss.png")
