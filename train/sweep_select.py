"""Before a sweep launches: cut it to a subset (``attnlab sweep --only``) and check every run's
config (build its settings) so a config error stops the sweep before anything runs."""

from __future__ import annotations

import fnmatch
from typing import Sequence

from attnlab.train import config_loading

_GLOB = set("*?[")


def choices(run) -> dict[str, str]:
  """A run's choices: the ``:arg`` of its spec and its ``--config`` overrides, as strings."""
  _, arg = config_loading.split_spec(run.spec)
  out = dict(config_loading.parse_arg(arg))
  out.update({k: str(v) for k, v in run.overrides})
  return out


def _matches_pairs(run, pairs: dict[str, str]) -> bool:
  have = choices(run)
  for key, value in pairs.items():
    # ``num_heads=4`` matches the override ``model.num_heads=4``.
    found = [v for k, v in have.items() if k == key or k.split(".")[-1] == key]
    if value not in found:
      return False
  return True


def matches(run, pattern: str) -> bool:
  """``pattern`` is ``key=value[,key=value...]`` (all must hold), a glob on the run name
  (``*relational*``), or a substring of it (``layout=hybrid,seed=2``)."""
  pattern = pattern.strip()
  if _GLOB & set(pattern):
    return fnmatch.fnmatchcase(run.name, pattern)
  parts = [p.strip() for p in pattern.split(",") if p.strip()]
  if parts and all("=" in p for p in parts):
    pairs = dict(p.split("=", 1) for p in parts)
    if _matches_pairs(run, {k.strip(): v.strip() for k, v in pairs.items()}):
      return True
  return pattern in run.name


def select(runs: Sequence, only: Sequence[str] | None) -> list:
  """The runs matching any of ``only`` (all runs when ``only`` is empty).

  Raises:
    ConfigError: a pattern matches no run (the message lists some run names).
  """
  runs = list(runs)
  if not only:
    return runs
  for pattern in only:
    if not any(matches(r, pattern) for r in runs):
      names = ", ".join(r.name for r in runs[:4]) + (", ..." if len(runs) > 4 else "")
      raise config_loading.ConfigError(
          f"--only {pattern!r} matches none of the {len(runs)} runs ({names})")
  return [r for r in runs if any(matches(r, p) for p in only)]


def validate(runs: Sequence) -> list[tuple[str, str]]:
  """``(run name, error)`` for every run whose config does not build (empty: all fine)."""
  from attnlab.train import settings
  errors = []
  for r in runs:
    try:
      settings.from_config(config_loading.get_config(r.spec, dict(r.overrides)))
    except config_loading.ConfigError as e:
      errors.append((r.name, str(e)))
  return errors
