"""Which test set each run was scored on, so that a table never averages over different ones.

A run's test set is identified by the fingerprint its task writes into the final metrics row
(``test_set_sha256``: a SHA-256 of the test prompts, :func:`fingerprint`) and, for runs written
before that existed, by its closed-form reference values (``<name>_mse@L=…``,
``<name>_nerr@k=…``): these are functions of the test prompts alone, so two runs whose zero
predictor (or least squares) scores differ were not scored on the same prompts.

:func:`split_by_test_set` splits a group (one setting, several seeds) whose runs saw different
test sets into one group per test set, labelled with the test set and the run names, and returns
the warning lines the report prints; :func:`reference_row_sets` gives one set of reference rows
per test set instead of their mean over runs.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from attnlab.train.data_icl import fingerprint  # noqa: F401  (re-exported)
from attnlab.train.report.runs import RunRecord
from attnlab.train.report.tables import Group

FINGERPRINT_KEY = "test_set_sha256"
REFERENCE_PATTERN = re.compile(r"^[a-z0-9_]+_(mse|nerr)(_task\d+)?@[Lk]=\d+$")
REFERENCE_RTOL = 1e-4
"""Reference values within this relative difference count as the same test set (they are
recomputed in float32 on each machine; different test sets of 50,000 prompts differ by ~1e-3)."""


def _reference_values(run: RunRecord) -> dict[str, float]:
  return {k: v for k, v in run.final_metrics().items() if REFERENCE_PATTERN.match(k)
          and not k.startswith(("mse", "nerr"))}


def _same(a: RunRecord, b: RunRecord) -> bool:
  fa, fb = (r.final.get(FINGERPRINT_KEY) if r.final else None for r in (a, b))
  if fa and fb and fa != fb:
    return False
  ra, rb = _reference_values(a), _reference_values(b)
  return all(abs(ra[k] - rb[k]) <= REFERENCE_RTOL * max(abs(ra[k]), abs(rb[k]), 1e-12)
             for k in set(ra) & set(rb))


def cluster_ids(runs: Sequence[RunRecord]) -> dict[str, str]:
  """``{run path: "T1" | "T2" | …}``: runs clustered by test set (fingerprint, else reference
  values), T1 the largest cluster."""
  clusters: list[list[RunRecord]] = []
  for r in runs:
    for c in clusters:
      if _same(c[0], r):
        c.append(r)
        break
    else:
      clusters.append([r])
  clusters.sort(key=lambda c: -len(c))
  return {r.path: f"T{i + 1}" for i, c in enumerate(clusters) for r in c}


def describe(runs: Sequence[RunRecord]) -> str:
  """``sha256 0123…`` of the runs' fingerprint, or the zero predictor's / least squares' value
  at the first length when no run recorded one."""
  fps = sorted({r.final.get(FINGERPRINT_KEY) for r in runs if r.final
                and r.final.get(FINGERPRINT_KEY)})
  if fps:
    return "sha256 " + ", ".join(fps)
  refs = _reference_values(runs[0]) if runs else {}
  for prefix in ("zero_mse@", "least_squares_nerr@k=1", "zero_"):
    keys = sorted(k for k in refs if k.startswith(prefix))
    if keys:
      return f"no fingerprint; {keys[0]} = {refs[keys[0]]:.4f}"
  return "no fingerprint"


def run_name(run: RunRecord) -> str:
  """The run directory's name (what the report prints to identify a run)."""
  return os.path.basename(os.path.normpath(run.path))


def split_by_test_set(groups: Sequence[Group]) -> tuple[list[Group], dict[str, str], list[str]]:
  """``(groups, ids, warnings)``: every group whose runs used different test sets is split
  into one group per test set, labelled ``… [test set T2: run names]``; ``ids`` maps run paths
  to test-set ids; ``warnings`` are bold Markdown bullets naming the runs (empty when every
  group is on one test set)."""
  runs = [r for g in groups for r in g.runs]
  ids = cluster_ids(runs)
  out, warnings = [], []
  for g in groups:
    by_id: dict[str, list[RunRecord]] = {}
    for r in g.runs:
      by_id.setdefault(ids[r.path], []).append(r)
    if len(by_id) == 1:
      out.append(g)
      continue
    parts = []
    for tid in sorted(by_id):
      names = ", ".join(run_name(r) for r in by_id[tid])
      out.append(Group(g.config, by_id[tid], f"{g.label} [test set {tid}: {names}]"))
      parts.append(f"{tid} ({describe(by_id[tid])}): {names}")
    warnings.append(f"- **TEST SETS DIFFER within {g.label}**: " + "; ".join(parts)
                    + ". Its rows are split by test set, not averaged; rerun the odd runs "
                    "with the current code.")
  return out, ids, warnings


def reference_row_sets(groups: Sequence[Group], ids: dict[str, str]) -> list[tuple[str, list]]:
  """``[(suffix, runs)]``: one entry per test set among ``groups`` (suffix ``""`` when there is
  only one, else `` [test set T2]``); reference rows are computed from each entry's runs."""
  by_id: dict[str, list[RunRecord]] = {}
  for g in groups:
    for r in g.runs:
      by_id.setdefault(ids.get(r.path, "T1"), []).append(r)
  if len(by_id) <= 1:
    return [("", [r for rs in by_id.values() for r in rs])]
  return [(f" [test set {tid}]", by_id[tid]) for tid in sorted(by_id)]


def reference_value(runs: Sequence[RunRecord], key: str) -> float | None:
  """A reference metric of runs that share one test set (their mean: equal up to float32)."""
  v = [r.final_metrics()[key] for r in runs if key in r.final_metrics()]
  return float(np.mean(v)) if v else None


def note(groups: Sequence[Group], ids: dict[str, str]) -> str:
  """One sentence naming the test set(s) of a table."""
  sets = reference_row_sets(groups, ids)
  if len(sets) == 1:
    return f"All runs of this table were scored on one test set ({describe(sets[0][1])})."
  parts = []
  for i, (suffix, rs) in enumerate(sets):
    who = (f"{len(rs)} runs" if i == 0 and len(rs) > 3
           else ", ".join(run_name(r) for r in rs))
    parts.append(f"{suffix.strip(' []')} = {describe(rs)} ({who})")
  return (f"**The runs of this table were scored on {len(sets)} different test sets**: "
          + "; ".join(parts) + ". Reference rows are given per test set.")
