"""Grouping runs by setting (all but the seed), labels, cells and Markdown tables.

Runs are grouped by their whole config except the seed (and bookkeeping such as logging and
checkpoint intervals); each cell is ``mean ± std (n=seeds)`` with ddof = 1 (``±—`` for one
seed), or with :func:`ci_cell` the mean ± the 95% t-interval half-width.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from attnlab.train.report.runs import RunRecord

IGNORED = ("seed", "log_every", "eval_every")
IGNORED_PREFIXES = ("checkpoint.", "mesh.")
VARIANT_KEYS = ("attention.name", "attention.impl", "attention.options")
ALIASES = {"model.num_heads": "H", "data.covariance": "covariance"}

def _ignored(key: str, extra: Sequence[str] = ()) -> bool:
  return (key in IGNORED or key.startswith(IGNORED_PREFIXES)
          or any(key == e or key.startswith(e + ".") for e in extra))


def setting_key(config: dict, exclude: Sequence[str] = ()) -> str:
  """Canonical text of ``config`` without the seed, bookkeeping and ``exclude`` keys."""
  return json.dumps({k: v for k, v in config.items() if not _ignored(k, exclude)},
                    sort_keys=True, default=str)


@dataclasses.dataclass
class Group:
  """Runs sharing one setting (all but the seed)."""

  config: dict[str, Any]
  runs: list[RunRecord]
  label: str = ""

  def values(self, metric: str) -> list[float]:
    return [r.final_metrics()[metric] for r in self.runs if metric in r.final_metrics()]

  def mean(self, metric: str) -> float | None:
    v = self.values(metric)
    return float(np.mean(v)) if v else None


def _sort_value(v):
  return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def group_runs(runs: Iterable[RunRecord], exclude: Sequence[str] = (),
               default_keys: Sequence[str] = ("attention.name",)) -> list[Group]:
  """Finished runs grouped by :func:`setting_key`, labelled by the keys that vary (by
  ``default_keys`` when nothing varies)."""
  groups: dict[str, Group] = {}
  for r in runs:
    if r.final is None:
      continue
    groups.setdefault(setting_key(r.config, exclude), Group(r.config, [])).runs.append(r)
  out = list(groups.values())
  varying = varying_keys([g.config for g in out], exclude)
  if not varying and out:
    varying = [k for k in default_keys if k in out[0].config]
  for g in out:
    g.label = label(g.config, varying)
  out.sort(key=lambda g: [(k != "attention.name" or g.config.get(k) != "standard",
                           g.config.get(k) not in (None, False, "none"),
                           _sort_value(g.config.get(k))) for k in varying])
  return out


def varying_keys(configs: Sequence[dict], exclude: Sequence[str] = ()) -> list[str]:
  """Keys whose value differs between configs (``attention.name`` first, impl dropped when the
  labels stay distinct without it)."""
  keys = sorted({k for c in configs for k in c if not _ignored(k, exclude)})
  vary = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
  vary.sort(key=lambda k: (k != "attention.name", k != "attention.layout", k))
  if "attention.impl" in vary:
    rest = [k for k in vary if k != "attention.impl"]
    if len({tuple(json.dumps(c.get(k), default=str) for k in rest) for c in configs}) == len(
        {tuple(json.dumps(c.get(k), default=str) for k in vary) for c in configs}):
      vary = rest
  # Options that follow from the variant (each variant has its own fields) are not labels.
  vary = [k for k in vary if not (k.startswith("attention.options.")
                                  and "attention.name" in vary and _follows_name(configs, k))]
  return vary


def _follows_name(configs: Sequence[dict], key: str) -> bool:
  by_name: dict[str, set] = {}
  for c in configs:
    by_name.setdefault(c.get("attention.name"), set()).add(json.dumps(c.get(key), default=str))
  return all(len(v) == 1 for v in by_name.values())


def _option_default(name: str | None, option: str):
  """The registry default of a variant's option (None when unknown)."""
  from attnlab.models import attention
  cls = attention.REGISTRY.get(name)
  fields = {f.name: f.default for f in dataclasses.fields(cls.Options)} if cls else {}
  return fields.get(option)


def label(config: dict, varying: Sequence[str]) -> str:
  """``'`relational`, hybrid, H=2'`` from the varying keys of a config. A key switched off
  (``none``, None, False) is left out: ``cb_position=none`` is the plain model."""
  parts = []
  for k in varying:
    v = config.get(k)
    if k.startswith("attention.options.") and k.count(".") == 2:
      default = _option_default(config.get("attention.name"), k.split(".")[-1])
      if v is None or v == default:  # the variant's own default is the plain layer
        continue
      parts.append(f"{k.split('.')[-1]}={v}")
      continue
    if v is None or v is False or v == "none":
      continue
    if k == "attention.name":
      parts.append(f"`{v}`")
    elif k == "attention.layout":
      parts.append(str(v))
    else:
      parts.append(f"{ALIASES.get(k, k.split('.')[-1] if k.count('.') < 2 else k)}={v}")
  return ", ".join(parts) or "all runs"


def fmt(x: float | None, digits: int = 3) -> str:
  return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def cell(values: Sequence[float], digits: int = 3) -> str:
  """``'0.245 ± 0.003 (n=3)'`` (ddof = 1); ``'0.245 ±— (n=1)'``; ``'—'`` when empty."""
  v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
  if not v:
    return "—"
  if len(v) == 1:
    return f"{v[0]:.{digits}f} ±— (n=1)"
  return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f} (n={len(v)})"


def t_half_width(values: Sequence[float]) -> float:
  """Half-width of the two-sided 95% t-interval of the mean (``nan`` for fewer than 2 values);
  the quantile is :func:`attnlab.train.report.paired.t975`."""
  from attnlab.train.report.paired import t975
  v = np.asarray([float(x) for x in values], np.float64)
  if len(v) < 2:
    return float("nan")
  return float(t975(len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def ci_cell(values: Sequence[float], digits: int = 3) -> str:
  """``'0.245 ± 0.007 (n=3)'``: mean ± the 95% t-interval half-width over seeds;
  ``'0.245 (n=1)'``; ``'—'`` when empty."""
  v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
  if not v:
    return "—"
  if len(v) == 1:
    return f"{v[0]:.{digits}f} (n=1)"
  return f"{np.mean(v):.{digits}f} ± {t_half_width(v):.{digits}f} (n={len(v)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def check(ok: bool, text: str) -> str:
  """A bullet of the acceptance list: ``- text: ok`` or ``- text: **FAIL**``."""
  return f"- {text}: {'ok' if ok else '**FAIL**'}"


def trained_steps(*groups: Group | None) -> int | None:
  """The fewest training steps (``steps`` of the config) among the runs of ``groups``."""
  steps = [int(r.config["steps"]) for g in groups if g is not None for r in g.runs
           if isinstance(r.config.get("steps"), (int, float))]
  return min(steps) if steps else None


def band_check(ok: bool, text: str, assumes_steps: int, *groups: Group | None) -> str:
  """:func:`check` of an acceptance band that assumes ``assumes_steps`` of training: for runs
  trained for fewer steps the band says nothing, and the line says so instead of ok / FAIL."""
  steps = trained_steps(*groups)
  if steps is not None and steps < assumes_steps:
    return f"- {text}: not applicable ({steps} steps < {assumes_steps} the band assumes)"
  return check(ok, text)


def metric_index(metrics: Iterable[str], pattern: str) -> dict:
  """``{parameter: key}`` for keys matching ``pattern`` (one integer group)."""
  out = {}
  for k in metrics:
    m = re.fullmatch(pattern, k)
    if m:
      out[int(m.group(1))] = k
  return dict(sorted(out.items()))


def all_final_keys(groups: Sequence[Group]) -> set[str]:
  return {k for g in groups for r in g.runs for k in r.final_metrics()}


def reference_means(groups: Sequence[Group], key: str) -> float | None:
  v = [r.final_metrics()[key] for g in groups for r in g.runs if key in r.final_metrics()]
  return float(np.mean(v)) if v else None


def _twin(group: Group, groups: Sequence[Group], name: str,
          ignore: Sequence[str] = ()) -> Group | None:
  """The group with attention ``name`` and otherwise the same setting as ``group``."""
  ignore = tuple(ignore) or VARIANT_KEYS
  key = setting_key(group.config, ignore)
  for g in groups:
    if g.config.get("attention.name") == name and setting_key(g.config, ignore) == key:
      return g
  return None


def _equal_printed(a: float | None, b: float | None, digits: int = 3) -> bool:
  """Equal at the printed precision: within half a unit of the last printed digit (a strict
  comparison of the rounded text would fail on ties such as 5.56147 vs 5.56155)."""
  return a is not None and b is not None and abs(a - b) < 0.5 * 10 ** -digits


def memory_efficient_checks(groups: Sequence[Group], metrics: Sequence[str],
                            trained_runs_decide: bool = True) -> list[str]:
  """One line per `memory_efficient` group: its trained runs against `standard`'s of the same
  seeds, equal at the printed precision in every metric. With ``trained_runs_decide=False``
  (a same-parameter check decides instead, see :func:`same_parameter_check`) the line reports
  the comparison without ok / FAIL: float32 reordering carried through a long training run may
  move the last digit without any difference in the math."""
  lines = []
  for g in groups:
    if g.config.get("attention.name") != "memory_efficient":
      continue
    twin = _twin(g, groups, "standard")
    if twin is None:
      continue
    # Same seeds on both sides: the claim is per seed ("same seed, same numbers").
    seeds = ({r.config.get("seed") for r in g.runs}
             & {r.config.get("seed") for r in twin.runs})
    mine = Group(g.config, [r for r in g.runs if r.config.get("seed") in seeds])
    theirs = Group(twin.config, [r for r in twin.runs if r.config.get("seed") in seeds])
    pairs = [(m, mine.mean(m), theirs.mean(m)) for m in metrics
             if mine.mean(m) is not None and theirs.mean(m) is not None]
    bad = [f"{m}: {fmt(a)} vs {fmt(b)}" for m, a, b in pairs if not _equal_printed(a, b)]
    worst = max((abs(a - b) for _, a, b in pairs), default=0.0)
    text = (f"`memory_efficient` = `standard` ({g.label}; seeds "
            f"{sorted(seeds, key=str)}; {len(pairs)} metrics, largest |Δ| {worst:.1e}"
            + (f"; differ: {', '.join(bad)}" if bad else "") + ")")
    if trained_runs_decide:
      lines.append(check(bool(pairs) and not bad, text))
    else:
      lines.append(f"- trained runs, {text}: "
                   + ("equal" if pairs and not bad else "not equal at the printed precision "
                      "(float32 rounding carried through training; the same-parameter check "
                      "decides)"))
  return lines


SAME_PARAMETER_CHECK = "memory_efficient_check.json"
"""Written by experiments/lm_ablation/check_memory_efficient.py into a results folder: trained
checkpoints evaluated with both kernels on the same parameters."""
SAME_PARAMETER_TOL = 5e-4
"""Largest |difference| in bits per byte the same-parameter check accepts: below half a unit of
the tables' third decimal."""


def same_parameter_check(directory: str) -> list[str]:
  """The acceptance line of ``directory``'s :data:`SAME_PARAMETER_CHECK` (none if absent):
  every checkpoint listed there gives the same validation bpb through `standard` and
  `memory_efficient` within :data:`SAME_PARAMETER_TOL`."""
  path = os.path.join(directory, SAME_PARAMETER_CHECK)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = json.load(f)["runs"]
  worst = max((abs(r["standard"] - r["memory_efficient"]) for r in rows), default=math.inf)
  return [check(bool(rows) and worst < SAME_PARAMETER_TOL,
                f"`memory_efficient` = `standard` on the same parameters ({len(rows)} trained "
                f"checkpoints evaluated with both kernels, {SAME_PARAMETER_CHECK}; largest "
                f"|Δ| {worst:.1e} bpb)")]


def t_interval(values: Sequence[float]) -> tuple[float, float]:
  """``(mean, half-width)`` of the two-sided 95% Student-t interval over seeds; the half-width is
  NaN for fewer than two values (and both are NaN for none)."""
  v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
  if not v:
    return math.nan, math.nan
  return float(np.mean(v)), t_half_width(v)

