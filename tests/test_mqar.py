"""MQAR (experiments/mqar/README.md §1): the data generator by construction, the config, the
sweep over the registry, and a tiny run that learns."""

import os

import jax
import numpy as np
import pytest

from attnlab.models import attention
from attnlab.train import config_loading, loop, settings, sweep
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
