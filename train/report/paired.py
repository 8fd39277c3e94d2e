"""95% intervals over seeds and paired differences between LM runs (tables L1 and L2).

No SciPy: Student t quantiles come from :func:`t975` (a table for 1-30 degrees of freedom, the
Cornish-Fisher expansion above, within 2e-6 of the exact quantile).

* :func:`t_interval`: mean and 95% interval over seeds, ``mean ± t975(n-1) · s / sqrt(n)``
  (s with ddof = 1; no interval for one seed).
* :func:`pair`: the difference ``a - coef · b`` of two sets of runs on the seeds they share,
  (a) **seed-paired**: one difference per seed, :func:`t_interval` over seeds (training noise,
  on fixed evaluation windows); (b) **window-paired**, where both runs of a seed have
  ``window_bpb.json`` on the same windows: per seed the mean over windows of the per-window
  difference with its standard error ``sd / sqrt(N)``; seeds combined as the mean of the
  per-seed means with ``se = sqrt(sum se_s^2) / S`` and a t quantile on ``sum (N_s - 1)``
  degrees of freedom (evaluation noise: which validation text was drawn, models fixed).
* :func:`verdict`: a claim about a difference is *supported* when every available interval lies
  on the claimed side of the threshold, *contradicted* when every one lies on the other side,
  otherwise *not decided*; fewer than 2 seeds decide nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np

from attnlab.train.report.runs import RunRecord

T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
        2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
        2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
        2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
"""97.5% quantiles of Student's t for 1..30 degrees of freedom (6 decimals)."""
Z975 = 1.959963984540054


def t975(df: float) -> float:
  """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%)."""
  if not df >= 1:
    raise ValueError(f"degrees of freedom must be >= 1, got {df}")
  if df <= 30 and float(df).is_integer():
    return T975[int(df) - 1]
  z, nu = Z975, float(df)
  return (z + (z ** 3 + z) / (4 * nu) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * nu ** 2)
          + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * nu ** 3))


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean with its standard error and 95% interval (``lo``/``hi`` None: fewer than 2
  samples). ``n`` counts seeds."""

  mean: float
  lo: float | None
  hi: float | None
  n: int
  se: float | None = None

  @property
  def decided(self) -> bool:
    return self.lo is not None and self.hi is not None


def t_interval(values: Sequence[float]) -> Interval | None:
  """Mean and 95% t-interval over ``values`` (None when empty; no interval for one value)."""
  v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))])
  if not v.size:
    return None
  mean = float(v.mean())
  if v.size == 1:
    return Interval(mean, None, None, 1)
  se = float(v.std(ddof=1)) / math.sqrt(v.size)
  h = t975(v.size - 1) * se
  return Interval(mean, mean - h, mean + h, int(v.size), se)


def combine_windows(per_seed: Sequence[np.ndarray]) -> Interval | None:
  """Window-paired interval from per-seed arrays of per-window differences."""
  per_seed = [np.asarray(d, float) for d in per_seed if len(d) >= 2]
  if not per_seed:
    return None
  s = len(per_seed)
  means = [float(d.mean()) for d in per_seed]
  se = math.sqrt(sum(float(d.std(ddof=1)) ** 2 / d.size for d in per_seed)) / s
  mean = float(np.mean(means))
  h = t975(sum(d.size - 1 for d in per_seed)) * se
  return Interval(mean, mean - h, mean + h, s, se)


def window_bpb(run: RunRecord) -> dict | None:
  """The run's ``window_bpb.json`` (None when absent or unreadable)."""
  try:
    with open(os.path.join(run.path, "window_bpb.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


@dataclasses.dataclass(frozen=True)
class Paired:
  """``a - coef · b`` on shared seeds: seed-paired and (where available) window-paired."""

  seeds: tuple
  seed: Interval | None
  windows: Interval | None
  notes: tuple[str, ...] = ()

  @property
  def dominant(self) -> str:
    """Which noise is larger: ``seeds`` or ``windows`` (by standard error), or ``—``."""
    if self.seed is None or self.seed.se is None or self.windows is None:
      return "—"
    return "seeds" if self.seed.se >= self.windows.se else "windows"


def _by_seed(runs: Sequence[RunRecord], metric: str) -> dict:
  return {r.config.get("seed"): r for r in runs if metric in r.final_metrics()}


def pair(a_runs: Sequence[RunRecord], b_runs: Sequence[RunRecord], metric_a: str = "bpb",
         metric_b: str = "bpb", coef: float = 1.0, windows: bool = True) -> Paired:
  """``a - coef · b`` (final ``metric_a`` of the a runs minus ``coef`` times ``metric_b`` of the
  b runs) paired by seed; window-paired from ``window_bpb.json`` (keys ``metric_a`` and
  ``metric_b``) when ``windows`` and both runs of a seed have it on the same windows."""
  a, b = _by_seed(a_runs, metric_a), _by_seed(b_runs, metric_b)
  seeds = sorted(set(a) & set(b), key=str)
  notes = []
  lost = sorted(set(a) ^ set(b), key=str)
  if lost:
    notes.append(f"seeds {', '.join(map(str, lost))} unpaired")
  diffs = [a[s].final_metrics()[metric_a] - coef * b[s].final_metrics()[metric_b]
           for s in seeds]
  per_seed, no_windows = [], []
  for s in seeds if windows else ():
    wa, wb = window_bpb(a[s]), window_bpb(b[s])
    if (wa is None or wb is None or metric_a not in wa or metric_b not in wb
        or wa.get("starts") != wb.get("starts") or wa.get("seq_len") != wb.get("seq_len")
        or len(wa[metric_a]) != len(wb[metric_b])):
      no_windows.append(s)
      continue
    per_seed.append(np.asarray(wa[metric_a], float) - coef * np.asarray(wb[metric_b], float))
  if per_seed and no_windows:
    notes.append(f"window-paired interval left out: no common windows for seeds "
                 f"{', '.join(map(str, no_windows))}")
  win = combine_windows(per_seed) if per_seed and not no_windows else None
  return Paired(tuple(seeds), t_interval(diffs), win, tuple(notes))


SUPPORTED, CONTRADICTED, UNDECIDED = "supported", "contradicted", "not decided"


def verdict(p: Paired | None, threshold: float, claimed: str) -> tuple[str, str]:
  """``(verdict, reason)`` for the claim "difference ``claimed`` threshold" (``claimed`` is
  ``"above"`` (difference >= threshold) or ``"below"`` (<=)): supported when the seed-paired
  interval and the window-paired one (where there is one) lie entirely on the claimed side,
  contradicted when they lie entirely on the other side, otherwise not decided."""
  if claimed not in ("above", "below"):
    raise ValueError(f"claimed must be 'above' or 'below', got {claimed!r}")
  if p is None or p.seed is None:
    return UNDECIDED, "no paired runs"
  if not p.seed.decided:
    return UNDECIDED, f"{p.seed.n} seed: no interval"
  intervals = [p.seed] + ([p.windows] if p.windows is not None else [])
  above = all(i.lo >= threshold for i in intervals)
  below = all(i.hi <= threshold for i in intervals)
  claimed_side, other_side = (above, below) if claimed == "above" else (below, above)
  if claimed_side and not other_side:
    return SUPPORTED, "every interval on the claimed side"
  if other_side and not claimed_side:
    return CONTRADICTED, "every interval on the other side"
  return UNDECIDED, "an interval contains the threshold"


def fmt_signed(x: float | None, digits: int = 3) -> str:
  """``'+0.046'`` / ``'-0.012'``; ``'—'`` for None or non-finite."""
  if x is None or not math.isfinite(x):
    return "—"
  return f"{x:+.{digits}f}"


def interval_cell(iv: Interval | None, signed: bool = False, digits: int = 3) -> str:
  """``'3.271 [3.137, 3.405] (n=3)'``; ``'3.271 [—] (n=1)'``; ``'—'`` when empty."""
  if iv is None:
    return "—"
  f = (lambda x: fmt_signed(x, digits)) if signed else (lambda x: f"{x:.{digits}f}")
  bounds = f"[{f(iv.lo)}, {f(iv.hi)}]" if iv.decided else "[—]"
  return f"{f(iv.mean)} {bounds} (n={iv.n})"


def window_cell(iv: Interval | None, digits: int = 3) -> str:
  """``'+0.046 ± 0.004 [+0.038, +0.054]'`` (mean ± standard error, 95% interval)."""
  if iv is None:
    return "—"
  return (f"{fmt_signed(iv.mean, digits)} ± {iv.se:.{digits}f} "
          f"[{fmt_signed(iv.lo, digits)}, {fmt_signed(iv.hi, digits)}]")
