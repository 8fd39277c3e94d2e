"""MQAR (experiments/mqar/README.md §1): the data generator by construction, the config, the
sweep over the registry, and a tiny run that learns."""

import json
import os

import jax
import numpy as np
import pytest

from attnlab.models import attention
from attnlab.train import config_loading, loop, settings, sweep
from attnlab.train.report import build_report
from attnlab.train.tasks import mqar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sequences_have_answers_at_the_query_positions():
  pairs, vocab = 4, 16
  b = {k: np.asarray(v) for k, v in
       mqar.sample_mqar(jax.random.key(0), batch=64, pairs=pairs, vocab_size=vocab).items()}
  assert b["inputs"].shape == b["targets"].shape == b["mask"].shape == (64, 16)
  for x, y, m in zip(b["inputs"], b["targets"], b["mask"]):
    keys, values = x[0:8:2], x[1:8:2]
    assert len(set(keys)) == pairs and (keys < vocab // 2).all()
    assert (values >= vocab // 2).all() and (values < vocab).all()
    table = dict(zip(keys, values))
    assert np.flatnonzero(m).tolist() == [8, 10, 12, 14]
    for pos in (8, 10, 12, 14):
      assert x[pos] in table                      # the query is a key of the context
      assert y[pos] == table[x[pos]] == x[pos + 1]  # its target is that key's value
    assert (y[m == 0] == 0).all()


def test_answer_metrics_only_count_answer_positions():
  logits = np.zeros((1, 4, 6), np.float32)
  logits[0, 1, 5] = logits[0, 3, 2] = 10.0   # right at position 1, wrong at 3
  logits[0, 0, 0] = 10.0                     # position 0 is not an answer position
  targets = np.array([[3, 5, 0, 4]])
  mask = np.array([[0.0, 1.0, 0.0, 1.0]])
  _, acc = mqar.answer_metrics(logits, targets, mask)
  assert float(acc) == pytest.approx(0.5)


def test_config_errors_name_the_field():
  for over, text in (({"data.pairs": "300"}, "config.data.pairs=300"),
                     ({"data.vocab_size": "7"}, "config.data.vocab_size")):
    cd = config_loading.get_config("mqar:runlocal", over)
    with pytest.raises(config_loading.ConfigError, match=text):
      settings.from_config(cd)


def test_sweep_covers_every_registered_variant_width_and_pairs():
  runs = sweep.expand(os.path.join(REPO, "experiments/mqar/sweep.py"))
  names = {r.name for r in runs}
  for variant in attention.REGISTRY:
    for d in (64, 128):
      for pairs in (4, 8, 16, 32, 64):
        assert any(f"attention={variant},d={d},pairs={pairs}," in n for n in names), variant


def test_curriculum_trains_on_start_pairs_first_with_as_many_answers_per_step():
  cd = config_loading.get_config("mqar:runlocal,pairs=16,curriculum=1", {"steps": "10"})
  run = settings.from_config(cd)
  task = mqar.Task(run)
  assert (task.s.start_pairs, task.s.start_steps) == (4, 5)
  early, late = task.local_batch(4), task.local_batch(5)
  assert early["inputs"].shape == (4 * run.batch_size, 16)
  assert late["inputs"].shape == (run.batch_size, 64)
  assert early["mask"].sum() == late["mask"].sum() == 16 * run.batch_size
  plain = mqar.Task(settings.from_config(config_loading.get_config(
      "mqar:runlocal,pairs=16", {"steps": "10"})))
  assert plain.local_batch(0)["inputs"].shape == (run.batch_size, 64)
  for name, b in (("late", late), ("plain", plain.local_batch(5))):
    assert np.array_equal(b["inputs"], late["inputs"]), name  # the same draws after the start


def test_init_std_keeps_the_d64_value_and_shrinks_as_one_over_sqrt_d():
  stds = {d: config_loading.get_config(f"mqar:d={d}", {}).model.init_std for d in (64, 128, 256)}
  assert stds[64] == 0.1  # the value the committed d = 64 runs used
  assert stds[128] == pytest.approx(0.1 / 2 ** 0.5) and stds[256] == pytest.approx(0.05)


def test_curriculum_config_errors_name_the_field():
  for over, text in (({"data.start_pairs": "32"}, "config.data.start_pairs"),
                     ({"data.start_steps": "0"}, "set both"),
                     ({"data.start_steps": "999"}, "config.data.start_steps")):
    cd = config_loading.get_config("mqar:runlocal,pairs=16,curriculum=1", over)
    with pytest.raises(config_loading.ConfigError, match=text):
      settings.from_config(cd)
  with pytest.raises(ValueError, match="curriculum='2'"):
    config_loading.get_config("mqar:curriculum=2", {})


def test_curriculum_sweep_is_the_grid_with_the_curriculum_d64_first():
  runs = sweep.expand(os.path.join(REPO, "experiments/mqar/curriculum.py"))
  assert len(runs) == 2 * 5 * 3 * len(attention.REGISTRY)
  assert all("curriculum=1" in r.name for r in runs)
  assert {r.name.rsplit("seed=", 1)[1] for r in runs} == {"0", "1", "2"}
  half = len(runs) // 2
  assert all(",d=64," in r.name for r in runs[:half])
  assert all(",d=128," in r.name for r in runs[half:])


@pytest.mark.slow  # 49-67 s measured on 2 loaded cores (2026-12-03)
def test_tiny_run_improves_over_its_initial_accuracy(tmp_path):
  cd = config_loading.get_config("mqar:runlocal,pairs=2", {
      "steps": "150", "batch_size": "32", "data.vocab_size": "16", "optimizer.lr": "3e-3",
      "eval.examples": "256",
      "eval_every": "1000", "checkpoint.every": "1000"})
  run = settings.from_config(cd)
  trainer = loop.Trainer(run, str(tmp_path / "init"))
  state, rest = trainer.init()
  before = trainer.evaluate(state, rest)["accuracy"]
  final = loop.train(run, str(tmp_path / "run"), verbose=False)
  assert final["accuracy"] > before + 0.2, (before, final["accuracy"])


def _write_mqar_run(root, name, attention, pairs, seed, accuracy):
  path = os.path.join(root, name)
  os.makedirs(path)
  config = {"task": "mqar", "seed": seed, "steps": 1000, "batch_size": 64,
            "attention": {"name": attention, "impl": "xla"},
            "model": {"d_model": 64, "d_ff": 256}, "data": {"pairs": pairs}}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"config": config, "task": {}, "device": "cpu x1"}, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 1000, "time_s": 1.0, "split": "test", "accuracy": accuracy,
                        "final": True}) + "\n")


def test_report_gives_each_mode_where_seeds_split_between_solving_and_not(tmp_path):
  root = str(tmp_path)
  for seed, (a4, a16) in enumerate(((1.0, 1.0), (1.0, 0.10), (0.999, 0.12))):
    _write_mqar_run(root, f"std4s{seed}", "standard", 4, seed, a4)
    _write_mqar_run(root, f"std16s{seed}", "standard", 16, seed, a16)
  text, plots = build_report(root)
  row = next(l for l in text.splitlines() if l.startswith("| `standard` | 64 |"))
  p4, p16 = row.split(" | ")[2:4]
  assert p4.startswith("1.000 ± ") and "(n=3)" in p4  # every seed solved: one mean
  assert p16.startswith("solved 1/3: 1.000 (n=1) / not: 0.110 ± ") and "(n=2)" in p16
  assert "mqar_accuracy_vs_pairs.png" in plots


def test_recall_attention_targets_by_hand():
  """experiments/mqar/recall_attention.py: at query position t, the targets are the earlier
  odd positions whose previous token is the queried key (the pair's value and the answer of an
  earlier identical query), nothing at other rows."""
  script = config_loading.load_module(os.path.join(REPO, "experiments", "mqar",
                                                   "recall_attention.py"))
  #                   k1 v1 k2 v2 | q1 a1 q2 a2   (P = 2; both queries ask for k2 = 3)
  seq = np.array([[1, 9, 3, 12, 3, 12, 3, 12]])
  t = script.target_positions(seq, 2)
  assert np.flatnonzero(t[0, 4]).tolist() == [3]
  assert np.flatnonzero(t[0, 6]).tolist() == [3, 5]
  assert not t[0, :4].any() and not t[0, 5].any() and not t[0, 7].any()
