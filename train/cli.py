"""The ``attnlab`` command: train, demo, sample, sweep, report, ngram, ood, diagnose.

  attnlab train --config configs/X.py[:arg] [--config.k=v ...] --workdir DIR
  attnlab demo [--workdir DIR]
  attnlab sample --workdir DIR --prompt TEXT [--length N --temperature T --top-k K]
  attnlab sweep --config configs/X.py[:arg] --workdir DIR [--launcher local|slurm]
                [--parallel N] [--dry-run] [--only PATTERN ...]
  attnlab report DIR
  attnlab ngram --config lm[:ARG] [--config.k=v ...] [--whole-val] [--workdir DIR]
  attnlab ood --workdir DIR [--out TABLE.md] [--json NUMBERS.json] [--prompts N]
  attnlab diagnose WORKDIR [--windows N]

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
import re
import signal
import sys
import traceback

EXIT_CONFIG_ERROR = 2

# Imported by the trainer; a layers-only install (``pip install attnlab``) lacks them.
TRAINER_MODULES = ("optax", "orbax.checkpoint", "ml_collections", "tqdm")

DESCRIPTION = """\
Train and compare attention variants: one run (train), a sweep of runs (sweep), their tables
and plots (report), text and attention diagnostics of a language-model run (sample,
diagnose), n-gram baselines of an LM config's corpus (ngram), and a 5-minute CPU demo (demo).
Run 'attnlab COMMAND --help' for each command's options."""

CONFIG_HELP = """\
configs:
  --config NAME[:ARG]  picks a config: a module name (icl_regression, icl_garg, lm, mqar,
                       match_to_sample, afa_spiral) or a file with get_config(arg)
                       (configs/lm.py, my_config.py); for 'sweep', a file that also has
                       sweep(add): one per table in experiments/<study>/
                       (experiments/lm_ablation/sweep.py, experiments/icl_regression/a1.py).
                       ARG holds structural choices, comma-separated: key=value or a bare key
                       (icl_regression:attention=relational,heads=4,runlocal).
  --config.a.b=VALUE   overrides any field of the config (--config.steps=20000,
                       --config.optimizer.lr=3e-4, --config.eval.lengths="(10,40)",
                       --config.model.causal=False); a bare boolean field means True
                       (--config.mesh.fsdp). The value is parsed to the field's type; an unknown
                       field or bad value is a one-line error (exit status 2) before anything
                       runs. 'attnlab train --config NAME --print-config' lists the fields.
                       Evaluation and checkpoint intervals follow --config.steps unless set."""


def config_catalogue() -> str:
  """``configs:`` help text: every config module, its first docstring line and its ARG keys."""
  import importlib
  import os
  try:
    from attnlab import configs
  except ImportError:
    return ""
  lines = ["available configs (ARG keys; runlocal = a quick CPU-size run):"]
  try:
    from attnlab.models import attention
    lines.insert(0, "attention variants (ARG attention=NAME; their options are "
                    "--config.attention.options.X):\n"
                 f"  {', '.join(sorted(attention.REGISTRY))}\n"
                 "  relational defaults to 1,024 symbols: 71k parameters at d = 32 where the\n"
                 "  others have about 4k (--config.attention.options.n_symbols=16: 6.7k)\n")
  except ImportError:
    pass
  for f in sorted(os.listdir(os.path.dirname(configs.__file__))):
    name = f[:-3]
    if not f.endswith(".py") or f.startswith("_") or name == "common":
      continue
    try:
      module = importlib.import_module(f"attnlab.configs.{name}")
    except ImportError:
      continue
    if not hasattr(module, "get_config"):
      continue
    doc = (module.__doc__ or "").strip().splitlines()[0].replace("``", "") if module.__doc__ else ""
    doc = re.sub(r",? \(?experiments/[\w/]*README\.md §[\d.]*\d\)?\.?", "", doc)
    lines.append(f"  {name:<16}{doc}")
    for key, text in getattr(module, "ARGS", {}).items():
      lines.append(f"      :{key:<12}{text}")
  return "\n".join(lines)


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str | bool]]:
  """Separate ``--config.a.b=v`` (or ``--config.a.b v``) overrides from other arguments.

  A bare ``--config.a.b`` followed by another option (or nothing) is the boolean True.
  """
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config."):
      key, eq, value = a[len("--config."):].partition("=")
      if not eq:
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
          value = True
        else:
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
  if args.print_config:
    from attnlab.train import config_loading
    cd = config_loading.get_config(args.config, overrides)
    load_settings(args.config, overrides)  # the same checks a run makes
    print(cd)
    return 0
  if args.workdir is None:
    print("error: attnlab train: --workdir is required", file=sys.stderr)
    return EXIT_CONFIG_ERROR
  from attnlab.train import workdir

  # Until the training loop installs its own handler (save, then exit 75).
  previous = signal.signal(signal.SIGTERM, workdir.note_early_sigterm)
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
  code = sweep.main(args, overrides)
  if args.dry_run:
    from attnlab.train import sweep_select
    runs = sweep_select.select(sweep.expand(args.config, overrides), args.only)
    errors = sweep_select.validate(runs)
    for name, message in errors:
      print(f"error: run {name}: {message}", file=sys.stderr)
    if errors:
      print(f"error: {len(errors)} of {len(runs)} runs have config errors", file=sys.stderr)
      return EXIT_CONFIG_ERROR
    print(f"all {len(runs)} runs' configs are valid")
  return code


def cmd_ood(args, overrides) -> int:
  from attnlab.train import icl_ood
  icl_ood.run_ood(args.workdir, out=args.out, json_out=args.json, n_prompts=args.prompts)
  return 0


def cmd_report(args, overrides) -> int:
  from attnlab.train import report
  return report.main(args)


def cmd_ngram(args, overrides) -> int:
  import time

  from attnlab.train import config_loading, ngram, tasks
  t0 = time.time()
  run = load_settings(args.config, overrides)
  if run.task != "lm":
    raise config_loading.ConfigError(f"attnlab ngram needs an LM config; {args.config!r} is "
                                     f"task {run.task!r}")
  task = tasks.get("lm").Task(run, args.workdir)
  loaded = time.time() - t0
  cache = os.path.join(args.workdir, "data") if args.workdir else None
  t1 = time.time()
  if args.whole_val:
    result = ngram.cached_ngram_bpb(task.corpus.train, task.corpus.val, cache)
    what = "every validation byte (history from the split start)"
  else:
    result = task.ngram_result()
    if result is None:
      raise config_loading.ConfigError(f"{task.corpus.train.size} training bytes: over "
                                       "NGRAM_MAX_TRAIN_BYTES; nothing computed")
    what = (f"the run's evaluation windows ({run.task_settings.eval_windows} x "
            f"{run.task_settings.seq_len} bytes at most, history inside each window)")
  print(f"corpus {task.corpus.name!r}: {task.corpus.train.size:,} training bytes, "
        f"{task.corpus.val.size:,} validation bytes; scored: {result['scored_bytes']:,} bytes, "
        f"{what}")
  print(ngram.table(result))
  print(f"add-k's k chosen per order on the last {ngram.HELDOUT_FRACTION:.0%} of the training "
        f"bytes (counts from the rest), never on validation bytes; Kneser-Ney discounts "
        f"D = n1/(n1 + 2 n2) per order. Corpus load {loaded:.1f} s; n-grams "
        f"{time.time() - t1:.1f} s (computing them took {result['seconds']:.1f} s).")
  return 0


class _Formatter(argparse.RawDescriptionHelpFormatter):
  """Keeps the epilogs' layout; descriptions are wrapped by :func:`_wrap`."""


def _wrap(text: str) -> str:
  import textwrap
  return textwrap.fill(text, 92)


def _version() -> str:
  try:
    from attnlab import __version__
  except ImportError:
    __version__ = "unknown"
  return f"attnlab {__version__}"


def parser() -> argparse.ArgumentParser:
  catalogue = config_catalogue()
  p = argparse.ArgumentParser(
      prog="attnlab", description=DESCRIPTION, formatter_class=_Formatter,
      epilog=CONFIG_HELP + "\n\n" + catalogue + """

examples:
  attnlab demo
  attnlab train --config icl_regression:heads=4 --config.steps=20000 --workdir runs/icl_h4
  attnlab train --config lm:attention=relational,layout=hybrid,runlocal --workdir runs/lm
  attnlab sample --workdir runs/lm --prompt "def "
  attnlab sweep --config experiments/lm_ablation/sweep.py:runlocal --workdir runs/sw \\
      --only attention=relational,seed=0
  attnlab report runs/sw""")
  p.add_argument("--version", action="version", version=_version())
  sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

  t = sub.add_parser(
      "train", formatter_class=_Formatter, help="train one run",
      description=_wrap("Train one run in --workdir; running the same command again resumes "
                        "from its latest checkpoint. Prints training and evaluation lines and a "
                        "final summary; the workdir gets config.json, metrics.jsonl, "
                        "TensorBoard events and checkpoints."),
      epilog=CONFIG_HELP + "\n\n" + catalogue + """

examples:
  attnlab train --config icl_regression:heads=4 --workdir runs/icl_h4
  attnlab train --config icl_regression:heads=4 --config.steps=20000 --workdir runs/icl_h4_20k
  attnlab train --config configs/lm.py:attention=relational,layout=hybrid,runlocal \\
      --config.optimizer.lr=1e-3 --workdir runs/lm_rel
  attnlab train --config lm:runlocal --print-config""")
  t.add_argument("--config", required=True, metavar="NAME[:ARG]",
                 help="config module or file, with optional structural choices after ':' "
                      "(see below)")
  t.add_argument("--workdir", help="run directory (required unless --print-config)")
  t.add_argument("--print-config", action="store_true",
                 help="print the resolved config (every field --config.a.b=v can set), "
                      "check it, and exit")
  t.set_defaults(fn=cmd_train)

  d = sub.add_parser(
      "demo", formatter_class=_Formatter,
      help="in-context regression, 1 head vs 4 heads, with the closed-form predictors (~5 min)",
      description=_wrap("He et al.'s one-layer attention model on in-context linear regression, "
                  "trained with 1 head and with 4 heads (2,000 steps each, about 5 minutes on "
                  "2 CPU cores); prints test MSE at prompt lengths 10, 20, 40, 100 beside the "
                  "closed-form predictors. A single head plateaus near 0.40 at L = 40; 4 heads "
                  "reach the multi-head estimator (about 0.25)."))
  d.add_argument("--workdir", default="runs/demo",
                 help="where the two runs and the table go (default: runs/demo)")
  d.set_defaults(fn=cmd_demo)

  s = sub.add_parser(
      "sample", formatter_class=_Formatter,
      help="generate text from an LM run's latest checkpoint",
      description=_wrap("Generate text from the latest checkpoint of a language-model run "
                        "(a workdir of 'attnlab train --config lm...')."),
      epilog='example:\n  attnlab sample --workdir runs/lm --prompt "def " --length 100')
  s.add_argument("--workdir", required=True, help="the LM run's directory")
  s.add_argument("--prompt", required=True, help="text to continue")
  s.add_argument("--length", type=int, default=200, help="bytes to generate (default: 200)")
  s.add_argument("--temperature", type=float, default=0.8,
                 help="sampling temperature (default: 0.8)")
  s.add_argument("--top-k", type=int, default=40,
                 help="sample among the k likeliest bytes (default: 40)")
  s.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
  s.set_defaults(fn=cmd_sample)

  w = sub.add_parser(
      "sweep", formatter_class=_Formatter, help="run a config's sweep (or a subset of it)",
      description=_wrap("Expand a config's sweep(add) into runs, one directory each under "
                        "--workdir, and train them (finished runs are skipped, failed ones "
                        "retried on a rerun). --config.a.b=v overrides apply to every run. "
                        "--dry-run lists the runs and their commands and checks every run's "
                        "config without training."),
      epilog=CONFIG_HELP + """

--only PATTERN (repeatable; a run is kept if any pattern matches):
  key=value[,key=value]  every pair must be one of the run's choices or overrides
                         (attention=relational,seed=0; num_heads=4 matches model.num_heads=4);
                         runs with further choices match too (attention=standard,seed=1 keeps
                         ...,seed=1,model.cb_position=mlp_out as well)
  *glob*                 a glob on the run directory name ('*layout=hybrid*'); for one run,
                         a glob that ends where its name ends ('attention=standard,*seed=1')
  text                   a substring of the run directory name

examples:
  attnlab sweep --config experiments/icl_regression/a1.py --workdir runs/a1 --dry-run
  attnlab sweep --config experiments/icl_regression/a1.py --workdir runs/a1 --only num_heads=4
  attnlab sweep --config experiments/lm_ablation/sweep.py --workdir runs/l1 \\
      --only attention=relational,seed=0 \\
      --config.steps=1000
  attnlab sweep --config experiments/lm_ablation/sweep.py --workdir runs/l1 --launcher slurm
  attnlab report runs/a1""")
  w.add_argument("--config", required=True, metavar="NAME[:ARG]",
                 help="config with a sweep(add); ARG applies to every run")
  w.add_argument("--workdir", required=True, help="sweep directory (one subdirectory per run)")
  w.add_argument("--launcher", choices=("local", "slurm"), default="local",
                 help="local (default): train here as subprocesses; slurm: write an sbatch "
                      "array script")
  w.add_argument("--parallel", type=int, default=1,
                 help="runs at once (local) or the array's concurrency cap (slurm); default 1")
  w.add_argument("--dry-run", action="store_true",
                 help="list the runs and their commands, check every run's config, run nothing")
  w.add_argument("--only", action="append", metavar="PATTERN",
                 help="keep only the runs matching PATTERN (see below)")
  w.add_argument("--force", action="store_true",
                 help="retrain runs whose workdir holds a run of a different config")
  w.set_defaults(fn=cmd_sweep)

  r = sub.add_parser(
      "report", formatter_class=_Formatter, help="tables and plots from a sweep directory",
      description=_wrap("Tables (mean and std over seeds) and plots from the finished runs "
                        "under a sweep directory (or one run directory); writes them into the "
                        "directory and prints the tables."),
      epilog="example:\n  attnlab report runs/a1")
  r.add_argument("directory", help="a sweep directory (or one run's workdir)")
  r.set_defaults(fn=cmd_report)

  n = sub.add_parser(
      "ngram", formatter_class=_Formatter,
      help="byte-level n-gram baselines (orders 1-5, add-k and Kneser-Ney) of an LM config",
      description=_wrap("Validation bits per byte of byte-level n-gram models of orders 1-5 "
                        "(add-k with k chosen on held-out training bytes; interpolated "
                        "Kneser-Ney) on an LM config's corpus and split, scored on the bytes a "
                        "run evaluates (its evaluation windows) or, with --whole-val, on the "
                        "whole validation split. LM runs log the same numbers in their final "
                        "row (ngram_addk_bpb@n=N, ngram_kn_bpb@n=N)."),
      epilog="examples:\n  attnlab ngram --config lm:runlocal\n"
             "  attnlab ngram --config lm --config.data.corpus=stdlib_src --whole-val")
  n.add_argument("--config", required=True, metavar="NAME[:ARG]",
                 help="an LM config (lm, configs/lm.py, with ':ARG' and --config.a.b=v)")
  n.add_argument("--whole-val", action="store_true",
                 help="score every validation byte, not only the evaluation windows")
  n.add_argument("--workdir", help="cache the corpus and the result in DIR/data (optional)")
  n.set_defaults(fn=cmd_ngram)

  o = sub.add_parser(
      "ood", formatter_class=_Formatter,
      help="out-of-distribution error of an icl_regression or icl_garg run",
      description=_wrap("Restore an icl_regression run's latest checkpoint and evaluate it on "
                        "shifted prompts (skewed covariance, scaled inputs, other label noise, "
                        "L = 80 and 160) beside ridge, least squares, debiased GD and GD on the "
                        "same prompts (train/icl_ood.py, experiments/icl_regression/README.md "
                        "Table A6); for an icl_garg run, Garg et al.'s settings (skewed "
                        "covariance, half subspace, scaled inputs and weights, noisy labels, "
                        "orthant prompts, orthogonal queries) beside least squares, 3-NN and "
                        "averaging (train/garg_ood.py, experiments/icl_garg/README.md Table "
                        "B2). Writes a Markdown table and a JSON of the numbers, which "
                        "`attnlab report` turns into tables A6 / B2."),
      epilog="example:\n  attnlab ood --workdir runs/a6/model.num_heads=4,seed=0 --out ood.md")
  o.add_argument("--workdir", required=True,
                 help="an icl_regression or icl_garg run's directory")
  o.add_argument("--out", default=None, help="Markdown table (default: WORKDIR/ood.md)")
  o.add_argument("--json", default=None, help="the numbers (default: --out with .json)")
  o.add_argument("--prompts", type=int, default=None,
                 help="prompts per shift (default: 10000 for icl_regression, 1280 for "
                      "icl_garg)")
  o.set_defaults(fn=cmd_ood)
  from attnlab.train import diagnostics  # numpy only at import; the work is in its main
  diagnostics.add_parser(sub, _Formatter, _wrap)
  return p


def _missing_trainer_module() -> str | None:
  import importlib
  for name in TRAINER_MODULES:
    try:
      importlib.import_module(name)
    except ImportError:
      return name
  return None


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
  return None


def main(argv: list[str] | None = None) -> int:
  missing = _missing_trainer_module()
  if missing:
    print(f"error: the attnlab trainer needs {missing!r}, which is not installed; install the "
          f"trainer extra: pip install 'attnlab[train]'", file=sys.stderr)
    return 1
  argv_given = argv is not None
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = split_overrides(argv)
  p = parser()
  args = p.parse_args(rest)
  if overrides and args.command not in ("train", "sweep", "ngram"):
    first = next(iter(overrides))
    p.error(f"--config.{first}: 'attnlab {args.command}' takes no config overrides "
            f"(only train, sweep and ngram do)")
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
