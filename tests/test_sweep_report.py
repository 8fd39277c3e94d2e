"""Sweeps (expansion, naming, skip-done, failure isolation, locks, slurm) and reports."""

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from attnlab.train import cli, report, sweep

CONFIG = textwrap.dedent("""
    from attnlab.configs import icl_regression

    def get_config(arg=""):
      return icl_regression.get_config(arg)

    def sweep(add):
      add(arg="heads=1", seed=0)
      add(arg="heads=2", seed=1)
      add(arg="attention=relational,heads=2", **{"model.num_heads": 4, "seed": 0})
    """)

# A stand-in for ``attnlab`` used by most tests (starting JAX per run would take seconds): it
# appends its argv to DIR/../calls.jsonl, fails when --config.fail=1 and DIR/../fixed is absent,
# sleeps --config.sleep seconds, and otherwise writes config.json and a final metrics row.
FAKE = textwrap.dedent("""
    import json, os, sys, time
    args = sys.argv[1:]
    assert args[0] == "train"
    workdir = args[args.index("--workdir") + 1]
    over = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
    sweep_dir = os.path.dirname(workdir)
    with open(os.path.join(sweep_dir, "calls.jsonl"), "a") as f:
      f.write(json.dumps(args) + "\\n")
    time.sleep(float(over.get("sleep", 0)))
    if over.get("fail") == "1" and not os.path.exists(os.path.join(sweep_dir, "fixed")):
      print("Traceback: boom on purpose", file=sys.stderr)
      sys.exit(3)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({"config": {"task": "fake", "seed": int(over.get("seed", 0))}}, f)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": 1, "time_s": 0.1, "split": "test", "x": 1.0,
                          "final": True}) + "\\n")
    """)


@pytest.fixture
def cfg(tmp_path):
  path = tmp_path / "cfg.py"
  path.write_text(CONFIG)
  return str(path)


@pytest.fixture
def fake(tmp_path):
  path = tmp_path / "fake_attnlab.py"
  path.write_text(FAKE)
  return [sys.executable, str(path)]


def calls(workdir):
  path = os.path.join(workdir, "calls.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def fake_config(tmp_path, body):
  path = tmp_path / "fakecfg.py"
  path.write_text("def get_config(arg=''):\n  raise AssertionError\n\ndef sweep(add):\n"
                  + textwrap.indent(textwrap.dedent(body), "  "))
  return str(path)


# -- expansion and naming --------------------------------------------------------------------


def test_expand_names_specs_and_overrides(cfg):
  runs = sweep.expand(cfg + ":runlocal", {"steps": "7", "seed": "9"})
  assert [r.name for r in runs] == ["heads=1,seed=0", "heads=2,seed=1",
                                    "attention=relational,heads=2,model.num_heads=4,seed=0"]
  assert runs[0].spec == cfg + ":runlocal,heads=1"
  assert runs[2].spec == cfg + ":runlocal,attention=relational,heads=2"
  # sweep-wide overrides reach every run, the run's own value wins
  assert dict(runs[0].overrides) == {"steps": "7", "seed": "0"}
  assert dict(runs[2].overrides) == {"steps": "7", "seed": "0", "model.num_heads": "4"}
  assert runs[1].train_args("/w") == ["train", "--config", cfg + ":runlocal,heads=2",
                                      "--config.steps=7", "--config.seed=1",
                                      "--workdir", "/w/heads=2,seed=1"]
  assert [r.name for r in sweep.expand(cfg)] == [r.name for r in runs]  # stable


def test_run_names_are_filesystem_safe_and_unique():
  assert sweep.run_name([("attention", "relational"), ("layout", "hybrid"), ("seed", "1")]) \
      == "attention=relational,layout=hybrid,seed=1"
  assert sweep.run_name([("runlocal", None), ("seed", "0")]) == "runlocal,seed=0"
  assert sweep.run_name([("data.files", "a/b c*")]) == "data.files=a_b_c_"
  assert sweep.run_name([]) == "default"
  long_a = sweep.run_name([("k", "x" * 300 + "a")])
  long_b = sweep.run_name([("k", "x" * 300 + "b")])
  assert len(long_a) <= sweep.MAX_NAME and long_a != long_b


def test_duplicate_runs_are_rejected(tmp_path):
  path = fake_config(tmp_path, "add(seed=1)\nadd(seed=1)\n")
  with pytest.raises(sweep.config_loading.ConfigError, match="twice"):
    sweep.expand(path)


EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments")


def test_real_sweeps_expand():
  """One sweep per table, in experiments/<study>/; the study configs define none."""
  spec = os.path.join(EXPERIMENTS, "lm_ablation", "sweep.py")
  lm = sweep.expand(f"{spec}:runlocal")  # L1: 6 variants x 2 layouts x 3 seeds, CB, control
  assert len(lm) == 6 * 2 * 3 + 3 + 2 * 3 and len({r.name for r in lm}) == len(lm)
  assert lm[0].spec.startswith(f"{spec}:runlocal,attention=")
  # A1: H = 1, 4, 8 x 3 seeds, H = 2 x 5 seeds (issue #15); B1 smoke: 3 variants x 3 seeds
  assert len(sweep.expand(os.path.join(EXPERIMENTS, "icl_regression", "a1.py"))) == 3 * 3 + 5
  assert len(sweep.expand(os.path.join(EXPERIMENTS, "icl_garg", "sweep.py:preset=smoke"))) == 9
  from attnlab.configs import icl_garg, icl_regression, lm as lm_config
  for module in (icl_garg, icl_regression, lm_config):
    assert not hasattr(module, "sweep"), module.__name__


# -- local launcher --------------------------------------------------------------------------


def test_failure_is_recorded_others_finish_and_rerun_retries(tmp_path, fake):
  path = fake_config(tmp_path, "add(seed=0)\nadd(seed=1, fail=1)\nadd(seed=2)\n")
  runs = sweep.expand(path)
  workdir = str(tmp_path / "sw")
  results = sweep.run_local(runs, workdir, parallel=2, command=fake, log=lambda *a: None)
  assert {n: r["result"] for n, r in results.items()} == {
      "seed=0": "done", "seed=1,fail=1": "failed", "seed=2": "done"}
  error = open(os.path.join(workdir, "seed=1,fail=1", "error.txt")).read()
  assert "exit status 3" in error and "boom on purpose" in error
  status = json.load(open(os.path.join(workdir, "sweep_status.json")))
  assert status["seed=1,fail=1"]["state"] == "failed" and status["seed=0"]["state"] == "done"
  assert len(calls(workdir)) == 3
  # Rerun: finished runs are skipped, the failed one is retried (and now succeeds).
  open(os.path.join(workdir, "fixed"), "w").close()
  results = sweep.run_local(runs, workdir, parallel=1, command=fake, log=lambda *a: None)
  assert {n: r["result"] for n, r in results.items()} == {
      "seed=0": "skipped", "seed=1,fail=1": "done", "seed=2": "skipped"}
  assert len(calls(workdir)) == 4
  assert not os.path.exists(os.path.join(workdir, "seed=1,fail=1", "error.txt"))


def test_a_locked_run_is_left_to_its_owner(tmp_path, fake):
  path = fake_config(tmp_path, "add(seed=0)\n")
  (run,) = sweep.expand(path)
  workdir = str(tmp_path / "sw")
  os.makedirs(os.path.join(workdir, run.name))
  held = sweep.RunLock(os.path.join(workdir, run.name))
  assert held.acquire()
  assert sweep.state(os.path.join(workdir, run.name)) == "running"
  assert sweep.launch_one(run, workdir, fake, log=lambda *a: None)["result"] == "busy"
  held.release()
  assert sweep.launch_one(run, workdir, fake, log=lambda *a: None)["result"] == "done"
  assert len(calls(workdir)) == 1


def test_two_launchers_never_run_the_same_run_twice(tmp_path, fake):
  path = fake_config(tmp_path, "for s in range(4):\n  add(seed=s, sleep=0.3)\n")
  runs = sweep.expand(path)
  workdir = str(tmp_path / "sw")
  out = []
  threads = [threading.Thread(target=lambda: out.append(sweep.run_local(
      runs, workdir, parallel=2, command=fake, log=lambda *a: None))) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  started = [c[c.index("--workdir") + 1] for c in calls(workdir)]
  assert sorted(started) == sorted(os.path.join(workdir, r.name) for r in runs)
  assert all(sweep.is_done(os.path.join(workdir, r.name)) for r in runs)


def test_slurm_script(tmp_path, cfg, fake, capsys):
  workdir = tmp_path / "sw"
  args = argparse.Namespace(config=cfg + ":runlocal", workdir=str(workdir), launcher="slurm",
                            parallel=2, dry_run=False)
  assert sweep.main(args, {"steps": "5"}) == 0
  script = (workdir / "sweep.sbatch").read_text()
  assert "#SBATCH --array=0-2%2" in script
  assert f"#SBATCH --output={workdir}/slurm/%A_%a.out" in script
  assert script.count("--config.steps=5") == 3 and "--config.model.num_heads=4" in script
  assert f"--workdir {workdir}/heads=2,seed=1" in script
  subprocess.run(["bash", "-n", str(workdir / "sweep.sbatch")], check=True)
  # Array task 1 runs the second run with the same `attnlab train` arguments.
  env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", ATTNLAB=" ".join(fake))
  subprocess.run(["bash", str(workdir / "sweep.sbatch")], check=True, env=env,
                 capture_output=True)
  (call,) = calls(str(workdir))
  assert call == ["train", "--config", cfg + ":runlocal,heads=2", "--config.steps=5",
                  "--config.seed=1", "--workdir", f"{workdir}/heads=2,seed=1"]
  done = subprocess.run(["bash", str(workdir / "sweep.sbatch")], env=env, capture_output=True,
                        text=True)
  assert done.returncode == 0 and "already finished" in done.stdout and len(calls(workdir)) == 1


def test_cli_sweep_dry_run(tmp_path, capsys):
  a1 = os.path.join(EXPERIMENTS, "icl_regression", "a1.py")
  code = cli.main(["sweep", "--config", f"{a1}:preset=smoke", "--workdir",
                   str(tmp_path / "sw"), "--dry-run", "--config.steps=10"])
  out = capsys.readouterr().out
  assert code == 0
  assert "14 runs" in out and "model.num_heads=8,seed=1  [pending]" in out
  assert "--config.steps=10" in out
  assert not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_cli_sweep_end_to_end_with_a_failing_run(tmp_path, capsys):
  """Real `attnlab train` subprocesses: a config error in one run, the other trains; the rerun
  skips the finished run and retries the failed one."""
  path = tmp_path / "e2e.py"
  path.write_text(textwrap.dedent("""
      from attnlab.configs import icl_regression
      get_config = icl_regression.get_config

      def sweep(add):
        add(seed=0)
        add(**{"model.num_heads": 0, "seed": 1})
      """))
  workdir = tmp_path / "sw"
  argv = ["sweep", "--config", f"{path}:runlocal", "--workdir", str(workdir),
          "--config.steps=2", "--config.log_every=1", "--config.eval_every=2",
          "--config.checkpoint.every=2", "--config.eval.prompts=32",
          "--config.eval.lengths=(10,)"]
  assert cli.main(argv) == 1
  ok, bad = workdir / "seed=0", workdir / "model.num_heads=0,seed=1"
  assert sweep.is_done(str(ok))
  assert "num_heads must be positive" in (bad / "error.txt").read_text()
  assert "exit status 2" in (bad / "error.txt").read_text()
  mtime = os.path.getmtime(ok / "metrics.jsonl")
  capsys.readouterr()
  assert cli.main(argv) == 1
  out = capsys.readouterr().out
  assert "1 failed, 1 skipped" in out
  assert os.path.getmtime(ok / "metrics.jsonl") == mtime


# -- reports ---------------------------------------------------------------------------------


def table_lines(text):
  """First table row of each label (later tables repeat labels)."""
  out = {}
  for line in text.splitlines():
    if line.startswith("|"):
      out.setdefault(line.split(" | ")[0].strip("| "), line)
  return out


def write_run(root, name, config, final, rows=(), device="cpu x1"):
  path = os.path.join(root, name)
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"config": config, "task": {}, "device": device}, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
    f.write(json.dumps(dict(step=100, time_s=10.0, split="test", final=True, **final)) + "\n")


def icl_config(heads, seed, name="standard"):
  return {"task": "icl_regression", "seed": seed, "steps": 2000, "log_every": 100,
          "attention": {"name": name, "impl": "chunked" if name == "memory_efficient" else "xla",
                        "layout": "uniform", "options": {}},
          "model": {"num_heads": heads},
          "data": {"d": 5, "n_context": 40, "noise_var": 0.1, "covariance": "isotropic"},
          "checkpoint": {"every": 1000}}


def icl_final(m40, shift=0.0):
  out = {f"mse@L={l}": m for l, m in ((10, 0.6 + shift), (20, 0.37), (40, m40), (100, 0.17))}
  out.update({f"dgd_mse@L={l}": m for l, m in ((10, 0.604), (20, 0.373), (40, 0.244),
                                                      (100, 0.165))})
  out.update({f"ridge_mse@L={l}": 0.12 for l in (10, 20, 40, 100)})
  return out


def test_report_icl_cells_references_and_bands(tmp_path, capsys):
  root = str(tmp_path)
  rows = [{"step": s, "time_s": s / 10, "split": "train", "loss": 1.0 / s} for s in (1, 50, 100)]
  write_run(root, "h1s0", icl_config(1, 0), icl_final(0.40), rows)
  write_run(root, "h1s1", icl_config(1, 1), icl_final(0.42), rows)
  write_run(root, "h2s0", icl_config(2, 0), icl_final(0.30), rows)   # misses its band
  write_run(root, "me2s0", icl_config(2, 0, "memory_efficient"), icl_final(0.30), rows)
  os.makedirs(os.path.join(root, "broken"))
  with open(os.path.join(root, "broken", "error.txt"), "w") as f:
    f.write("exit status 2\ncommand: x\n--- last\nerror: bad config\n")
  assert cli.main(["report", root]) == 0
  out = capsys.readouterr().out
  text = open(os.path.join(root, "report.md")).read()
  assert text.strip() == out.strip()
  lines = table_lines(text)
  assert "0.410 ± 0.127 (n=2)" in lines["`standard`, H=1"]  # 95% t: 12.71 * 0.0141 / sqrt 2
  assert "0.300 (n=1)" in lines["`standard`, H=2"]
  assert "*0.120*" in lines["*ridge λ = σ²d (Bayes)* (computed: closed form on the same test "
                            "prompts)"]
  assert "*trained H=4* (published, `plots.ipynb`, 0.1 removed)" in lines
  assert "- `standard`, H=1: MSE@40 = 0.410 in [0.38, 0.45]: ok" in text
  assert "- `standard`, H=2: MSE@40 = 0.300 in [0.23, 0.26]: **FAIL**" in text
  assert re.search(r"`memory_efficient` = `standard` \(`memory_efficient`, H=2; seeds \[\d+\]; "
                   r"4 metrics, largest \|Δ\| 0\.0e\+00\): ok", text)
  assert "`broken`: exit status 2 / error: bad config" in text
  for png in ("icl_regression_mse_vs_L.png", "icl_regression_train_loss.png"):
    assert open(os.path.join(root, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert f"![icl_regression_mse_vs_L.png](icl_regression_mse_vs_L.png)" in text


def multitask_config(heads, seed=1029):
  c = icl_config(heads, seed)
  c["data"] = {"d": 6, "n_context": 48, "noise_var": 0.1, "covariance": "isotropic",
               "kind": "multitask"}
  return c


def multitask_final(mse1, mse2, mu):
  """``mu``: per head (mu_t1, mu_t2)."""
  out = {"mse@L=48": (mse1 + mse2) / 2, "mse_task1@L=48": mse1, "mse_task2@L=48": mse2,
         "ridge_mse_task1@L=48": 0.035, "zero_mse_task1@L=48": 3.9}
  for h, (a, b) in enumerate(mu):
    out[f"mu@h={h},t=1"], out[f"mu@h={h},t=2"] = a, b
  return out


def test_report_multitask_table_counts_shared_heads(tmp_path):
  """Table A5 (experiments/icl_regression/README.md §1.9) from the final per-head mu: active and
  shared heads, and the published claim as checks (shared heads at H = 3, none at H >= 4)."""
  root = str(tmp_path)
  write_run(root, "h3", multitask_config(3), multitask_final(0.5, 0.7, [(2, 1.5), (-2, 0.01),
                                                                        (0, -1.4)]))
  write_run(root, "h4", multitask_config(4), multitask_final(0.3, 0.4, [(2, 0), (-2, 0),
                                                                        (0, 1.5), (0.5, -1.5)]))
  write_run(root, "a1", icl_config(2, 0), icl_final(0.25))
  text, plots = report.build_report(root)
  lines = table_lines(text)
  assert ("| setting | MSE task 1 | MSE task 2 | active heads | shared heads (serve both tasks) |"
          in text)
  h3 = lines["H=3"].rstrip(" |").split(" | ")
  assert h3[1:3] == ["0.500 (n=1)", "0.700 (n=1)"] and h3[3:5] == ["3.0 (n=1)", "1.0 (n=1)"]
  assert lines["H=4"].split(" | ")[4].startswith("1.0")
  assert "*0.035*" in lines["*Bayes posterior mean per task (ridge on its coordinates)* "
                            "(computed: same test prompts)"]
  assert "- H=3: at least one shared head (found [1]): ok" in text
  assert "- H=4: no shared head (found [1]): **FAIL**" in text
  assert "MSE@L=48" not in lines.get("| setting", "")  # A1 keeps its own columns
  assert "icl_multitask_train_loss.png" not in plots  # no training rows were written


def test_report_multitask_splits_seeds_that_found_different_solutions(tmp_path):
  """Seeds of one H that end with different numbers of shared heads are rows of their own with
  their share of the seeds (issue: bimodal outcomes not averaged into one mean)."""
  root = str(tmp_path)
  pair_for_both = [(2.8, 2.8), (-2.8, -2.8)]      # one ± pair serving both tasks: 2 shared
  one_shared = [(-1.7, -2.2), (-0.2, 2.2)]        # head 1 serves task 2 only: 1 shared
  write_run(root, "s0", multitask_config(2, 0), multitask_final(0.55, 0.56, pair_for_both))
  write_run(root, "s1", multitask_config(2, 1), multitask_final(0.55, 0.57, pair_for_both))
  write_run(root, "s2", multitask_config(2, 2), multitask_final(1.01, 0.67, one_shared))
  text, _ = report.build_report(root)
  lines = table_lines(text)
  both = lines["`standard`, H=2, 2 shared (2 of 3 seeds)"].split(" | ")
  assert both[1].startswith("0.550") and both[1].endswith("(n=2)")
  one = lines["`standard`, H=2, 1 shared (1 of 3 seeds)"].split(" | ")
  assert one[1:3] == ["1.010 (n=1)", "0.670 (n=1)"]
  assert "`standard`, H=2" not in lines  # no row averages the two solutions
  assert "each solution is a row of its own" in text


def test_report_plots_head_dynamics_when_runs_logged_them(tmp_path):
  """A-P2: omega_h and mu_h against step, from the per-head values of the training rows."""
  root = str(tmp_path)
  rows = [{"step": s, "time_s": s / 10, "split": "train", "loss": 1.0 / s, "omega@h=0": 0.1 * s,
           "omega@h=1": -0.1 * s, "mu@h=0": s, "mu@h=1": -s} for s in (1, 50, 100)]
  write_run(root, "h2", icl_config(2, 0), icl_final(0.25), rows)
  text, plots = report.build_report(root)
  assert "icl_regression_heads_vs_step.png" in plots
  assert open(os.path.join(root, "icl_regression_heads_vs_step.png"), "rb").read(4) == b"\x89PNG"


def test_equal_at_printed_precision():
  assert report._equal_printed(5.561472, 5.561554)  # a rounding tie, not a difference
  assert not report._equal_printed(3.2510, 3.2520)
  assert report.cell([1.0, 2.0, 3.0]) == "2.000 ± 1.000 (n=3)"
  assert report.cell([0.5]) == "0.500 ±— (n=1)" and report.cell([]) == "—"


def lm_config(name, layout, seed):
  return {"task": "lm", "seed": seed, "steps": 300, "batch_size": 4,  # runlocal: bands apply
          "attention": {"name": name, "impl": "chunked" if name == "memory_efficient" else "xla",
                        "layout": layout, "options": {}},
          "model": {"d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32, "max_len": 16,
                    "positions": "learned", "cb_position": "none", "dropout": 0.0,
                    "dtype": "float32", "causal": True},
          "data": {"corpus": "pydoc", "data_files": [], "val_files": [], "seq_len": 16},
          "eval": {"windows": 4, "batch_size": 4, "skip_layers": [0]},
          "optimizer": {"name": "adamw"}, "mesh": {"data": -1, "model": 1, "fsdp": False},
          "checkpoint": {"every": 50, "max_to_keep": 1, "async_save": True, "init_from": ""},
          "grad_accum_steps": 1, "log_every": 50, "eval_every": 50}


@pytest.mark.slow
def test_report_on_a_real_run(tmp_path):
  """A real (tiny) Garg run through the CLI, then its report."""
  workdir = tmp_path / "sw" / "run"
  assert cli.main(["train", "--config", "icl_garg:runlocal", "--config.steps=2",
                   "--config.log_every=1", "--config.eval_every=2",
                   "--config.checkpoint.every=2", "--config.eval.prompts=16",
                   "--workdir", str(workdir)]) == 0
  final = [json.loads(l) for l in open(workdir / "metrics.jsonl")][-1]
  assert final["final"] and "nerr@k=10" in final and "least_squares_nerr@k=5" in final
  assert final["least_squares_nerr@k=5"] < 1e-6
  text, plots = report.build_report(str(tmp_path / "sw"))
  assert "| `standard` |" in text and "icl_garg_nerr_vs_k.png" in plots


def test_failed_run_is_summarised_by_its_exception_line():
  lines = ["step 1\n", "Traceback (most recent call last):\n", '  File "x.py", line 1\n',
           "ValueError: head_dim=6 x num_heads=2 must equal d_model=6\n", "-" * 20 + "\n",
           "For simplicity, JAX has removed its internal frames from the traceback.\n"]
  assert sweep.error_line(lines) == "ValueError: head_dim=6 x num_heads=2 must equal d_model=6"
  assert (sweep.error_line(["Error: unknown config field 'x'\n"])
          == "Error: unknown config field 'x'")
  assert sweep.error_line(["killed\n", "\n"]) == "killed"


def test_labels_show_an_option_only_when_it_differs_from_the_variants_default():
  """`softmax_heads=False` (default True) is a distinct row; `cb_scaled=False` (the default)
  and a missing option are the plain layer."""
  varying = ["attention.name", "attention.options.softmax_heads", "attention.options.cb_scaled"]
  plain = {"attention.name": "uniform_broadcast", "attention.options.cb_scaled": False}
  control = dict(plain, **{"attention.options.softmax_heads": False})
  assert report.label(plain, varying) == "`uniform_broadcast`"
  assert report.label(control, varying) == "`uniform_broadcast`, softmax_heads=False"
  assert report.label(dict(plain, **{"attention.options.cb_scaled": True}), varying) == (
      "`uniform_broadcast`, cb_scaled=True")
