"""What a new user meets first: --help, --version, overrides, sweep subsets and dry runs,
derived settings, what a run prints, and the package's import footprint (issue #18)."""

import json
import os
import subprocess
import sys

import pytest

from attnlab.train import cli, config_loading, metrics, sweep, sweep_select
from attnlab.train.metrics import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help(*command) -> str:
  with pytest.raises(SystemExit) as e:
    cli.parser().parse_args([*command, "--help"])
  assert e.value.code == 0
  return ""


def test_help_teaches_configs_overrides_and_sweep_subsets(capsys):
  _help()
  text = capsys.readouterr().out
  for needed in ("--config.a.b=VALUE", "runlocal", "icl_regression", "lm", ":heads",
                 "--version", "--print-config", "--only"):
    assert needed in text, needed
  assert "``" not in text and "  common " not in text
  for command in ("train", "demo", "sample", "sweep", "report", "ngram"):
    parser = cli.parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    undocumented = [a.dest for a in sub._actions if not a.help]
    assert not undocumented, (command, undocumented)
  _help("sweep")
  sweep_help = capsys.readouterr().out
  assert "key=value" in sweep_help and "--dry-run" in sweep_help and "glob" in sweep_help


def test_version(capsys):
  from attnlab import __version__
  with pytest.raises(SystemExit):
    cli.parser().parse_args(["--version"])
  assert capsys.readouterr().out.strip() == f"attnlab {__version__}"


def test_bare_boolean_override_does_not_swallow_the_next_flag():
  rest, overrides = cli.split_overrides(
      ["train", "--config", "lm:runlocal", "--config.model.causal", "--workdir", "w",
       "--config.steps", "7", "--config.mesh.fsdp"])
  assert rest == ["train", "--config", "lm:runlocal", "--workdir", "w"]
  assert overrides == {"model.causal": True, "steps": "7", "mesh.fsdp": True}
  cd = config_loading.get_config("lm:runlocal", overrides)
  assert cd.model.causal is True and cd.mesh.fsdp is True and cd.steps == 7
  with pytest.raises(config_loading.ConfigError, match="needs a value"):
    config_loading.get_config("lm:runlocal", {"steps": True})


@pytest.mark.parametrize("command", [["report", "somewhere"], ["demo"],
                                     ["sample", "--workdir", "w", "--prompt", "x"]])
def test_config_overrides_on_commands_without_a_config_are_an_error(command, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main([*command, "--config.steps=3"])
  assert e.value.code == 2
  assert "takes no config overrides" in capsys.readouterr().err


def test_print_config_lists_the_fields(capsys):
  assert cli.main(["train", "--config", "icl_regression:heads=4", "--print-config"]) == 0
  out = capsys.readouterr().out
  assert "eval_every: 500" in out and "num_heads: 4" in out


def test_derived_settings_follow_steps_unless_set():
  cd = config_loading.get_config("icl_regression:heads=4", {"steps": "20000"})
  assert (cd.eval_every, cd.checkpoint.every) == (5000, 10000)
  for order in (("eval_every", "steps"), ("steps", "eval_every")):
    values = {"eval_every": "100", "steps": "20000"}
    cd = config_loading.get_config("icl_regression", {k: values[k] for k in order})
    assert (cd.eval_every, cd.checkpoint.every, cd.steps) == (100, 10000, 20000)
  assert config_loading.get_config("icl_regression", {"steps": "0"}).eval_every == 1
  # The presets resolve as before (config.json records the same values).
  assert config_loading.get_config("icl_regression").to_dict()["eval_every"] == 500
  lm = config_loading.get_config("lm")
  assert (lm.eval_every, lm.checkpoint.every) == (500, 1000)
  lm = config_loading.get_config("lm:runlocal")
  assert (lm.eval_every, lm.checkpoint.every) == (150, 150)
  garg = config_loading.get_config("icl_garg:preset=cpu")
  assert (garg.eval_every, garg.checkpoint.every) == (10_000, 10_000)
  # Committed sweeps that override steps keep the intervals their results were made with.
  h2 = sweep.expand(os.path.join(REPO, "experiments/icl_regression/h2_long.py"))[0]
  assert config_loading.get_config(h2.spec, dict(h2.overrides)).eval_every == 10000
  toy = sweep.expand(os.path.join(REPO, "experiments/icl_garg/toy.py"))[0]
  cd = config_loading.get_config(toy.spec, dict(toy.overrides))
  assert (cd.steps, cd.eval_every, cd.log_every, cd.checkpoint.every) == (5000, 1000, 100, 1000)


def _runs():
  return sweep.expand(os.path.join(REPO, "experiments/lm_ablation/sweep.py:runlocal"))


@pytest.mark.parametrize("patterns, expected", [
    (["attention=relational,seed=0"], ["attention=relational,layout=uniform,seed=0",
                                       "attention=relational,layout=hybrid,seed=0"]),
    (["*standard,layout=hybrid*"], ["attention=standard,layout=hybrid,seed=0",
                                    "attention=standard,layout=hybrid,seed=1",
                                    "attention=standard,layout=hybrid,seed=2"]),
    (["adaptive_filter,layout=uniform,seed=2", "layout=hybrid,seed=2,attention=standard"],
     ["attention=adaptive_filter,layout=uniform,seed=2",
      "attention=standard,layout=hybrid,seed=2"]),
])
def test_only_selects_a_subset(patterns, expected):
  assert sorted(r.name for r in sweep_select.select(_runs(), patterns)) == sorted(expected)


def test_only_on_override_suffix_and_unmatched_pattern():
  runs = sweep.expand(os.path.join(REPO, "experiments/icl_regression/a1.py"))
  assert [r.name for r in sweep_select.select(runs, ["num_heads=8,seed=1"])] == [
      "model.num_heads=8,seed=1"]
  with pytest.raises(config_loading.ConfigError, match="matches none"):
    sweep_select.select(runs, ["num_heads=3"])


def test_sweep_dry_run_checks_every_run_config(tmp_path, capsys):
  argv = ["sweep", "--config", os.path.join(REPO, "experiments/icl_regression/a1.py"),
          "--workdir", str(tmp_path / "sw"),
          "--dry-run", "--only", "seed=0"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "4 runs" in out and "all 4 runs' configs are valid" in out
  assert cli.main(argv + ["--config.optimizer.name=nope"]) == 2
  err = capsys.readouterr().err
  assert "error: run model.num_heads=1,seed=0:" in err and "optimizer.name" in err
  assert "4 of 4 runs have config errors" in err
  assert not (tmp_path / "sw").exists()


def test_train_prints_evaluations_and_a_final_summary(tmp_path, capsys):
  argv = ["train", "--config", "icl_regression:runlocal", "--config.steps=4",
          "--config.log_every=2", "--config.eval_every=2", "--config.eval.prompts=32",
          "--config.eval.lengths=(10,)", "--workdir", str(tmp_path)]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "eval step 2/4: mse@L=10=" in out
  summary = [line for line in out.splitlines() if line.startswith("done:")]
  assert len(summary) == 1 and "final test mse@L=10=" in summary[0], out
  final = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if r.get("final")]
  assert final[0]["split"] == "test"  # ICL evaluates on its fixed test sets


def test_progress_on_a_terminal_without_a_size_prints_plain_lines(monkeypatch, capsys):
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
  monkeypatch.setattr(metrics, "_terminal_size", lambda: (80, 0))  # e.g. under `script`
  progress = metrics.Progress(10, 0)
  assert progress.bar is None
  progress.update(5, {"loss": 0.5})
  progress.message("eval step 5/10: bpb=2")
  out = capsys.readouterr().out
  assert "step 5/10 loss=0.5" in out and "eval step 5/10: bpb=2" in out


def test_cli_names_the_trainer_extra_when_its_packages_are_missing(monkeypatch, capsys):
  monkeypatch.setattr(cli, "TRAINER_MODULES", ("attnlab_no_such_module",))
  assert cli.main(["--help"]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "pip install 'attnlab[train]'" in err


def test_importing_the_layers_loads_no_trainer_packages():
  code = ("import sys, json, attnlab, attnlab.models.attention, attnlab.models.transformer; "
          "print(json.dumps([attnlab.__version__, sorted(sys.modules)]))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd="/")
  version, modules = json.loads(out.stdout)
  tops = {m.split(".")[0] for m in modules}
  # optax comes with flax.nnx itself; the trainer's own packages must not load.
  heavy = {"orbax", "datasets", "matplotlib", "ml_collections", "tqdm", "tensorboardX",
           "pandas", "pyarrow"}
  assert not tops & heavy, tops & heavy
  from importlib import metadata
  assert version == metadata.version("attnlab")


def test_pyproject_keeps_trainer_dependencies_in_an_extra():
  tomllib = pytest.importorskip("tomllib")
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  names = {d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]}
  assert names == {"jax", "flax", "numpy"}
  assert {"optax>=0.2.4", "matplotlib"} <= set(project["optional-dependencies"]["train"])
  assert isinstance(project["license"], str)


def test_unknown_config_lists_only_real_configs():
  with pytest.raises(config_loading.ConfigError) as e:
    config_loading.get_config("no_such_config")
  assert "icl_regression" in str(e.value) and "common" not in str(e.value)


def test_relational_default_size_is_as_the_readme_says():
  import jax
  from flax import nnx
  from attnlab.models import attention

  def count(name, **options):
    layer = attention.make(name, d_model=32, num_heads=4, causal=True, rngs=nnx.Rngs(0),
                           **options)
    return sum(x.size for x in jax.tree.leaves(nnx.state(layer, nnx.Param)))

  assert attention.options_for("relational").n_symbols == 1024  # the authors' default
  assert (count("relational"), count("relational", n_symbols=16), count("standard")) == (
      71232, 6720, 4096)
  with open(os.path.join(REPO, "README.md")) as f:
    readme = f.read()
  assert "71k parameters" in readme and "`n_symbols=16` (6.7k)" in readme


def test_lm_final_row_is_labelled_as_the_validation_evaluation(tmp_path, capsys):
  argv = ["train", "--config", "lm:runlocal", "--config.steps=2", "--config.log_every=1",
          "--config.eval.windows=4", "--workdir", str(tmp_path)]
  assert cli.main(argv) == 0
  assert "final validation loss=" in capsys.readouterr().out
  final = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if r.get("final")]
  assert final[0]["split"] == "eval" and "bpb" in final[0]
