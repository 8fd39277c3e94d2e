"""The ``attnlab`` command: train, demo, sample, sweep, report.

  attnlab train --config configs/X.py[:arg] [--config.k=v ...] --workdir DIR
  attnlab demo [--workdir DIR]
  attnlab sample --workdir DIR --prompt TEXT [--length N --temperature T --top-k K]
  attnlab sweep --config configs/X.py[:arg] --workdir DIR [--launcher local|slurm]
                [--parallel N] [--dry-run]
  attnlab report DIR

Config errors print one line naming the field and the allowed values and exit with status 2,
before anything is written. Every expected failure is one line on stderr with its own exit
status (``attnlab.train.workdir.EXIT_CODES``): 0 done, 1 failed (diverged, no intact
checkpoint), 2 config/usage error or workdir in use, 74 I/O error (disk full, read-only,
permission denied), 75 preempted by SIGTERM after saving (rerun to resume).
Set ATTNLAB_TRACEBACK=1 to get the full traceback of such a failure as well.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback

EXIT_CONFIG_ERROR = 2


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Separate ``--config.a.b=v`` (or ``--config.a.b v``) overrides from other arguments."""
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      key, eq, value = a[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv):
          raise SystemExit(f"error: {a} needs a value")
        value, i = argv[i + 1], i + 1
      overrides[key] = value
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def load_settings(config_spec: str, overrides: dict[str, str]):
  """ConfigDict -> RunSettings (raises ConfigError)."""
  from attnlab.train import config_loading, settings
  return settings.from_config(config_loading.get_config(config_spec, overrides))


def cmd_train(args, overrides) -> int:
  from attnlab.train import workdir

  def early_sigterm(*_):  # until the training loop installs its own (save, then exit 75)
    raise workdir.Preempted("preempted (SIGTERM) before training started; nothing new to "
                            "save; rerun the same command to resume")
  previous = signal.signal(signal.SIGTERM, early_sigterm)
  try:
    from attnlab.train import distributed
    distributed.maybe_initialize()
    from attnlab.train import loop
    run = load_settings(args.config, overrides)
    try:
      row = loop.train(run, args.workdir)
    except loop.Diverged as e:
      print(f"error: {e}", file=sys.stderr)
      return workdir.EXIT_FAILED
  finally:
    signal.signal(signal.SIGTERM, previous)
  return workdir.EXIT_PREEMPTED if row.get("preempted") else workdir.EXIT_OK


def cmd_demo(args, overrides) -> int:
  from attnlab.train import demo
  return demo.main(args.workdir)


def cmd_sample(args, overrides) -> int:
  from attnlab.train import sampling
  sampling.check_options(length=args.length, temperature=args.temperature, top_k=args.top_k)
  print(sampling.sample_from_workdir(args.workdir, args.prompt, length=args.length,
                                     temperature=args.temperature, top_k=args.top_k,
                                     seed=args.seed))
  return 0


def cmd_sweep(args, overrides) -> int:
  from attnlab.train import sweep
  return sweep.main(args, overrides)


def cmd_report(args, overrides) -> int:
  from attnlab.train import report
  return report.main(args)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="attnlab", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train one run")
  t.add_argument("--config", required=True, help="configs/X.py[:arg] or a module name")
  t.add_argument("--workdir", required=True)
  t.set_defaults(fn=cmd_train)
  d = sub.add_parser("demo", help="the in-context-regression study at CPU size, with its table")
  d.add_argument("--workdir", default="runs/demo")
  d.set_defaults(fn=cmd_demo)
  s = sub.add_parser("sample", help="generate text from an LM run's latest checkpoint")
  s.add_argument("--workdir", required=True)
  s.add_argument("--prompt", required=True)
  s.add_argument("--length", type=int, default=200)
  s.add_argument("--temperature", type=float, default=0.8)
  s.add_argument("--top-k", type=int, default=40)
  s.add_argument("--seed", type=int, default=0)
  s.set_defaults(fn=cmd_sample)
  w = sub.add_parser("sweep", help="run a config's sweep(add)")
  w.add_argument("--config", required=True)
  w.add_argument("--workdir", required=True)
  w.add_argument("--launcher", choices=("local", "slurm"), default="local")
  w.add_argument("--parallel", type=int, default=1)
  w.add_argument("--dry-run", action="store_true")
  w.add_argument("--force", action="store_true",
                 help="retrain runs whose workdir holds a run of a different config")
  w.set_defaults(fn=cmd_sweep)
  r = sub.add_parser("report", help="tables and plots from a sweep directory")
  r.add_argument("directory")
  r.set_defaults(fn=cmd_report)
  return p


class _QuietIOErrors(logging.Filter):
  """Drops library log records (orbax's background threads, asyncio's unretrieved tasks) that
  report an I/O error: the CLI reports that error once, on one line."""

  def filter(self, record):
    from attnlab.train import workdir
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += " " + str(record.exc_info[1])
    return workdir.io_errno_of_text(text) is None


_QUIETED = []


def _quiet_library_io_errors() -> None:
  if _QUIETED:
    return
  _QUIETED.append(True)
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_QuietIOErrors())
  default = sys.unraisablehook

  def hook(unraisable):
    # tensorstore callbacks that outlive orbax's event loop at exit (after a failed read or
    # write) raise these; they are not errors of the run.
    text = str(unraisable.exc_value)
    if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in text
            or isinstance(unraisable.exc_value, ImportError) and "shutting down" in text):
      default(unraisable)
  sys.unraisablehook = hook


def _one_line(e: BaseException, args) -> tuple[str, int] | None:
  """``(message, exit status)`` for an expected failure, None for a bug (traceback)."""
  from attnlab.train import workdir
  from attnlab.train.config_loading import ConfigError
  from attnlab.train.data_lm import DataError
  from attnlab.train.metrics import MetricsError
  if isinstance(e, (ConfigError, DataError, FileNotFoundError, workdir.WorkdirBusy)):
    return str(e), workdir.EXIT_CONFIG
  message = workdir.io_error_message(e, getattr(args, "workdir", None))
  if message is not None:
    return message, workdir.EXIT_IO
  if isinstance(e, (workdir.StateError, MetricsError)):
    return str(e), workdir.EXIT_FAILED
  if isinstance(e, workdir.Preempted):
    return str(e), workdir.EXIT_PREEMPTED
  return None


def main(argv: list[str] | None = None) -> int:
  argv_given = argv is not None
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = split_overrides(argv)
  args = parser().parse_args(rest)
  _quiet_library_io_errors()
  try:
    return args.fn(args, overrides)
  except Exception as e:  # noqa: BLE001  (anything unexpected is re-raised below)
    found = _one_line(e, args)
    if found is None:
      raise
    message, code = found
    if os.environ.get("ATTNLAB_TRACEBACK"):
      traceback.print_exc()
    print(f"error: {message}", file=sys.stderr, flush=True)
    if not argv_given and code != EXIT_CONFIG_ERROR:
      # A failed save leaves library threads and tasks that print their own tracebacks at
      # interpreter shutdown; the one line above is the report. (Locks die with the process.)
      sys.stdout.flush()
      os._exit(code)
    return code


if __name__ == "__main__":
  sys.exit(main())
