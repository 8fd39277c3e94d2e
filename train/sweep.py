"""``attnlab sweep``: expand a config's ``sweep(add)`` into runs and launch them.

Each ``add(**kw)`` call is one run. The key ``arg`` holds structural choices
(``"attention=relational,layout=hybrid"``) merged into the ``:arg`` of the sweep's config spec
(the run's keys win); every other key is a ``--config.<key>=<value>`` override. A run's
directory name comes from its own choices and overrides, in the order given
(``attention=relational,layout=hybrid,seed=1``), so it is stable across invocations.

Local launcher: ``python -m attnlab.train.cli train ...`` subprocesses, ``--parallel`` at a time.
A run is done when its ``metrics.jsonl`` has a ``"final": true`` row; done runs are skipped.
Each run holds an exclusive ``fcntl`` lock on ``DIR/<run>/.lock`` while it trains, so two
launchers on the same sweep directory never train the same run at once (the lock dies with its
process, so a crashed launcher leaves nothing stale). A failed run leaves ``DIR/<run>/error.txt``
(exit status, command and the last lines of its output; the full log is ``DIR/<run>/log.txt``)
and the sweep goes on; a rerun retries it, resuming from its last checkpoint.
``DIR/sweep_status.json`` summarises every run's state after each launch.

Slurm launcher: writes ``DIR/sweep.sbatch``, an array job with one ``attnlab train`` per run
(it does not call sbatch).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Sequence

from attnlab.train import config_loading
from attnlab.train.metrics import read_jsonl

LOCK_NAME = ".lock"
ERROR_NAME = "error.txt"
LOG_NAME = "log.txt"
STATUS_NAME = "sweep_status.json"
SBATCH_NAME = "sweep.sbatch"
MAX_NAME = 120
ERROR_TAIL_LINES = 40
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    name: directory name under the sweep directory (filesystem-safe, stable).
    spec: the full config spec ``path[:arg]`` this run trains.
    overrides: ``(key, value)`` pairs passed as ``--config.key=value``, in order.
  """

  name: str
  spec: str
  overrides: tuple[tuple[str, str], ...]

  def train_args(self, workdir: str) -> list[str]:
    """Arguments after ``attnlab``: ``train --config SPEC --config.k=v ... --workdir DIR``."""
    return (["train", "--config", self.spec]
            + [f"--config.{k}={v}" for k, v in self.overrides]
            + ["--workdir", os.path.join(workdir, self.name)])


def _text(value) -> str:
  """Override value as the CLI reads it (tuples and lists as Python literals)."""
  if isinstance(value, bool):
    return "True" if value else "False"
  return str(value)


def run_name(parts: Sequence[tuple[str, str | None]]) -> str:
  """``[("attention", "relational"), ("seed", "1")]`` -> ``'attention=relational,seed=1'``.

  A ``None`` value is a bare flag (``runlocal``). Characters outside ``[A-Za-z0-9._=,+-]``
  become ``_``; names longer than 120 characters are cut and suffixed with a hash of the full
  name. :func:`expand` rejects a sweep whose runs end up with the same name.
  """
  full = ",".join(k if v is None else f"{k}={v}" for k, v in parts)
  safe = _UNSAFE.sub("_", full).strip(".") or "default"
  if len(safe) > MAX_NAME:
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    safe = f"{safe[:MAX_NAME - 9]}-{digest}"
  return safe


def expand(config_spec: str, overrides: dict[str, str] | None = None) -> list[Run]:
  """The runs of ``config_spec``'s ``sweep(add)``.

  Args:
    config_spec: ``configs/X.py[:arg]`` or a module name, as for ``attnlab train``.
    overrides: ``--config.k=v`` given to ``attnlab sweep``; they apply to every run (a run's own
      override of the same key wins) and are not part of run names.

  Raises:
    ConfigError: the config has no ``sweep``, or two ``add`` calls give the same name.
  """
  path, base_arg = config_loading.split_spec(config_spec)
  module = config_loading.load_module(path)
  if not hasattr(module, "sweep"):
    raise config_loading.ConfigError(f"config {path!r} defines no sweep(add)")
  base = config_loading.parse_arg(base_arg)
  common = dict(overrides or {})
  runs: list[Run] = []

  def add(**kw):
    arg = kw.pop("arg", None)
    parts: list[tuple[str, str | None]] = []
    merged = dict(base)
    if arg:
      own = config_loading.parse_arg(arg)
      merged.update(own)
      for part in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = part.partition("=")
        parts.append((key.strip(), value.strip() if eq else None))
    values = dict(common)
    for key, value in kw.items():
      values[key] = _text(value)
      parts.append((key, _text(value)))
    arg_text = ",".join(k if v == "True" else f"{k}={v}" for k, v in merged.items())
    spec = f"{path}:{arg_text}" if arg_text else path
    runs.append(Run(run_name(parts), spec, tuple(values.items())))

  module.sweep(add)
  seen: dict[str, Run] = {}
  for run in runs:
    if run.name in seen:
      raise config_loading.ConfigError(f"sweep of {path!r} adds run {run.name!r} twice")
    seen[run.name] = run
  return runs


# -- state on disk ---------------------------------------------------------------------------


def is_done(run_dir: str) -> bool:
  """True when ``run_dir/metrics.jsonl`` holds the final evaluation row."""
  try:
    return any(r.get("final") for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")))
  except (json.JSONDecodeError, OSError):
    return False


def state(run_dir: str) -> str:
  """``done``, ``failed`` (error.txt present), ``running`` (locked) or ``pending``."""
  if is_done(run_dir):
    return "done"
  lock = RunLock(run_dir)
  if os.path.isdir(run_dir) and not lock.acquire():
    return "running"
  lock.release()
  if os.path.exists(os.path.join(run_dir, ERROR_NAME)):
    return "failed"
  return "pending"


class RunLock:
  """Exclusive, non-blocking ``fcntl.flock`` on ``run_dir/.lock``, released on exit or death."""

  def __init__(self, run_dir: str):
    self.path = os.path.join(run_dir, LOCK_NAME)
    self.fd = None

  def acquire(self) -> bool:
    """True if this process now holds the lock; False if another process holds it."""
    if not os.path.isdir(os.path.dirname(self.path)):
      return True
    fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      os.close(fd)
      return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
    self.fd = fd
    return True

  def release(self) -> None:
    if self.fd is not None:
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()
    return False


def write_status(workdir: str, runs: Sequence[Run], extra: dict | None = None) -> dict:
  """Write ``workdir/sweep_status.json`` (every run's state, read from disk); return it."""
  status = {r.name: {"state": state(os.path.join(workdir, r.name)), "spec": r.spec,
                     "overrides": dict(r.overrides)} for r in runs}
  for name, info in (extra or {}).items():
    status.setdefault(name, {}).update(info)
  tmp = os.path.join(workdir, f".{STATUS_NAME}.{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(status, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, STATUS_NAME))
  return status


# -- local launcher --------------------------------------------------------------------------


def default_command() -> list[str]:
  """How the local launcher starts ``attnlab``: this interpreter, ``-m attnlab.train.cli``."""
  return [sys.executable, "-m", "attnlab.train.cli"]


def launch_one(run: Run, workdir: str, command: Sequence[str], log=print) -> dict:
  """Train ``run`` unless it is done or locked by another launcher.

  Returns:
    ``{"result": "done" | "skipped" | "busy" | "failed", "returncode", "wall_s"}``.
  """
  run_dir = os.path.join(workdir, run.name)
  if is_done(run_dir):
    return {"result": "skipped"}
  os.makedirs(run_dir, exist_ok=True)
  with RunLock(run_dir) as lock:
    if not lock.acquire():
      log(f"[sweep] {run.name}: locked by another launcher; skipping")
      return {"result": "busy"}
    if is_done(run_dir):  # finished by another launcher between the check and the lock
      return {"result": "skipped"}
    argv = list(command) + run.train_args(workdir)
    log(f"[sweep] start {run.name}")
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(os.path.join(run_dir, LOG_NAME), "ab") as out:
      out.write(f"$ {shlex.join(argv)}\n".encode())
      out.flush()
      proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    wall = round(time.time() - t0, 1)
    error_path = os.path.join(run_dir, ERROR_NAME)
    if proc.returncode == 0 and is_done(run_dir):
      if os.path.exists(error_path):
        os.remove(error_path)
      log(f"[sweep] done  {run.name} ({wall} s)")
      return {"result": "done", "returncode": 0, "wall_s": wall}
    with open(os.path.join(run_dir, LOG_NAME), errors="replace") as f:
      lines = f.readlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    tail = lines[starts[-1] + 1 if starts else 0:][-ERROR_TAIL_LINES:]  # this attempt only
    reason = (f"exit status {proc.returncode}" if proc.returncode
              else "exit status 0 but no final metrics row")
    with open(error_path, "w") as f:
      f.write(f"{reason}\ncommand: {shlex.join(argv)}\nwall_s: {wall}\n"
              f"--- last {len(tail)} lines of {LOG_NAME} ---\n{''.join(tail)}")
    log(f"[sweep] FAIL  {run.name}: {reason}: {error_line(tail)}")
    return {"result": "failed", "returncode": proc.returncode, "wall_s": wall}


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)|Error)\b.*")


def error_line(lines: Sequence[str]) -> str:
  """The most telling line of a failed run's output: its last exception line (``ValueError:
  ...``, the CLI's ``Error: ...``), else its last non-empty line."""
  stripped = [line.strip() for line in lines if line.strip() and not set(line.strip()) <= set("-")]
  for line in reversed(stripped):
    if _EXCEPTION_LINE.match(line):
      return line
  return stripped[-1] if stripped else ""


def run_local(runs: Sequence[Run], workdir: str, parallel: int = 1,
              command: Sequence[str] | None = None, log=print) -> dict[str, dict]:
  """Launch ``runs`` under ``workdir``, ``parallel`` at a time; returns each run's result."""
  command = default_command() if command is None else list(command)
  os.makedirs(workdir, exist_ok=True)
  results: dict[str, dict] = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
    futures = {pool.submit(launch_one, r, workdir, command, log): r for r in runs}
    for fut in concurrent.futures.as_completed(futures):
      results[futures[fut].name] = fut.result()
  write_status(workdir, runs, {n: {"last_result": r} for n, r in results.items()})
  return results


# -- slurm launcher --------------------------------------------------------------------------


def _absolute_spec(spec: str) -> str:
  path, arg = config_loading.split_spec(spec)
  if os.path.exists(path):
    path = os.path.abspath(path)
  return f"{path}:{arg}" if arg else path


def slurm_script(runs: Sequence[Run], workdir: str, parallel: int = 0,
                 job_name: str = "attnlab-sweep") -> str:
  """An sbatch array script: task i runs ``attnlab train`` for ``runs[i]`` (done runs exit 0).

  ``parallel`` > 0 caps the number of array tasks running at once (``--array=0-N%P``).
  """
  workdir = os.path.abspath(workdir)
  n = len(runs)
  throttle = f"%{parallel}" if parallel and parallel > 0 else ""
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={job_name}",
      f"#SBATCH --array=0-{max(n - 1, 0)}{throttle}",
      f"#SBATCH --output={workdir}/slurm/%A_%a.out",
      "# Add your cluster's resources here, e.g.:",
      "# #SBATCH --gres=gpu:1",
      "# #SBATCH --time=24:00:00",
      "set -euo pipefail",
      'ATTNLAB="${ATTNLAB:-attnlab}"',
      "RUNS=(",
  ]
  lines += [f"  {shlex.quote(r.name)}" for r in runs]
  lines += [")", "ARGS=("]
  for r in runs:
    args = Run(r.name, _absolute_spec(r.spec), r.overrides).train_args(workdir)
    lines.append("  " + shlex.quote(shlex.join(args)))
  lines += [
      ")",
      'NAME="${RUNS[$SLURM_ARRAY_TASK_ID]}"',
      f'RUN_DIR={shlex.quote(workdir)}/"$NAME"',
      'if grep -qs \'"final": true\' "$RUN_DIR/metrics.jsonl"; then',
      '  echo "$NAME already finished"; exit 0',
      "fi",
      'mkdir -p "$RUN_DIR"',
      'eval "$ATTNLAB ${ARGS[$SLURM_ARRAY_TASK_ID]}"',
      "",
  ]
  return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------


def main(args, overrides: dict[str, str]) -> int:
  """``attnlab sweep``: args has ``config``, ``workdir``, ``launcher``, ``parallel``,
  ``dry_run`` and optionally ``only`` (patterns, see :mod:`sweep_select`); returns the exit status (1 if any run failed)."""
  from attnlab.train import sweep_select
  runs = sweep_select.select(expand(args.config, overrides), getattr(args, "only", None))
  workdir = args.workdir
  if args.dry_run:
    print(f"{len(runs)} runs in {workdir}:")
    width = max((len(r.name) for r in runs), default=0)
    for r in runs:
      st = state(os.path.join(workdir, r.name))
      print(f"  {r.name:<{width}}  [{st}]  attnlab {shlex.join(r.train_args(workdir))}")
    return 0
  if args.launcher == "slurm":
    os.makedirs(os.path.join(workdir, "slurm"), exist_ok=True)
    path = os.path.join(workdir, SBATCH_NAME)
    with open(path, "w") as f:
      f.write(slurm_script(runs, workdir, args.parallel if args.parallel > 1 else 0))
    os.chmod(path, 0o755)
    print(f"wrote {path} ({len(runs)} array tasks); submit with: sbatch {path}")
    return 0
  t0 = time.time()
  results = run_local(runs, workdir, parallel=args.parallel)
  counts: dict[str, int] = {}
  for r in results.values():
    counts[r["result"]] = counts.get(r["result"], 0) + 1
  failed = sorted(n for n, r in results.items() if r["result"] == "failed")
  print(f"[sweep] {len(runs)} runs in {time.time() - t0:.0f} s: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  for name in failed:
    print(f"[sweep] failed: {name} (see {os.path.join(workdir, name, ERROR_NAME)})")
  return 1 if failed else 0
