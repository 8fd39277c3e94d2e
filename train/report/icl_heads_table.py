"""Per-head ω_h / μ_h columns of table A2 (experiments/icl_regression/README.md §1.6, §1.10).

One row per run (heads are not comparable across seeds: any permutation and sign pairing is a
solution, so they are never averaged): ω_h and μ_h from the final metrics row (logged by
:mod:`attnlab.train.icl_heads` for layers with bilinear q·k heads), the zero-sum residual
|Σμ| / Σ|μ| and the active heads (|μ_h| > 0.05 max|μ|). Variants without bilinear heads get the
reason in place of the numbers (:func:`attnlab.train.icl_heads.not_bilinear_reason`).
"""

from __future__ import annotations

import re
from typing import Sequence

from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import Group, markdown_table

ACTIVE_FRAC = 0.05  # experiments/icl_regression/README.md §1.6


def head_values(run: RunRecord) -> tuple[list[float], list[float]] | None:
  """``(omega_h, mu_h)`` in head order from the final row, None when not logged."""
  m = run.final_metrics()
  heads = sorted(int(k.split("=")[1]) for k in m if re.fullmatch(r"omega@h=\d+", k))
  if not heads or any(f"mu@h={h}" not in m for h in heads):
    return None
  return [m[f"omega@h={h}"] for h in heads], [m[f"mu@h={h}"] for h in heads]


def zero_sum_residual(mu: Sequence[float]) -> float:
  """|Σ μ_h| / Σ |μ_h| (NaN when every μ_h is 0): 0 for heads that cancel, 1 for one sign."""
  total = sum(abs(u) for u in mu)
  return abs(sum(mu)) / total if total else float("nan")


def _signed(values: Sequence[float], digits: int) -> str:
  return " / ".join(f"{v:+.{digits}f}".replace("-", "−") for v in values)


def heads_table(groups: Sequence[Group]) -> str | None:
  """Markdown table of per-run head scores for the single-task groups, or None when no group
  is single-task."""
  from attnlab.train.icl_heads import not_bilinear_reason
  rows = []
  for g in groups:
    if g.config.get("data.kind", "linear") != "linear":
      continue
    name = str(g.config.get("attention.name", "standard"))
    reason = not_bilinear_reason(name)
    for r in sorted(g.runs, key=lambda r: (str(r.config.get("seed")), r.path)):
      seed = r.config.get("seed")
      hv = head_values(r)
      if hv is None:
        why = f"n/a: {reason}" if reason else "not logged (a run from before per-head logging)"
        rows.append([g.label, str(seed), why, "", "", ""])
        continue
      omega, mu = hv
      biggest = max(abs(u) for u in mu) or 1.0
      active = sum(abs(u) > ACTIVE_FRAC * biggest for u in mu)
      residual = zero_sum_residual(mu)
      rows.append([g.label, str(seed), _signed(omega, 3), _signed(mu, 2), f"{residual:.3f}",
                   f"{active} of {len(mu)}"])
  if not rows or not any(head_values(r) for g in groups for r in g.runs):
    return None  # nothing logged (runs from before per-head logging)
  header = ["setting", "seed", "ω_h (÷ sqrt(d+2))", "μ_h", "zero-sum residual", "active heads"]
  return "\n".join([
      markdown_table(header, rows), "",
      "Per-head scores at the end of training, one row per run (heads are not averaged over "
      "seeds: their order and signs are arbitrary). ω_h: mean of the first d diagonal entries "
      "of M_h = Q^hᵀK^h ÷ sqrt(d + 2); μ_h: the OV entry that carries y to the prediction; "
      f"active: |μ_h| > {ACTIVE_FRAC} max|μ|. Published end state (§1.6): ω ≈ ±0.13, "
      "μ ≈ ±3.45…3.5, two active heads of opposite sign, residual ≤ 0.1."])

