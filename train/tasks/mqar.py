"""Multi-query associative recall (MQAR; "Zoology", Arora et al., arXiv 2312.04927),
experiments/mqar/README.md §1.

A sequence is ``pairs`` key-value pairs followed by ``pairs`` queries::

    k_1 v_1 k_2 v_2 ... k_P v_P | q_1 a_1 q_2 a_2 ... q_P a_P        (length 4 P)

Keys are distinct tokens of the key half of the vocabulary (``0 .. V/2 - 1``); values are drawn
with replacement from the value half (``V/2 .. V - 1``); each query ``q_i`` is a key of the
context chosen uniformly with replacement and ``a_i`` its value. The causal
:class:`~attnlab.models.transformer.LanguageModel` predicts ``a_i`` at the position of ``q_i``;
loss and accuracy are computed only there. Training draws fresh sequences from
``fold_in(key(seed), step)``; the test set is fixed per (pairs, vocabulary) and shared by all runs.

**Curriculum** (``config.data.start_pairs``, ``config.data.start_steps``): the first
``start_steps`` steps train on ``start_pairs``-pair sequences (length 4 ``start_pairs``) with the
batch scaled so that a step has as many answers, then on ``pairs``. From scratch, no variant
found the recall circuit at 16 or more pairs in the study's budget while it does at 4, and the
circuit learned at 4 pairs carries over to 64 (experiments/mqar/README.md §3).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.models.transformer import LanguageModel, TransformerConfig
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base

TEST_SEED = 20231208
EVAL_CHUNK = 250  # test sequences per evaluation call


@dataclasses.dataclass(frozen=True)
class MQARSettings:
  """Model, data and evaluation of an MQAR run (``seq_len = 4 * pairs``)."""

  model: TransformerConfig
  pairs: int = 8
  vocab_size: int = 512
  eval_examples: int = 1000
  start_pairs: int = 0  # curriculum: pairs of the first `start_steps` steps (0: none)
  start_steps: int = 0

  @property
  def seq_len(self) -> int:
    return 4 * self.pairs


def parse_settings(cd, spec) -> MQARSettings:
  """Typed settings from ``config.data`` (pairs, vocab_size), ``config.model``, ``config.eval``."""
  from attnlab.train.tasks.lm import transformer_config
  pairs, vocab = cd.data.pairs, cd.data.vocab_size
  if not isinstance(pairs, int) or pairs < 1:
    raise ConfigError(f"config.data.pairs must be a positive integer, got {pairs!r}")
  if not isinstance(vocab, int) or vocab < 4 or vocab % 2:
    raise ConfigError(f"config.data.vocab_size must be an even integer >= 4, got {vocab!r}")
  if pairs > vocab // 2:
    raise ConfigError(f"config.data.pairs={pairs} exceeds the {vocab // 2} key tokens of "
                      f"config.data.vocab_size={vocab} (keys in a sequence are distinct)")
  if 4 * pairs > cd.model.max_len:
    raise ConfigError(f"config.data.pairs={pairs} needs sequences of 4 * pairs = {4 * pairs} "
                      f"tokens > config.model.max_len={cd.model.max_len}")
  start_pairs = cd.data.get("start_pairs", 0)
  start_steps = cd.data.get("start_steps", 0)
  for field, value, top in (("start_pairs", start_pairs, pairs),
                            ("start_steps", start_steps, cd.steps)):
    if not isinstance(value, int) or not 0 <= value <= top:
      raise ConfigError(f"config.data.{field} must be an integer in 0 … {top}, got {value!r}")
  if bool(start_pairs) != bool(start_steps):
    raise ConfigError(f"config.data.start_pairs={start_pairs} and config.data.start_steps="
                      f"{start_steps}: set both (a curriculum) or neither")
  if start_pairs and cd.batch_size * pairs % start_pairs:
    raise ConfigError(f"config.batch_size={cd.batch_size} × config.data.pairs={pairs} is not a "
                      f"multiple of config.data.start_pairs={start_pairs} (the curriculum keeps "
                      "the answers per step)")
  if cd.eval.examples < 1:
    raise ConfigError(f"config.eval.examples must be positive, got {cd.eval.examples}")
  model = transformer_config(cd, spec, vocab_size=vocab, train_length=4 * pairs, causal=True)
  return MQARSettings(model=model, pairs=pairs, vocab_size=vocab,
                      eval_examples=int(cd.eval.examples), start_pairs=start_pairs,
                      start_steps=start_steps)


@functools.partial(jax.jit, static_argnames=("batch", "pairs", "vocab_size"))
def sample_mqar(key, *, batch: int, pairs: int, vocab_size: int) -> dict:
  """``batch`` MQAR sequences: ``inputs`` and ``targets`` int32 ``[B, 4P]`` and ``mask``
  float32 ``[B, 4P]`` (1 at the query positions ``2P, 2P + 2, ...``, whose target is the
  queried key's value; 0 and target 0 elsewhere)."""
  n_keys = vocab_size // 2
  k_keys, k_vals, k_query = jax.random.split(key, 3)
  keys = jax.vmap(lambda k: jax.random.choice(k, n_keys, (pairs,), replace=False))(
      jax.random.split(k_keys, batch))
  values = n_keys + jax.random.randint(k_vals, (batch, pairs), 0, vocab_size - n_keys)
  which = jax.random.randint(k_query, (batch, pairs), 0, pairs)
  q_keys = jnp.take_along_axis(keys, which, axis=1)
  q_vals = jnp.take_along_axis(values, which, axis=1)
  context = jnp.stack([keys, values], axis=-1).reshape(batch, 2 * pairs)
  queries = jnp.stack([q_keys, q_vals], axis=-1).reshape(batch, 2 * pairs)
  inputs = jnp.concatenate([context, queries], axis=1).astype(jnp.int32)
  answer = jnp.zeros((batch, 4 * pairs), jnp.int32).at[:, 2 * pairs::2].set(q_vals)
  mask = jnp.zeros((batch, 4 * pairs), jnp.float32).at[:, 2 * pairs::2].set(1.0)
  return {"inputs": inputs, "targets": answer, "mask": mask}


def answer_metrics(logits, targets, mask):
  """``(loss, accuracy)``: mean cross-entropy and argmax accuracy over the ``mask`` positions."""
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  n = jnp.maximum(jnp.sum(mask), 1.0)
  return jnp.sum(nll * mask) / n, jnp.sum(correct * mask) / n


class Task(base.Task):
  """Cross-entropy at the answer positions; evaluation: test accuracy and loss there."""

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    self._test = None
    self._eval = None

  def describe(self) -> dict:
    s = self.s
    return {"pairs": s.pairs, "seq_len": s.seq_len, "vocab_size": s.vocab_size,
            "key_tokens": s.vocab_size // 2, "eval_examples": s.eval_examples,
            "curriculum": (f"{s.start_pairs} pairs for the first {s.start_steps} steps"
                           if s.start_steps else "none")}

  def build_model(self, rngs: nnx.Rngs) -> LanguageModel:
    return LanguageModel(self.s.model, rngs=rngs)

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    key = jax.random.fold_in(jax.random.key(self.run.seed), step)
    pairs, batch = self.s.pairs, self.run.batch_size
    if step < self.s.start_steps:
      pairs, batch = self.s.start_pairs, batch * pairs // self.s.start_pairs
    b = sample_mqar(key, batch=batch, pairs=pairs, vocab_size=self.s.vocab_size)
    rows = batch // process_count
    sl = slice(process_index * rows, (process_index + 1) * rows)
    return {k: np.asarray(v)[sl] for k, v in b.items()}

  def loss(self, model, batch, deterministic: bool):
    logits = model(batch["inputs"], deterministic=deterministic)
    loss, acc = answer_metrics(logits, batch["targets"], batch["mask"])
    return loss, {"loss": loss, "accuracy": acc}

  def test_set(self) -> dict:
    """Fixed test sequences of this (pairs, vocabulary), the same for every run."""
    if self._test is None:
      key = jax.random.fold_in(jax.random.key(TEST_SEED), self.s.pairs)
      b = sample_mqar(key, batch=self.s.eval_examples, pairs=self.s.pairs,
                      vocab_size=self.s.vocab_size)
      self._test = {k: np.asarray(v) for k, v in b.items()}
    return self._test

  def evaluate(self, model_fn) -> dict:
    """Test ``accuracy`` and ``loss`` at the answer positions (fixed test set)."""
    if self._eval is None:
      def sums(m, b):
        loss, acc = answer_metrics(m(b["inputs"]), b["targets"], b["mask"])
        n = jnp.sum(b["mask"])
        return loss * n, acc * n, n
      self._eval = nnx.jit(sums)
    model, test = model_fn(), self.test_set()
    total = np.zeros(3)
    n = len(test["inputs"])
    for i in range(0, n, EVAL_CHUNK):
      total += np.array([float(v) for v in self._eval(model, {k: v[i:i + EVAL_CHUNK]
                                                              for k, v in test.items()})])
    return {"loss": total[0] / total[2], "accuracy": total[1] / total[2]}
