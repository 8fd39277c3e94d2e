"""Seed-paired differences of each variant to `standard` in the in-context regression tables
(table A2): the same seeds draw the same training prompts and every run of a table is scored on
the same test prompts, so ``variant − standard`` per seed removes the noise both share."""

from __future__ import annotations

from typing import Callable, Sequence

from attnlab.train.report import paired
from attnlab.train.report.tables import Group, markdown_table


def _setting(config: dict) -> tuple:
  """The config without the attention fields: what a variant and its `standard` share."""
  return tuple(sorted((k, str(v)) for k, v in config.items() if not k.startswith("attention.")))


def _is_standard(config: dict) -> bool:
  return config.get("attention.name", "standard") == "standard"


def with_standard(groups: Sequence[Group]) -> list[tuple[Group, Group]]:
  """``(variant group, its `standard` group)`` for every non-`standard` group that has a
  `standard` group of the same setting (the config without its attention fields)."""
  refs = {_setting(g.config): g for g in groups if _is_standard(g.config)}
  return [(g, refs[_setting(g.config)]) for g in groups
          if not _is_standard(g.config) and _setting(g.config) in refs]


def seed_difference(runs: Sequence, ref_runs: Sequence,
                    value: Callable) -> paired.Interval | None:
  """Mean and 95% t-interval of ``value(run) − value(ref_run)`` over the seeds both sets
  have (None where no seed pairs)."""
  def by_seed(rs):
    return {r.config.get("seed"): v for r in rs for v in [value(r)] if v is not None}
  a, b = by_seed(runs), by_seed(ref_runs)
  return paired.t_interval([a[s] - b[s] for s in sorted(set(a) & set(b), key=str)])


def reading(iv: paired.Interval | None) -> str:
  """``lower`` / ``higher`` when the 95% interval excludes 0, else ``not distinguishable``."""
  if iv is None or not iv.decided:
    return "not decided (fewer than 2 seeds)"
  if iv.hi < 0:
    return "lower"
  if iv.lo > 0:
    return "higher"
  return "not distinguishable"


def variant_differences(groups: Sequence[Group], lengths: dict[int, str]) -> str | None:
  """Markdown table: per variant group with a `standard` group of the same setting, the
  seed-paired MSE difference at every L and its reading at the training length; None when no
  group pairs."""
  rows = []
  for g, ref in with_standard(groups):
    cells = [seed_difference(g.runs, ref.runs, lambda r, m=metric: r.final_metrics().get(m))
             for metric in lengths.values()]
    train_len = int(g.config.get("data.n_context", 40))
    at_train = dict(zip(lengths, cells)).get(train_len)
    rows.append([g.label] + [paired.interval_cell(c, signed=True) for c in cells]
                + [reading(at_train)])
  if not rows:
    return None
  header = (["variant − `standard`"] + [f"Δ MSE@L={l}" for l in lengths]
            + ["at the training length"])
  return "\n".join([
      markdown_table(header, rows), "",
      "Seed-paired differences to `standard` of the same setting (same seeds, so the same "
      "training prompts, and the same test prompts): mean [95% t-interval] (n = seeds). At the "
      "training length: lower / higher when the interval excludes 0, else not "
      "distinguishable. A bimodal group's differences mix its modes (see the plateau column)."])
