"""The training system: configs, CLI errors, loss goes down, outputs, resume, init_from."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from attnlab.train import cli, config_loading, loop, settings
from attnlab.train.metrics import read_jsonl

CONFIGS = ("icl_regression", "icl_garg", "lm", "mqar", "match_to_sample", "afa_spiral")


def run_settings(spec, **overrides):
  cd = config_loading.get_config(spec, {k: str(v) for k, v in overrides.items()})
  return settings.from_config(cd)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_builds_its_model(name):
  from attnlab.train import tasks
  from flax import nnx
  here = os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.py")
  for spec in (f"{here}:runlocal", f"{name}:runlocal"):
    run = run_settings(spec)
    task = tasks.get(run.task).Task(run)
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(params=0, dropout=1)))
    n = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n > 0


@pytest.mark.parametrize("argv, message", [
    (["--config", "icl_regression:attention=nope"], "unknown attention variant 'nope'"),
    (["--config", "lm:runlocal", "--config.model.d_model=30"], "not divisible"),
    (["--config", "lm:runlocal", "--config.no_such_field=1"], "no_such_field"),
    (["--config", "lm:runlocal", "--config.attention.impl=triton"], "impl"),
    (["--config", "lm:runlocal", "--config.attention.options.q_chunk=0"], "q_chunk"),
    (["--config", "no_such_config"], "unknown config"),
])
def test_config_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
  workdir = tmp_path / "run"
  code = cli.main(["train", *argv, "--workdir", str(workdir)])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert message in err and len(err.splitlines()) == 1, err
  assert not workdir.exists()


def test_multitask_icl_run_logs_per_task_mse_and_head_dynamics(tmp_path):
  """experiments/icl_regression/README.md §1.9 and §1.6: the two-task run evaluates each output
  and logs omega/mu per head and task with every training row (A5 and A-P2 read them)."""
  run = run_settings("icl_regression:multitask,heads=2", steps=60, log_every=30,
                     eval_every=60, **{"checkpoint.every": 60, "eval.prompts": 500})
  assert run.task_settings.kind == "multitask" and run.task_settings.d == 6
  final = loop.train(run, str(tmp_path), verbose=False)
  assert final["mse@L=48"] == pytest.approx((final["mse_task1@L=48"] + final["mse_task2@L=48"]) / 2)
  # The Bayes posterior mean knows each task's coordinates: far below the zero predictor (~4).
  assert final["ridge_mse_task1@L=48"] < 0.2 < 2.0 < final["zero_mse_task1@L=48"]
  rows = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  assert [r["step"] for r in rows] == [30, 60]
  assert all(f"mu@h={h},t={t}" in r for r in rows for h in (0, 1) for t in (1, 2))
  assert rows[0]["mu@h=0,t=1"] != rows[1]["mu@h=0,t=1"]  # they move with training
  assert "mu@h=1,t=2" in final


@pytest.mark.parametrize("overrides, message", [
    ({"data.kind": "quadratic"}, "config.data.kind='quadratic' is not allowed"),
    ({"data.kind": "multitask", "data.d": "3"}, "config.data.d=3 is too small"),
])
def test_icl_data_kind_errors_name_the_field(overrides, message):
  with pytest.raises(config_loading.ConfigError, match=message):
    run_settings("icl_regression:runlocal", **overrides)


def test_garg_run_reports_error_per_k_with_its_bootstrap_band(tmp_path):
  """experiments/icl_garg/README.md §2.2: normalised error at every k with the 90% bootstrap band
  over prompts, beside the baselines on the same prompts (least squares exact from k = d)."""
  run = run_settings("icl_garg:runlocal", steps=20, log_every=10, eval_every=20,
                     **{"checkpoint.every": 20})
  final = loop.train(run, str(tmp_path), verbose=False)
  d = run.task_settings.d
  for k in range(2 * d + 1):
    assert final[f"nerr_p05@k={k}"] < final[f"nerr@k={k}"] < final[f"nerr_p95@k={k}"]
  assert final[f"least_squares_nerr@k={d}"] < 1e-6 < final["nerr@k=0"]


def test_icl_training_lowers_loss_and_writes_outputs(tmp_path):
  run = run_settings("icl_regression:heads=2,runlocal", steps=300, log_every=50,
                     eval_every=300, **{"checkpoint.every": 150, "eval.prompts": 2000})
  final = loop.train(run, str(tmp_path), verbose=False)
  rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
  train = [r["loss"] for r in rows if r["split"] == "train"]
  assert train[-1] < 0.8 * train[0]
  # Well below the zero predictor (1.1) after 300 steps (2k steps reach ~0.25,
  # experiments/icl_regression/README.md).
  assert final["final"] and final["mse@L=40"] < 0.8 < final["zero_mse@L=40"]
  assert (tmp_path / "config.json").exists()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["150", "300"]
  logged = [r for r in rows if r["split"] == "train"][-1]
  assert {"omega@h=0", "omega@h=1", "mu@h=0", "mu@h=1", "zero_sum_residual"} <= set(logged)
  info = json.loads((tmp_path / "config.json").read_text())
  assert info["config"]["attention"]["name"] == "standard"


def test_lm_training_lowers_loss_and_samples(tmp_path, capsys):
  run = run_settings("lm:runlocal", steps=200, log_every=50, eval_every=100,
                     **{"checkpoint.every": 200})
  final = loop.train(run, str(tmp_path), verbose=False)
  rows = read_jsonl(str(tmp_path / "metrics.jsonl"))
  train = [r["loss"] for r in rows if r["split"] == "train"]
  assert train[-1] < train[0] < np.log(256)  # below the uniform byte model
  # Beats a unigram model of bytes (about 4.7 bits/byte on pydoc).
  assert final["bpb"] < 4.0
  assert final["bpb"] < final["ngram_addk_bpb@n=1"]  # the baselines on the same bytes, logged
  assert final["ngram_kn_bpb@n=5"] < final["ngram_addk_bpb@n=2"] < final["ngram_addk_bpb@n=1"]
  check_sampling(str(tmp_path), capsys)


def check_sampling(workdir, capsys):
  """`attnlab sample` on the trained run: the restored model decoding greedily through its KV
  cache gives the same bytes as argmax over full forward passes, and the CLI prints text."""
  from attnlab.train import sampling
  import jax.numpy as jnp
  _, model, step = sampling.load_run(workdir)
  assert step == 200
  prompt = b"def "
  cached = sampling.generate(model, prompt, length=12, temperature=0.0, top_k=0)
  tokens = list(prompt)
  for _ in range(12):
    logits = model(jnp.asarray([tokens], jnp.int32))
    tokens.append(int(jnp.argmax(logits[0, -1])))
  assert cached == bytes(tokens[len(prompt):])
  capsys.readouterr()
  assert cli.main(["sample", "--workdir", workdir, "--prompt", "def ", "--length", "5"]) == 0
  assert capsys.readouterr().out.startswith("def ")


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path):
  common = dict(log_every=10, eval_every=1000, **{"checkpoint.every": 20, "eval.prompts": 500})
  full = run_settings("icl_regression:heads=2,runlocal", steps=60, **common)
  loop.train(full, str(tmp_path / "a"), verbose=False)
  first = run_settings("icl_regression:heads=2,runlocal", steps=40, **common)
  loop.train(first, str(tmp_path / "b"), verbose=False)
  loop.train(full, str(tmp_path / "b"), verbose=False)  # continue 40 -> 60
  a = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "a/metrics.jsonl"))
       if r["split"] == "train"}
  b = {r["step"]: r["loss"] for r in read_jsonl(str(tmp_path / "b/metrics.jsonl"))
       if r["split"] == "train"}
  assert sorted(a) == sorted(b) == [10, 20, 30, 40, 50, 60]
  for step in (50, 60):
    assert a[step] == b[step]


def test_resumed_metrics_continue_the_training_clock(tmp_path):
  """time_s sums the attempts: a resumed writer starts from the last kept row's time_s, and the
  rows past the restored step (replayed by the resume) are dropped with their times."""
  from attnlab.train.metrics import MetricsWriter
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for step, t in ((20, 500.0), (40, 1000.0), (50, 1250.0)):
      f.write(json.dumps({"step": step, "time_s": t, "split": "train", "loss": 1.0}) + "\n")
  writer = MetricsWriter(str(tmp_path), resume_step=40, enabled=True)
  row = writer.write(50, "train", {"loss": 0.5})
  writer.close()
  assert 1000.0 <= row["time_s"] < 1100.0
  assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [20, 40, 50]


def test_dropout_trains_and_changes_the_training_loss(tmp_path):
  """Dropout > 0 (the spec size's 0.1) trains with and without gradient accumulation, and the
  first step's training loss (same initial parameters) differs from the run without dropout."""
  def first_loss(name, dropout, accum):
    run = run_settings("lm:runlocal", steps=1, log_every=1, eval_every=1,
                       grad_accum_steps=accum, **{"model.dropout": dropout, "eval.windows": 2,
                                                   "checkpoint.every": 1})
    loop.train(run, str(tmp_path / name), verbose=False)
    (row,) = [r for r in read_jsonl(str(tmp_path / name / "metrics.jsonl"))
              if r["split"] == "train"]
    return row["loss"]
  plain = first_loss("plain", 0.0, 1)
  with_dropout = first_loss("dropout", 0.1, 1)
  accumulated = first_loss("accumulated", 0.1, 2)
  assert np.isfinite([plain, with_dropout, accumulated]).all()
  assert abs(with_dropout - plain) > 1e-4 and abs(accumulated - plain) > 1e-4


def test_finished_run_started_again_does_nothing(tmp_path, capsys):
  run = run_settings("icl_regression:heads=1,runlocal", steps=20, log_every=10,
                     eval_every=20, **{"checkpoint.every": 20, "eval.prompts": 200})
  loop.train(run, str(tmp_path), verbose=False)
  before = (tmp_path / "metrics.jsonl").read_text()
  loop.train(run, str(tmp_path), verbose=True)
  assert "already finished" in capsys.readouterr().out
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_init_from_loads_parameters_of_another_run(tmp_path):
  src = run_settings("icl_regression:heads=2,runlocal", steps=40, log_every=20,
                     eval_every=40, **{"checkpoint.every": 40, "eval.prompts": 500})
  loop.train(src, str(tmp_path / "src"), verbose=False)
  dst = run_settings("icl_regression:heads=2,runlocal", steps=1, log_every=1, eval_every=1,
                     **{"checkpoint.every": 1, "eval.prompts": 500,
                        "checkpoint.init_from": str(tmp_path / "src")})
  t = loop.Trainer(dst, str(tmp_path / "dst"))
  from attnlab.train import checkpointing
  mngr = checkpointing.manager(str(tmp_path / "dst"), dst.checkpoint)
  state, _, source = t.restore_or_init(mngr)
  assert source.startswith("init_from")
  src_mngr = checkpointing.manager(str(tmp_path / "src"), src.checkpoint, read_only=True)
  ref = checkpointing.restore(src_mngr, 40, t.abstract_state)
  for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state["step"]) == 0


def test_workdir_of_a_different_config_is_refused(tmp_path):
  run = run_settings("icl_regression:heads=1,runlocal", steps=10, log_every=10,
                     eval_every=10, **{"checkpoint.every": 10, "eval.prompts": 200})
  loop.train(run, str(tmp_path), verbose=False)
  before = sorted(os.listdir(tmp_path))
  code = cli.main(["train", "--config", "icl_regression:heads=2,runlocal", "--workdir",
                   str(tmp_path)])
  assert code == 2
  assert sorted(os.listdir(tmp_path)) == before


SHARDING_SCRIPT = r"""
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, numpy as np
from attnlab.train import config_loading, settings, loop
out = {}
for name, mesh in [("one", {"mesh.data": "1", "mesh.model": "1"}),
                   ("dp_tp", {"mesh.data": "4", "mesh.model": "2"}),
                   ("fsdp", {"mesh.data": "8", "mesh.model": "1", "mesh.fsdp": "True"})]:
  cd = config_loading.get_config("lm:runlocal", dict(mesh, **{"batch_size": "16"}))
  run = settings.from_config(cd)
  if name == "one":
    # a 1-device mesh on an 8-device host: use the first device only
    import attnlab.train.sharding as sh
    sh_make = sh.make_mesh
    sh.make_mesh = lambda m: jax.make_mesh((1, 1), ("data", "model"), devices=jax.devices()[:1],
        axis_types=(jax.sharding.AxisType.Auto,) * 2)
  t = loop.Trainer(run, sys.argv[1] + "/" + name)
  if name == "one":
    sh.make_mesh = sh_make
  state, rest = t.init()
  state, metrics = t.step(state, rest, 0)
  leaves = [np.asarray(x) for x in jax.tree.leaves(state["params"])]
  specs = sorted({str(x.sharding.spec) for x in jax.tree.leaves(state["params"])})
  np.savez(sys.argv[1] + f"/{name}.npz", loss=float(metrics["loss"]), *leaves)
  out[name] = specs
print(json.dumps(out))
"""


def test_sharded_train_step_matches_one_device(tmp_path):
  res = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT, str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  specs = json.loads(res.stdout.strip().splitlines()[-1])
  assert any("model" in s for s in specs["dp_tp"])
  assert any("data" in s for s in specs["fsdp"])
  ref = np.load(tmp_path / "one.npz")
  for name in ("dp_tp", "fsdp"):
    got = np.load(tmp_path / f"{name}.npz")
    assert abs(float(got["loss"]) - float(ref["loss"])) < 1e-5
    for key in ref.files:
      if key != "loss":
        np.testing.assert_allclose(got[key], ref[key], atol=1e-5, rtol=1e-5)


def test_lm_evaluation_at_shorter_contexts():
  """``eval.contexts``: bpb@ctx=c is the mean NLL of the same validation bytes cut into windows
  of c bytes, each run through the model on its own (table L2)."""
  import jax.numpy as jnp
  import optax
  run = run_settings("lm:runlocal", **{"eval.contexts": "(16, 32)", "eval.windows": 4})
  trainer = loop.Trainer(run, workdir=None)
  state, rest = trainer.init()
  metrics = trainer.evaluate(state, rest)
  model = trainer.model(state, rest)
  x, y = trainer.task.val_inputs, trainer.task.val_targets  # [4, 64]
  for c in (16, 32):
    nll = [optax.softmax_cross_entropy_with_integer_labels(
        model(jnp.asarray(x[w:w + 1, s:s + c])), jnp.asarray(y[w:w + 1, s:s + c])).sum()
        for w in range(len(x)) for s in range(0, x.shape[1], c)]
    np.testing.assert_allclose(metrics[f"loss@ctx={c}"], float(sum(nll)) / y.size, rtol=1e-5)
    np.testing.assert_allclose(metrics[f"bpb@ctx={c}"], metrics[f"loss@ctx={c}"] / np.log(2))
  assert "bpb@ctx=64" not in metrics and "bpb" in metrics  # the training length is `bpb`


@pytest.mark.parametrize("contexts", ["(5,)", "(64,)", "(0,)"])
def test_lm_eval_contexts_must_divide_the_training_length(contexts):
  with pytest.raises(config_loading.ConfigError,
                     match=r"config.eval.contexts: .* divisor of config.data.seq_len=64"):
    run_settings("lm:runlocal", **{"eval.contexts": contexts})
