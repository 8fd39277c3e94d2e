"""Bimodal outcomes of two-head runs (experiments/icl_regression/README.md, "The H = 2 plateau").

With H ≥ 2 heads, a seed either finds the two-head (±ω, ±μ) solution or stays on the single-head
plateau for thousands of steps; the MSE over seeds is then bimodal and a mean ± interval
describes neither mode. The report counts the seeds that left the plateau and gives each mode's
mean with its n.

Rule (:data:`RULE`): a run has **left the plateau** when its test MSE at the training length L
is below the midpoint between the single-head optimum and the two-head (multi-head) estimator,
both computed in closed form on the same test prompts (the run's ``single_head_optimum_mse@L``
and ``multihead_estimator_mse@L``; the §1.5 Monte Carlo values 0.409 and 0.244 at L = 40 when a
run lacks them). At L = 40 the threshold is about 0.33: plateau runs sit at 0.405-0.409,
escaped ones at 0.245-0.256, and runs caught in transit (0.326-0.375 in
``results_h2_seeds`` and ``plateau_reference_h2.json``) fall on the side they are closer to.

With anisotropic covariates (table A4) those closed forms are the isotropic estimators and give
no threshold, so the rule there (:data:`HEAD_RULE`) reads the heads instead: a run has left the
plateau when its heads' output weights μ_h cancel, |Σ μ_h| / Σ |μ_h| ≤ 0.1 (the two-head end
state of §1.6; a plateau run's heads share one sign, residual ≈ 1).

Both rules describe He et al.'s model, whose heads are bilinear q·k scores with one output weight
μ_h each; they apply only to variants with such heads (`standard`, `memory_efficient`,
`uniform_broadcast`: :func:`attnlab.train.icl_heads.not_bilinear_reason` is None). Another
layer's seeds can also spread (table A2: `adaptive_filter` at H = 4), but nothing says where its
"plateau" ends: the midpoint of two closed forms of the bilinear model is no threshold for it, so
its cells are one mean with its 95% interval over all seeds, which a spread makes wide.

Garg et al.'s task (experiments/icl_garg, :data:`GARG_RULE`) has a plateau of its own: the
training loss sits near the zero predictor's for a seed-dependent number of steps before it
drops, and at the toy length (5,000 steps) some seeds of a variant have dropped and others not.
There the rule holds for every variant and reads only the run's in-distribution result: a run has
**left the plateau** when its normalised error at k = 2d is below the averaging estimator's
(ŵ = mean of y_i x_i, the weakest in-context learner among the reference's baselines) on the same
test prompts (``averaging_nerr@k=2d``, 0.645 at d = 5).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from attnlab.train.report.icl_heads_table import head_values, zero_sum_residual
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import Group, ci_cell

RULE = ("a run of a variant with bilinear q·k heads has left the single-head plateau when its "
        "MSE at the training length is below the midpoint between the single-head optimum and "
        "the two-head estimator computed on the same test prompts (≈ 0.33 at L = 40); other "
        "variants get one mean over all seeds")
HEAD_RULE = ("with anisotropic covariates (no closed-form threshold), a run has left the plateau "
             "when its heads' output weights cancel: |Σ μ_h| / Σ |μ_h| ≤ 0.1")
RESIDUAL_MAX = 0.1
MONTE_CARLO = {40: (0.409, 0.244)}  # (single-head optimum, multi-head estimator), §1.5
GARG_RULE = ("a Garg run has left the plateau when its normalised error at k = 2d is below the "
             "averaging estimator's on the same test prompts")


def applies(config: dict) -> bool:
  """Single-task softmax icl_regression runs with at least two bilinear heads, and every
  icl_garg run (:data:`GARG_RULE`)."""
  from attnlab.train.icl_heads import not_bilinear_reason
  if config.get("task") == "icl_garg":
    return True
  return (config.get("task") == "icl_regression" and config.get("model.num_heads", 1) >= 2
          and config.get("data.kind", "linear") == "linear"
          and config.get("model.normalization", "softmax") == "softmax"
          and not_bilinear_reason(str(config.get("attention.name", "standard"))) is None)


def isotropic(config: dict) -> bool:
  """Whether the run's covariates are isotropic (the closed-form threshold applies)."""
  return config.get("data.covariance", "isotropic") == "isotropic"


def threshold(run: RunRecord) -> float | None:
  """The run's plateau threshold at its training length (None when unknown)."""
  length = int(run.config.get("data.n_context", 40))
  m = run.final_metrics()
  single = m.get(f"single_head_optimum_mse@L={length}")
  multi = m.get(f"multihead_estimator_mse@L={length}")
  if single is None or multi is None:
    single, multi = MONTE_CARLO.get(length, (None, None))
  return None if single is None else (single + multi) / 2


def left_plateau(run: RunRecord) -> bool | None:
  """True / False by :data:`RULE` (isotropic covariates), :data:`HEAD_RULE` (otherwise) or
  :data:`GARG_RULE` (icl_garg runs); None when the run lacks what its rule reads (the MSE at its
  training length, per-head μ, or the errors at k = 2d)."""
  if run.config.get("task") == "icl_garg":
    k = 2 * int(run.config.get("data.d", 0))
    m = run.final_metrics()
    model, averaging = m.get(f"nerr@k={k}"), m.get(f"averaging_nerr@k={k}")
    if model is None or averaging is None or not math.isfinite(model):
      return None
    return model < averaging
  if not isotropic(run.config):
    heads = head_values(run)
    residual = zero_sum_residual(heads[1]) if heads else math.nan
    return residual <= RESIDUAL_MAX if math.isfinite(residual) else None
  length = int(run.config.get("data.n_context", 40))
  mse, t = run.final_metrics().get(f"mse@L={length}"), threshold(run)
  if mse is None or t is None or not math.isfinite(mse):
    return None
  return mse < t


@dataclasses.dataclass
class Modes:
  """The runs of a group split by :func:`left_plateau`."""

  left: list[RunRecord]
  plateau: list[RunRecord]

  @property
  def n(self) -> int:
    return len(self.left) + len(self.plateau)

  @property
  def bimodal(self) -> bool:
    return bool(self.left) and bool(self.plateau)

  def fraction(self) -> str:
    return f"{len(self.left)}/{self.n}"


def modes(group: Group) -> Modes | None:
  """The group's plateau split, or None when :func:`applies` is false or no run is classified."""
  if not applies(group.config):
    return None
  left, stuck = [], []
  for r in group.runs:
    flag = left_plateau(r)
    if flag is not None:
      (left if flag else stuck).append(r)
  return Modes(left, stuck) if left or stuck else None


def _values(runs: Sequence[RunRecord], metric: str) -> list[float]:
  return [r.final_metrics()[metric] for r in runs if metric in r.final_metrics()]


def cell(group: Group, metric: str, m: Modes | None) -> str:
  """The group's cell: mean ± 95% t-interval (n) for one mode; for a bimodal group each
  mode's mean with its n (``left 0.250 (n=2) / plateau 0.406 (n=3)``)."""
  if m is None or not m.bimodal:
    return ci_cell(group.values(metric))
  return (f"left {ci_cell(_values(m.left, metric))} / "
          f"plateau {ci_cell(_values(m.plateau, metric))}")


def mode_group(group: Group, m: Modes | None) -> tuple[Group, str]:
  """``(group, note)``: the runs an acceptance band is checked on (those that left the plateau
  when the group is bimodal) and a note saying so."""
  if m is None or not m.bimodal:
    return group, ""
  return (Group(group.config, m.left, group.label),
          f" (the {len(m.left)} of {m.n} seeds that left the plateau)")
