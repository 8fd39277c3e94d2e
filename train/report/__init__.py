"""``attnlab report DIR``: tables and plots from the runs under a sweep directory.

Every directory under DIR holding a ``config.json`` is a run; its ``metrics.jsonl`` last
``"final": true`` row gives its numbers. Runs are grouped by their whole config except the seed
(and bookkeeping such as logging and checkpoint intervals); each table row is a group, each cell
``mean ± std (n=seeds)`` with ddof = 1 (``±—`` for a single seed); the in-context sections give
the mean ± the 95% t-interval half-width (:func:`.tables.ci_cell`), never average over runs scored
on different test sets (:mod:`.testsets`) and give each mode of a bimodal two-head setting
(:mod:`.icl_plateau`). One section per study (the
``task`` of config.json):

* ``icl_regression`` (experiments/icl_regression/README.md §1): test MSE at each prompt length L
  (table A1/A2), the closed-form predictors the runs carry as italic reference rows, the
  published trained rows, the §1.5 acceptance bands, per-run ω_h / μ_h (:mod:`.icl_heads_table`),
  table A6 from the runs' ``ood.json`` (:mod:`.ood`); plot MSE vs L.
* ``lm`` (§3.2): table L1, variants × {Uniform, Hybrid, Skip} validation bits/byte with the
  perplexity ratio to ``standard`` (2^Δbpb), parameters and train tokens/s; plot val bpb vs step;
  tables L1/L2 again with 95% intervals over seeds, seed- and window-paired differences to
  ``standard`` and the verdicts on the paper's claims (:mod:`.paired`, :mod:`.claims`); the
  attention diagnostics of runs with ``diagnostics.json`` (:mod:`.diagnostics`).
* ``icl_garg`` (§2): normalised error at k ∈ {d/2, d−1, d, 2d} (table B1) with least squares,
  3-NN and averaging on the same prompts, table B2 from the runs' ``ood.json``; plot normalised
  error vs k.
* ``mqar``, ``match_to_sample``, ``afa_spiral`` (experiments/mqar, experiments/match_to_sample,
  experiments/afa_spiral): each variant's own claim; tables and plots with the mean and the 95%
  t-interval over seeds.

Acceptance bands are printed under their table, each ``ok`` or ``**FAIL**``, or "not applicable
(N steps < M the band assumes)" for runs shorter than the band assumes. The Markdown goes
to stdout and ``DIR/report.md``; PNG plots (150 dpi) go to DIR. A run whose config.json cannot be
read is left out with a one-line warning on stderr.

Modules: :mod:`.runs` (reading run directories), :mod:`.tables` (grouping, labels, cells,
Markdown), :mod:`.plots` (shared plot helpers), one per study section (:mod:`.icl_regression`,
:mod:`.lm`, :mod:`.icl_garg`, each with its published numbers and bands); this module
dispatches the sections (:data:`SECTIONS`).
"""

from __future__ import annotations

import os
from typing import Sequence

from attnlab.train.report.icl_garg import icl_garg_section
from attnlab.train.report.icl_regression import icl_regression_section
from attnlab.train.report.lm import lm_section
from attnlab.train.report.afa_spiral import afa_spiral_section
from attnlab.train.report.match_to_sample import match_to_sample_section
from attnlab.train.report.mqar import mqar_section
from attnlab.train.report.runs import RunRecord, find_runs, flatten
from attnlab.train.report.tables import (
    Group, _equal_printed, all_final_keys, cell, check, fmt, group_runs, label, markdown_table,
    setting_key, varying_keys)

__all__ = ["RunRecord", "Group", "SECTIONS", "build_report", "cell", "check", "find_runs",
           "flatten", "fmt", "generic_section", "group_runs", "icl_garg_section",
           "icl_regression_section", "label", "lm_section", "main", "markdown_table",
           "setting_key", "varying_keys", "_equal_printed"]


def generic_section(task: str, runs: Sequence[RunRecord], directory: str) -> tuple[str, list]:
  """Any other task: every final metric, one row per setting."""
  groups = group_runs(runs)
  keys = sorted(all_final_keys(groups))
  rows = [[g.label] + [cell(g.values(k)) for k in keys] for g in groups]
  return "\n".join([f"## {task}", "", markdown_table(["setting"] + keys, rows)]), []


SECTIONS = {"icl_regression": icl_regression_section, "lm": lm_section,
            "icl_garg": icl_garg_section, "mqar": mqar_section,
            "match_to_sample": match_to_sample_section, "afa_spiral": afa_spiral_section}


# -- entry point -----------------------------------------------------------------------------


def build_report(directory: str) -> tuple[str, list[str]]:
  """The Markdown report and the PNG files written under ``directory``."""
  runs, broken = find_runs(directory)
  if not runs and not broken:
    raise FileNotFoundError(f"no runs (config.json) under {directory!r}")
  finished = [r for r in runs if r.final is not None]
  wall = sum(float(r.final.get("time_s", 0)) for r in finished)
  devices = sorted({str(r.info.get("device", "?")) for r in runs})
  text = [f"# Report: {directory}", "",
          f"{len(runs) + len(broken)} runs: {len(finished)} finished, "
          f"{len(runs) - len(finished)} unfinished, {len(broken)} failed before starting. "
          f"Training wall time of the finished runs: {wall:,.0f} s (sum over runs) on "
          f"{', '.join(devices) or '?'}."]
  problems = [(r.path, r.error or "unfinished") for r in runs if r.final is None] + broken
  if problems:
    text += [""] + [f"- `{os.path.relpath(p, directory)}`: {e}" for p, e in problems]
  plots: list[str] = []
  for task in sorted({r.task for r in finished}):
    task_runs = [r for r in finished if r.task == task]
    section, files = SECTIONS.get(task, lambda rs, d: generic_section(task, rs, d))(
        task_runs, directory)
    text += ["", section]
    if files:
      text += [""] + [f"![{f}]({f})" for f in files]
    plots += files
  return "\n".join(text) + "\n", plots


def main(args) -> int:
  """``attnlab report DIR``: print the report and write ``DIR/report.md`` and the plots."""
  directory = args.directory
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory!r} is not a directory")
  text, _ = build_report(directory)
  with open(os.path.join(directory, "report.md"), "w") as f:
    f.write(text)
  print(text)
  return 0
