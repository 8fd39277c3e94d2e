"""Reading a sweep directory: every directory holding a ``config.json`` is a run."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from attnlab.train.metrics import read_jsonl


@dataclasses.dataclass
class RunRecord:
  """One run directory: its flattened config, metrics rows and final row (None if unfinished)."""

  path: str
  config: dict[str, Any]
  info: dict[str, Any]
  rows: list[dict]
  final: dict | None
  error: str | None = None
  ood: dict | None = None  # the run's ``attnlab ood`` results (``ood.json``), when present

  @property
  def task(self) -> str:
    return str(self.config.get("task", "unknown"))

  def final_metrics(self) -> dict[str, float]:
    if not self.final:
      return {}
    return {k: float(v) for k, v in self.final.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("step", "time_s")}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become tuples."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out


def find_runs(directory: str) -> tuple[list[RunRecord], list[tuple[str, str]]]:
  """Runs under ``directory`` and ``(path, first error line)`` of runs that never started."""
  runs, broken = [], []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    if "config.json" in files:
      dirs[:] = []
      info = _read_config(os.path.join(root, "config.json"))
      if info is None:
        continue
      try:
        rows = read_jsonl(os.path.join(root, "metrics.jsonl"))
      except json.JSONDecodeError:
        rows = []
      finals = [r for r in rows if r.get("final")]
      runs.append(RunRecord(root, flatten(info.get("config", {})), info, rows,
                            finals[-1] if finals else None, _error_line(root),
                            _read_ood(os.path.join(root, "ood.json"))))
    elif "error.txt" in files:
      broken.append((root, _error_line(root) or ""))
      dirs[:] = []
  return runs, broken


def _read_config(path: str) -> dict | None:
  """A run's config.json, or None (with a one-line warning naming the file) when it cannot be
  read: one corrupt run is left out, the rest of the sweep is still reported."""
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    if not isinstance(info, dict) or not isinstance(info.get("config", {}), dict):
      raise ValueError("not a run's config (a JSON object with a 'config' object)")
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    msg = (str(e).strip().splitlines() or [""])[0]
    print(f"warning: skipping the run in {os.path.dirname(path)}: cannot read {path}: "
          f"{type(e).__name__}: {msg}", file=sys.stderr)
    return None
  return info


def _read_ood(path: str) -> dict | None:
  """``attnlab ood``'s JSON in a run directory (None when absent or unreadable, with a
  warning)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      doc = json.load(f)
    if not isinstance(doc, dict):
      raise ValueError("not a JSON object")
    return doc
  except (OSError, ValueError) as e:
    print(f"warning: ignoring {path}: {type(e).__name__}: {e}", file=sys.stderr)
    return None


def _error_line(path: str) -> str | None:
  p = os.path.join(path, "error.txt")
  if not os.path.exists(p):
    return None
  with open(p, errors="replace") as f:
    lines = [l.strip() for l in f if l.strip()]
  last = [l for l in lines if not l.startswith(("command:", "wall_s:", "---"))]
  return " / ".join(dict.fromkeys([lines[0]] + last[-1:])) if lines else "failed"
