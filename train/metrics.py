"""Run outputs: config.json, metrics.jsonl (one JSON object per logged step), TensorBoard
events, and a progress bar with steps/s and ETA on a terminal. Only process 0 writes."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax


def _clean(value):
  """JSON-safe numbers: NaN/inf become None (metrics.jsonl never holds NaN)."""
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricsError(ValueError):
  """metrics.jsonl is damaged somewhere other than its last line."""


def read_jsonl(path: str) -> list[dict]:
  """The rows of a JSON-lines file. A last line that does not parse (what a full disk, a
  power loss or a kill during a write leaves) is ignored; a bad line elsewhere raises
  :class:`MetricsError` naming the line."""
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except (json.JSONDecodeError, UnicodeDecodeError):
      if not any(l.strip() for l in lines[i + 1:]):  # a partial last line
        break
      raise MetricsError(f"{path}: line {i + 1} is not JSON; remove that line and rerun") \
          from None
  return rows


class MetricsWriter:
  """Appends metrics rows; on resume drops rows past the restored step (so a resumed run's file
  equals an uninterrupted run's) and purges the TensorBoard events past it the same way.

  Each row's ``time_s`` is the run's training wall time up to that row, summed over attempts: a
  resumed process continues from the last row it keeps (the steps it replays count once; the
  time a killed attempt spent after that row, and between attempts, is not counted)."""

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.start = time.time()
    self._tb = None
    self._tb_after = resume_step  # steps up to the restored one are in the event files already
    if not self.enabled:
      return
    rows = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step
            and not r.get("final")]
    if rows:  # continue the kept rows' clock (time_s of the last kept row)
      self.start -= float(rows[-1].get("time_s") or 0.0)
    with open(self.path + ".tmp", "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(self.path + ".tmp", self.path)
    try:
      from tensorboardX import SummaryWriter
      # On resume, steps after the restored one are trained (and logged) again: purge_step
      # writes a SessionLog.START at resume_step + 1, and TensorBoard drops the earlier
      # attempt's events from that step on, so each step is shown once (the replayed value).
      self._tb = SummaryWriter(os.path.join(workdir, "tb"),
                               purge_step=resume_step + 1 if resume_step > 0 else None)
    except ImportError:  # TensorBoard events are optional
      self._tb = None

  def write(self, step: int, split: str, metrics: dict, **extra) -> dict:
    row = {"step": int(step), "time_s": round(time.time() - self.start, 3), "split": split}
    row.update({k: _clean(v) for k, v in metrics.items()})
    row.update(extra)
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
      if self._tb is not None and step > self._tb_after:
        for k, v in metrics.items():
          v = _clean(v)
          if isinstance(v, (int, float)):
            self._tb.add_scalar(f"{split}/{k}", v, step)
    return row

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """tqdm bar (steps/s, ETA) when stderr is a terminal with a size; otherwise plain log lines.
  :meth:`message` prints evaluation results and the summary either way."""

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self.bar = None
    if enabled and sys.stderr.isatty() and min(_terminal_size()) > 0:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
    self.enabled = enabled
    self.t0, self.s0, self.total = time.time(), initial, total

  def update(self, step: int, metrics: dict | None = None):
    if self.bar is not None:
      self.bar.update(step - self.bar.n)
      if metrics:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()
                              if isinstance(v, float)}, refresh=False)
    elif self.enabled and metrics is not None:
      rate = (step - self.s0) / max(time.time() - self.t0, 1e-9)
      eta = (self.total - step) / rate if rate > 0 else float("inf")
      shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
      print(f"step {step}/{self.total} {shown} ({rate:.2f} steps/s, ETA {eta:.0f}s)",
            flush=True)

  def message(self, text: str):
    """A line above the bar on a terminal (tqdm.write), else a plain line on stdout."""
    if not self.enabled:
      return
    if self.bar is not None:
      self.bar.write(text)
    else:
      print(text, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def _terminal_size() -> tuple[int, int]:
  """(columns, lines) of the terminal on stderr; a terminal that reports 0 of either (``script``,
  some containers and CI runners) gets plain lines: tqdm would print nothing there."""
  try:
    size = os.get_terminal_size(sys.stderr.fileno())
  except (OSError, ValueError):
    return 0, 0
  return size.columns, size.lines


def format_metrics(metrics: dict, limit: int = 12) -> str:
  """``key=value`` pairs (4 significant digits) of the numeric metrics, at most ``limit``."""
  items = [(k, v) for k, v in metrics.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)]
  text = " ".join(f"{k}={v:.4g}" for k, v in items[:limit])
  return text + (f" (+{len(items) - limit} more in metrics.jsonl)" if len(items) > limit else "")
