"""``attnlab sweep``: expand a config's ``sweep(add)`` into runs and launch them.

Each ``add(**kw)`` call is one run. The key ``arg`` holds structural choices
(``"attention=relational,layout=hybrid"``) merged into the ``:arg`` of the sweep's config spec
(the run's keys win); every other key is a ``--config.<key>=<value>`` override. A run's
directory name comes from its own choices and overrides, in the order given
(``attention=relational,layout=hybrid,seed=1``), so it is stable across invocations.

Local launcher: ``python -m attnlab.train.cli train ...`` subprocesses, ``--parallel`` at a time.
A run's identity is its resolved config: before launching, every run directory that already
holds a ``config.json`` is compared with the config the sweep would train now. A difference in
the run's identity (e.g. a sweep-wide ``--config.optimizer.lr``) refuses the whole sweep with
one line naming the runs and fields (exit 2), unless ``--force`` clears those runs and trains
them again; a difference only in resumable fields (``steps``, ``log_every``, ``eval_every``,
``checkpoint``) relaunches even a finished run, and ``attnlab train`` extends it (or finds
nothing to do) exactly as it would by hand. Otherwise a run is done when its ``metrics.jsonl``
has a ``"final": true`` row, and done runs are skipped.

Each run is locked with an exclusive ``fcntl`` lock on ``DIR/<run>/.lock`` (the trainer's
workdir lock): the launcher takes it and hands the locked descriptor to its ``attnlab train``,
so two launchers, or a launcher and a trainer left behind by a killed launcher, never train the
same run at once (the lock dies with the last process holding it; nothing is stale). A failed
run leaves ``DIR/<run>/error.txt`` (exit status, command and the last lines of its output; the
full log is ``DIR/<run>/log.txt``) and the sweep goes on; a rerun retries it, resuming from its
last checkpoint. A trainer that exits 75 (preempted) is not a failure: the rerun resumes it.
SIGTERM to the launcher is forwarded to its trainers (each saves a checkpoint and exits 75);
the launcher waits for them, starts nothing new, and exits 75.
``DIR/sweep_status.json`` summarises every run's state after each launch.

Slurm launcher: writes ``DIR/sweep.sbatch``, an array job with one ``attnlab train`` per run
(it does not call sbatch).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

from attnlab.train import config_loading
from attnlab.train import workdir as workdir_lib
from attnlab.train.metrics import read_jsonl

LOCK_NAME = workdir_lib.LOCK_NAME
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
      parts.extend(config_loading.parse_pairs(arg))
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
  except (ValueError, OSError):
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


class RunLock(workdir_lib.WorkdirLock):
  """The run's workdir lock (``run_dir/.lock``), as the launcher uses it: :meth:`acquire`
  returns True if this process now holds it (or the directory does not exist yet), False if
  another process holds it; ``with RunLock(d) as lock`` releases it at the end."""

  def __init__(self, run_dir: str):
    super().__init__(run_dir)

  def acquire(self) -> bool:
    if not os.path.isdir(self.workdir):
      return True
    return self.try_acquire()

  def __enter__(self):
    return self


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


class _Children:
  """The launcher's running trainers, so that SIGTERM can be forwarded to them."""

  def __init__(self):
    self.lock = threading.Lock()
    self.procs: set[subprocess.Popen] = set()
    self.stopping = threading.Event()

  def add(self, proc):
    with self.lock:
      self.procs.add(proc)
    if self.stopping.is_set():  # SIGTERM arrived while it was starting
      proc.send_signal(signal.SIGTERM)

  def discard(self, proc):
    with self.lock:
      self.procs.discard(proc)

  def terminate(self):
    """Stop starting runs; SIGTERM every running trainer (they save and exit 75)."""
    self.stopping.set()
    with self.lock:
      procs = list(self.procs)
    for proc in procs:
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


CHILDREN = _Children()


def launch_one(run: Run, workdir: str, command: Sequence[str], log=print,
               relaunch: bool = False) -> dict:
  """Train ``run`` unless it is done (and not ``relaunch``) or locked by another process.

  Returns:
    ``{"result": "done" | "skipped" | "busy" | "failed" | "preempted" | "not started",
    "returncode", "wall_s"}``.
  """
  run_dir = os.path.join(workdir, run.name)
  if CHILDREN.stopping.is_set():
    return {"result": "not started"}
  if is_done(run_dir) and not relaunch:
    return {"result": "skipped"}
  os.makedirs(run_dir, exist_ok=True)
  with RunLock(run_dir) as lock:
    if not lock.acquire():
      log(f"[sweep] {run.name}: in use by {workdir_lib._holder(lock.path)}; skipping")
      return {"result": "busy"}
    if is_done(run_dir) and not relaunch:  # finished by another launcher meanwhile
      return {"result": "skipped"}
    argv = list(command) + run.train_args(workdir)
    log(f"[sweep] start {run.name}")
    t0 = time.time()
    # The trainer inherits the locked descriptor: the run stays locked while it lives.
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{workdir_lib.LOCK_FD_ENV: str(lock.fd)})
    with open(os.path.join(run_dir, LOG_NAME), "ab") as out:
      out.write(f"$ {shlex.join(argv)}\n".encode())
      out.flush()
      proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                              pass_fds=(lock.fd,))
      CHILDREN.add(proc)
      try:
        proc.wait()
      finally:
        CHILDREN.discard(proc)
    wall = round(time.time() - t0, 1)
    error_path = os.path.join(run_dir, ERROR_NAME)
    if proc.returncode == 0 and is_done(run_dir):
      if os.path.exists(error_path):
        os.remove(error_path)
      log(f"[sweep] done  {run.name} ({wall} s)")
      return {"result": "done", "returncode": 0, "wall_s": wall}
    if proc.returncode == workdir_lib.EXIT_PREEMPTED or (
        proc.returncode == -signal.SIGTERM and CHILDREN.stopping.is_set()):
      log(f"[sweep] preempted {run.name} ({wall} s); a rerun resumes it")
      return {"result": "preempted", "returncode": proc.returncode, "wall_s": wall}
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
              command: Sequence[str] | None = None, log=print,
              relaunch: Sequence[str] = ()) -> dict[str, dict]:
  """Launch ``runs`` under ``workdir``, ``parallel`` at a time; returns each run's result.
  Runs named in ``relaunch`` are launched even if done (their resumable settings changed)."""
  command = default_command() if command is None else list(command)
  os.makedirs(workdir, exist_ok=True)
  results: dict[str, dict] = {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
    futures = {pool.submit(launch_one, r, workdir, command, log, r.name in relaunch): r
               for r in runs}
    for fut in concurrent.futures.as_completed(futures):
      results[futures[fut].name] = fut.result()
  write_status(workdir, runs, {n: {"last_result": r} for n, r in results.items()})
  return results


# -- identity --------------------------------------------------------------------------------


def compare_with_disk(runs: Sequence[Run], workdir: str) -> tuple[dict[str, list[str]],
                                                                   list[str]]:
  """``(conflicts, changed)``: runs whose directory holds a run of a different identity
  (name -> the differing fields, ``"optimizer.lr: 0.003 -> 0.01"``), and runs that differ
  only in resumable fields (``steps``, ...), which ``attnlab train`` continues."""
  conflicts, changed = {}, []
  for run in runs:
    run_dir = os.path.join(workdir, run.name)
    try:
      old = workdir_lib.read_config(run_dir)
    except workdir_lib.StateError as e:
      conflicts[run.name] = [str(e)]
      continue
    if old is None:
      continue
    try:
      new = config_loading.get_config(run.spec, dict(run.overrides)).to_dict()
    except config_loading.ConfigError:
      continue  # the trainer reports it, as for a new run
    diff = workdir_lib.config_difference(old, new)
    if diff:
      conflicts[run.name] = diff
    elif workdir_lib.config_difference(old, new, resumable=True):
      changed.append(run.name)
  return conflicts, changed


def clear_run(run_dir: str) -> None:
  """Delete a run's outputs (under its lock; the lock file stays). Raises WorkdirBusy."""
  with workdir_lib.WorkdirLock(run_dir):
    for name in os.listdir(run_dir):
      if name == LOCK_NAME:
        continue
      path = os.path.join(run_dir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)


def _conflict_message(workdir: str, conflicts: dict[str, list[str]]) -> str:
  groups: dict[str, list[str]] = {}
  for name, diff in conflicts.items():
    groups.setdefault("; ".join(diff), []).append(name)
  parts = []
  for diff, names in groups.items():
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    parts.append(f"{shown} ({diff})")
  return (f"{len(conflicts)} run(s) in {workdir} were trained with a different config: "
          f"{'; '.join(parts)}; rerun with --force to retrain them, or use another --workdir")


# -- entry point -----------------------------------------------------------------------------


def main(args, overrides: dict[str, str]) -> int:
  """``attnlab sweep``: args has ``config``, ``workdir``, ``launcher``, ``parallel``,
  ``dry_run``, ``force`` and optionally ``only`` (patterns, see :mod:`sweep_select`); returns
  the exit status: 1 if any run failed, else 75 if any was preempted, not started (SIGTERM) or
  in use elsewhere, else 0. Raises ConfigError (exit 2) when run directories hold runs of a
  different config and ``force`` is not set."""
  from attnlab.train import sweep_select
  runs = sweep_select.select(expand(args.config, overrides), getattr(args, "only", None))
  workdir = args.workdir
  conflicts, changed = compare_with_disk(runs, workdir)
  if args.dry_run:
    print(f"{len(runs)} runs in {workdir}:")
    width = max((len(r.name) for r in runs), default=0)
    for r in runs:
      st = state(os.path.join(workdir, r.name))
      if r.name in conflicts:
        st = "different config: " + "; ".join(conflicts[r.name])
      elif r.name in changed:
        st += ", continues"
      print(f"  {r.name:<{width}}  [{st}]  attnlab {shlex.join(r.train_args(workdir))}")
    return 0
  if conflicts:
    if not getattr(args, "force", False):
      raise config_loading.ConfigError(_conflict_message(workdir, conflicts))
    for name in sorted(conflicts):
      print(f"[sweep] --force: clearing {name} ({'; '.join(conflicts[name])})")
      clear_run(os.path.join(workdir, name))
  if args.launcher == "slurm":
    from attnlab.train import slurm  # imports this module: loaded on use
    os.makedirs(os.path.join(workdir, "slurm"), exist_ok=True)
    path = os.path.join(workdir, SBATCH_NAME)
    with open(path, "w") as f:
      f.write(slurm.slurm_script(runs, workdir, args.parallel if args.parallel > 1 else 0,
                                 relaunch=changed))
    os.chmod(path, 0o755)
    print(f"wrote {path} ({len(runs)} array tasks); submit with: sbatch {path}")
    return 0
  t0 = time.time()
  CHILDREN.stopping.clear()
  in_main = threading.current_thread() is threading.main_thread()
  if in_main:
    previous = signal.signal(signal.SIGTERM, lambda *_: CHILDREN.terminate())
  try:
    results = run_local(runs, workdir, parallel=args.parallel, relaunch=changed)
  finally:
    if in_main:
      signal.signal(signal.SIGTERM, previous)
  counts: dict[str, int] = {}
  for r in results.values():
    counts[r["result"]] = counts.get(r["result"], 0) + 1
  failed = sorted(n for n, r in results.items() if r["result"] == "failed")
  print(f"[sweep] {len(runs)} runs in {time.time() - t0:.0f} s: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  for name in failed:
    print(f"[sweep] failed: {name} (see {os.path.join(workdir, name, ERROR_NAME)})")
  if failed:
    return workdir_lib.EXIT_FAILED
  if CHILDREN.stopping.is_set() or counts.get("preempted") or counts.get("busy"):
    # Not failed, not finished either: a wrapper should run the same command again later.
    print("[sweep] not finished (preempted, stopped by SIGTERM, or runs in use elsewhere); "
          "rerun the same command to resume")
    return workdir_lib.EXIT_PREEMPTED
  return 0
