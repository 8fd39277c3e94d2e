"""Byte-level language modelling on an offline corpus (default: Python's pydoc topics)."""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.models.transformer import LanguageModel, TransformerConfig
from attnlab.train import data_lm, ngram
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base


NGRAM_MAX_TRAIN_BYTES = 64_000_000
"""Largest training split whose n-gram baselines a run computes (memory: ~40 bytes a byte)."""


@dataclasses.dataclass(frozen=True)
class LMSettings:
  """Model, corpus and evaluation of an LM run."""

  model: TransformerConfig
  corpus: str = "pydoc"
  data_files: tuple[str, ...] = ()
  val_files: tuple[str, ...] = ()
  seq_len: int = 256
  eval_windows: int = 64
  eval_batch_size: int = 16
  skip_layers: tuple[int, ...] = ()
  eval_contexts: tuple[int, ...] = ()


def transformer_config(cd, spec, **overrides) -> TransformerConfig:
  """TransformerConfig from ``config.model`` and the run's attention spec."""
  m = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cd.model.to_dict().items()}
  m.update(overrides)
  try:
    return TransformerConfig(attention=spec, **m)
  except TypeError as e:
    raise ConfigError(f"config.model: {e}") from None


def eval_contexts(value, seq_len: int) -> tuple[int, ...]:
  """``config.eval.contexts`` checked: each a divisor of ``seq_len`` below it (table L2)."""
  contexts = tuple(value or ())
  allowed = [c for c in range(1, seq_len) if seq_len % c == 0]
  for c in contexts:
    if not isinstance(c, int) or isinstance(c, bool) or c not in allowed:
      raise ConfigError(f"config.eval.contexts: {c!r} is not allowed; each context must be a "
                        f"divisor of config.data.seq_len={seq_len} below it: {allowed}")
  return tuple(sorted(set(contexts)))


def parse_settings(cd, spec) -> LMSettings:
  data = cd.data.to_dict()
  seq_len = data["seq_len"]
  if seq_len > cd.model.max_len:
    raise ConfigError(f"config.data.seq_len={seq_len} exceeds config.model.max_len="
                      f"{cd.model.max_len}")
  contexts = eval_contexts(cd.eval.get("contexts", ()), seq_len)
  data_lm.check_settings(data["corpus"], data.get("data_files", ()), data.get("val_files", ()),
                         seq_len)
  if not data["corpus"]:  # the empty name resolved here, so config.json names the corpus
    cd.data.corpus = data["corpus"] = data_lm.resolve("", tuple(data.get("data_files", ())))[0]
  model = transformer_config(cd, spec, vocab_size=256, train_length=seq_len)
  return LMSettings(model=model, corpus=data["corpus"],
                    data_files=tuple(data.get("data_files", ())),
                    val_files=tuple(data.get("val_files", ())), seq_len=seq_len,
                    eval_windows=cd.eval.windows, eval_batch_size=cd.eval.batch_size,
                    skip_layers=tuple(cd.eval.get("skip_layers", ())),
                    eval_contexts=contexts)


class Task(base.Task):
  """Next-byte prediction; metrics ``loss`` (nats/byte) and validation ``bpb``.

  With ``eval.contexts`` the evaluation also logs ``bpb@ctx=c`` (and ``loss@ctx=c``): the same
  validation bytes, each training-length window cut into windows of ``c`` bytes, so every
  prediction sees at most ``c`` bytes of context (table L2).

  Every evaluation, the final one included, reads the validation split, so the final row of
  metrics.jsonl is ``"split": "eval"`` (with ``"final": true``); runs before this change
  labelled it ``"test"``, and readers take the final row by its ``final`` flag. The final row
  also carries the n-gram baselines of :meth:`reference_metrics` (table L1's reference rows).
  """

  final_split = "eval"
  final_split_name = "validation"

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    cache_dir = os.path.join(workdir, "data") if workdir else None
    self.corpus = data_lm.load_corpus(
        self.s.corpus, cache_dir=cache_dir,
        data_files=self._data_files(), seq_len=self.s.seq_len)
    self.train_tokens = jnp.asarray(self.corpus.train)
    x, y = data_lm.eval_windows(jnp.asarray(self.corpus.val), self.s.seq_len,
                                max_windows=self.s.eval_windows)
    self.val_inputs, self.val_targets = np.asarray(x), np.asarray(y)
    self._eval = None
    self._window_bpb: dict[str, np.ndarray] = {}  # the latest evaluation's, per window
    self._sample = jax.jit(data_lm.sample_windows,
                           static_argnames=("batch_size", "seq_len", "process_slice"))

  def ngram_result(self) -> dict | None:
    """:func:`attnlab.train.ngram.ngram_bpb` of this run's corpus, scored on the validation
    bytes the model is evaluated on (the targets of the evaluation windows, each with history
    only inside its window), cached in the workdir's ``data/``; None above
    :data:`NGRAM_MAX_TRAIN_BYTES` training bytes."""
    if self.corpus.train.size > NGRAM_MAX_TRAIN_BYTES:
      return None
    starts = data_lm.eval_window_starts(self.corpus.val.size, self.s.seq_len,
                                        self.s.eval_windows)
    positions = (starts[:, None] + 1 + np.arange(self.s.seq_len)[None, :]).ravel()
    assert np.array_equal(self.corpus.val[positions], self.val_targets.ravel())
    cache_dir = os.path.join(self.workdir, "data") if self.workdir else None
    return ngram.cached_ngram_bpb(self.corpus.train, self.corpus.val, cache_dir,
                                  positions=positions,
                                  starts=np.repeat(starts, self.s.seq_len))

  def reference_metrics(self) -> dict:
    """N-gram baselines on the evaluated validation bytes: ``ngram_addk_bpb@n=N`` (k chosen
    on held-out training bytes), ``ngram_kn_bpb@n=N`` (interpolated Kneser-Ney) and
    ``ngram_addk_k@n=N``, N = 1..5 (:mod:`attnlab.train.ngram`)."""
    result = self.ngram_result()
    return {} if result is None else ngram.metrics(result)

  def final_files(self) -> dict:
    """``window_bpb``: bits per byte of every validation window (in window order; ``bpb`` and,
    with ``eval.skip_layers``, ``skip_bpb``) from the final evaluation, with the window starts,
    so that two runs are compared window by window (paired statistics of table L1)."""
    if not self._window_bpb:
      return {}
    starts = data_lm.eval_window_starts(self.corpus.val.size, self.s.seq_len,
                                        self.s.eval_windows)
    return {"window_bpb": {"seq_len": self.s.seq_len, "starts": [int(v) for v in starts],
                           **{k: [round(float(v), 6) for v in vals]
                              for k, vals in self._window_bpb.items()}}}

  def _data_files(self):
    if not self.s.data_files:
      return None
    files = {"train": list(self.s.data_files)}
    if self.s.val_files:
      files["validation"] = list(self.s.val_files)
    return files

  def describe(self) -> dict:
    return {"corpus": self.corpus.name, "corpus_bytes": int(self.corpus.num_bytes)}

  def build_model(self, rngs: nnx.Rngs) -> LanguageModel:
    return LanguageModel(self.s.model, rngs=rngs)

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    x, y = self._sample(self.train_tokens, self.run.seed, step, self.run.batch_size,
                        self.s.seq_len, process_slice=(process_index, process_count))
    return {"inputs": np.asarray(x), "targets": np.asarray(y)}

  def loss(self, model, batch, deterministic: bool):
    logits = model(batch["inputs"], deterministic=deterministic)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    loss = jnp.mean(nll)
    return loss, {"loss": loss, "bpb": loss / math.log(2)}

  def evaluate(self, model_fn) -> dict:
    """Validation bits per byte; ``model_fn()`` returns the current model."""
    if self._eval is None:
      @nnx.jit(static_argnames=("skip",))
      def window_nll(model, x, y, skip=()):
        logits = model(x, skip_layers=skip)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum(axis=-1)
      self._eval = window_nll
    model = model_fn()
    metrics = {}

    def nll_per_window(inputs, targets, skip=(), batch_size=self.s.eval_batch_size):
      sums = [np.asarray(self._eval(model, inputs[i:i + batch_size], targets[i:i + batch_size],
                                    skip=tuple(skip)))
              for i in range(0, len(inputs), batch_size)]
      return np.concatenate(sums) if sums else np.zeros((0,))

    def mean_nll(inputs, targets, skip=(), batch_size=self.s.eval_batch_size):
      return float(nll_per_window(inputs, targets, skip, batch_size).sum()) / max(targets.size, 1)

    self._window_bpb = {}
    for tag, skip in (("", ()), ("skip_", self.s.skip_layers)):
      if tag and not skip:
        continue
      per_window = nll_per_window(self.val_inputs, self.val_targets, skip)
      metrics[f"{tag}loss"] = float(per_window.sum()) / max(self.val_targets.size, 1)
      metrics[f"{tag}bpb"] = metrics[f"{tag}loss"] / math.log(2)
      self._window_bpb[f"{tag}bpb"] = per_window / (self.s.seq_len * math.log(2))
    for c in self.s.eval_contexts:
      per_window = self.s.seq_len // c  # same bytes per batch as the training-length windows
      loss = mean_nll(self.val_inputs.reshape(-1, c), self.val_targets.reshape(-1, c),
                      batch_size=self.s.eval_batch_size * per_window)
      metrics[f"loss@ctx={c}"] = loss
      metrics[f"bpb@ctx={c}"] = loss / math.log(2)
    return metrics
