"""Relational match-to-sample (Dual Attention Transformer, Altabaa et al., arXiv 2405.16727),
experiments/match_to_sample/README.md §1.

An example is nine objects: a source triple and two candidate triples. Every triple has one of
the identity patterns :data:`PATTERNS` (AAA, AAB, ABA, ABB, ABC); one candidate has the source's
pattern, the other a different one, and the label is the index (0 or 1) of the matching
candidate. The objects of each triple are distinct draws (as the pattern needs) from a pool of
``pool_size`` random Gaussian vectors of width ``object_dim``, fixed per seed; the model reads
the vectors through a learned linear map (continuous tokens, no vocabulary), runs a non-causal
stack and scores each candidate triple against the source (``config.model.readout``).

The training set is fixed (``train_size`` examples per seed; epochs over it, reshuffled every
epoch); the test set is ``test_size`` examples from the same pool. With
``config.model.match_params`` set to a variant name (and ``config.model.match_options`` to its
options), ``d_ff`` is chosen so that this run's parameter count is the closest to that
variant's at the same sizes (the parameter-matched ``standard`` control).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from attnlab.models import attention
from attnlab.models.transformer import TransformerConfig
from attnlab.models.vector import VectorSequenceModel
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base

PATTERNS = {"AAA": (0, 0, 0), "AAB": (0, 0, 1), "ABA": (0, 1, 0), "ABB": (0, 1, 1),
            "ABC": (0, 1, 2)}
"""Identity patterns: which of a triple's (up to three distinct) objects fills each slot."""
PATTERN_INDEX = jnp.asarray(list(PATTERNS.values()), jnp.int32)
TEST_SEED = 20240524
EVAL_CHUNK = 1000


@dataclasses.dataclass(frozen=True)
class MatchSettings:
  """Model, data and evaluation of a match-to-sample run."""

  model: TransformerConfig
  pool_size: int = 64
  object_dim: int = 16
  train_size: int = 1000
  test_size: int = 5000
  match_params: str = ""
  readout: str = "mean"
  segments: bool = False
  fresh: bool = False


READOUTS = ("mean", "candidates", "compare")


def build(cfg: TransformerConfig, object_dim: int, readout: str = "mean",
          segments: bool = False, rngs: nnx.Rngs | None = None) -> VectorSequenceModel:
  """The classifier: ``readout`` ``mean`` (mean of the nine outputs, linear 2-way head) or
  ``candidates`` (each candidate triple's mean output scored by one shared linear map, the two
  scores are the logits), ``compare`` (each candidate scored by a shared MLP of the source's and
  the candidate's mean outputs and their product); ``segments`` adds source/candidate and
  slot-in-triple embeddings."""
  cand = readout != "mean"
  return VectorSequenceModel(cfg, in_dim=object_dim, out_dim=1 if cand else 2, pool=readout,
                             group_size=3, segments=segments,
                             rngs=rngs if rngs is not None else nnx.Rngs(0))


def param_count(cfg: TransformerConfig, object_dim: int, readout: str = "mean",
                segments: bool = False) -> int:
  """Parameters of the classifier built from ``cfg`` (abstract shapes only; nothing runs)."""
  model = nnx.eval_shape(lambda: build(cfg, object_dim, readout, segments))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def matched_d_ff(cfg: TransformerConfig, target: int, object_dim: int, readout: str = "mean",
                 segments: bool = False) -> int:
  """The MLP width making ``cfg``'s parameter count the closest to ``target`` (it is linear in
  d_ff: each layer's MLP has ``2 d + 1`` parameters per unit of width)."""
  base_count = param_count(dataclasses.replace(cfg, d_ff=1), object_dim, readout, segments)
  per_unit = cfg.num_layers * (2 * cfg.d_model + 1)
  return max(1, round(1 + (target - base_count) / per_unit))


def parse_settings(cd, spec) -> MatchSettings:
  """Typed settings from ``config.data``, ``config.model`` (``match_params``) and
  ``config.eval``."""
  data = cd.data
  for field in ("pool_size", "object_dim", "train_size"):
    if not isinstance(data[field], int) or data[field] < 1:
      raise ConfigError(f"config.data.{field} must be a positive integer, got {data[field]!r}")
  if data.pool_size < 3:
    raise ConfigError(f"config.data.pool_size must be >= 3 (ABC needs three distinct objects), "
                      f"got {data.pool_size}")
  if cd.eval.test_size < 1:
    raise ConfigError(f"config.eval.test_size must be positive, got {cd.eval.test_size}")
  m = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cd.model.to_dict().items()}
  match, match_options = m.pop("match_params", ""), m.pop("match_options", {})
  readout, segments = m.pop("readout", "mean"), m.pop("segments", False)
  if readout not in READOUTS:
    raise ConfigError(f"config.model.readout={readout!r} is not allowed; choose one of "
                      f"{list(READOUTS)}")
  if not isinstance(segments, bool):
    raise ConfigError(f"config.model.segments must be a bool, got {segments!r}")
  m.update(vocab_size=1, causal=False, train_length=9)
  try:
    model = TransformerConfig(attention=spec, **m)
  except TypeError as e:
    raise ConfigError(f"config.model: {e}") from None
  if match:
    if match not in attention.REGISTRY:
      raise ConfigError(f"config.model.match_params={match!r} is not allowed; choose '' or one "
                        f"of {sorted(attention.REGISTRY)}")
    try:
      other = attention.spec(match, **match_options)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config.model.match_options: {e}") from None
    target = param_count(dataclasses.replace(model, attention=other), data.object_dim, readout,
                         segments)
    model = dataclasses.replace(model, d_ff=matched_d_ff(model, target, data.object_dim, readout,
                                                         segments))
  return MatchSettings(model=model, pool_size=data.pool_size, object_dim=data.object_dim,
                       train_size=data.train_size, test_size=int(cd.eval.test_size),
                       match_params=match, readout=readout, segments=segments,
                       fresh=bool(data.get("fresh", False)))


def object_pool(seed: int, pool_size: int, object_dim: int) -> jax.Array:
  """The seed's pool of object vectors ``[pool_size, object_dim]``, entries N(0, 1)."""
  return jax.random.normal(jax.random.fold_in(jax.random.key(seed), 0), (pool_size, object_dim))


@functools.partial(jax.jit, static_argnames=("n", "pool_size"))
def sample_examples(key, *, n: int, pool_size: int) -> dict:
  """``n`` examples as object indices: ``objects`` int32 ``[n, 9]`` (source, candidate 0,
  candidate 1), ``patterns`` int32 ``[n, 3]`` (indices into :data:`PATTERNS` of the three
  triples) and ``label`` int32 ``[n]`` (the candidate whose pattern equals the source's)."""
  k_src, k_other, k_label, k_obj = jax.random.split(key, 4)
  n_pat = len(PATTERNS)
  source = jax.random.randint(k_src, (n,), 0, n_pat)
  other = (source + jax.random.randint(k_other, (n,), 1, n_pat)) % n_pat  # any other pattern
  label = jax.random.randint(k_label, (n,), 0, 2)
  cand0 = jnp.where(label == 0, source, other)
  cand1 = jnp.where(label == 0, other, source)
  patterns = jnp.stack([source, cand0, cand1], axis=1)
  distinct = jax.vmap(lambda k: jax.random.choice(k, pool_size, (3,), replace=False))(
      jax.random.split(k_obj, 3 * n)).reshape(n, 3, 3)  # three distinct objects per triple
  slots = PATTERN_INDEX[patterns]  # [n, 3 triples, 3 slots]
  objects = jnp.take_along_axis(distinct, slots, axis=2).reshape(n, 9)
  return {"objects": objects.astype(jnp.int32), "patterns": patterns.astype(jnp.int32),
          "label": label.astype(jnp.int32)}


def triple_pattern(ids) -> str:
  """The identity pattern name of three object ids (for checks by hand)."""
  a, b, c = (int(v) for v in ids)
  if a == b == c:
    return "AAA"
  if a == b:
    return "AAB"
  if a == c:
    return "ABA"
  if b == c:
    return "ABB"
  return "ABC"


class Task(base.Task):
  """Cross-entropy of the matching candidate; evaluation: test accuracy."""

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    s = self.s
    self.pool = np.asarray(object_pool(run.seed, s.pool_size, s.object_dim))
    self.train = {k: np.asarray(v) for k, v in sample_examples(
        jax.random.fold_in(jax.random.key(run.seed), 1), n=s.train_size,
        pool_size=s.pool_size).items()}
    self.test = {k: np.asarray(v) for k, v in sample_examples(
        jax.random.fold_in(jax.random.key(TEST_SEED), run.seed), n=s.test_size,
        pool_size=s.pool_size).items()}
    self._perms: dict[int, np.ndarray] = {}
    self._eval = None

  def describe(self) -> dict:
    s = self.s
    return {"train_size": s.train_size, "test_size": s.test_size, "pool_size": s.pool_size,
            "object_dim": s.object_dim, "d_ff": s.model.d_ff, "match_params": s.match_params,
            "readout": s.readout, "segments": s.segments,
            "parameters": param_count(s.model, s.object_dim, s.readout, s.segments)}

  def build_model(self, rngs: nnx.Rngs) -> VectorSequenceModel:
    return build(self.s.model, self.s.object_dim, self.s.readout, self.s.segments, rngs)

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      rng = np.random.default_rng([self.run.seed, epoch, 7])
      self._perms = {epoch: rng.permutation(self.s.train_size),
                     **{e: p for e, p in self._perms.items() if e >= epoch - 1}}
    return self._perms[epoch]

  def batch_indices(self, step: int) -> np.ndarray:
    """Training-set rows of ``step``'s batch: consecutive slices of a per-epoch permutation."""
    i = step * self.run.batch_size + np.arange(self.run.batch_size)
    epoch, pos = i // self.s.train_size, i % self.s.train_size
    return np.array([self._perm(int(e))[p] for e, p in zip(epoch, pos)])

  def _inputs(self, objects) -> np.ndarray:
    return self.pool[objects]

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    rows = self.run.batch_size // process_count
    if self.s.fresh:  # diagnostic: new examples every step (no fixed training set)
      b = sample_examples(jax.random.fold_in(jax.random.key(self.run.seed + 1), step),
                          n=self.run.batch_size, pool_size=self.s.pool_size)
      sl = slice(process_index * rows, (process_index + 1) * rows)
      return {"x": self._inputs(np.asarray(b["objects"])[sl]), "label": np.asarray(b["label"])[sl]}
    idx = self.batch_indices(step)
    idx = idx[process_index * rows:(process_index + 1) * rows]
    return {"x": self._inputs(self.train["objects"][idx]), "label": self.train["label"][idx]}

  def loss(self, model, batch, deterministic: bool):
    logits = model(batch["x"], deterministic=deterministic)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]))
    acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    return loss, {"loss": loss, "accuracy": acc}

  def evaluate(self, model_fn) -> dict:
    """Test ``accuracy`` and ``loss`` (the seed's fixed test set), and training-set
    ``train_accuracy`` (on up to its first 5,000 examples)."""
    if self._eval is None:
      def sums(m, x, y):
        logits = m(x)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(nll), jnp.sum((jnp.argmax(logits, -1) == y).astype(jnp.float32))
      self._eval = nnx.jit(sums)
    model = model_fn()
    out = {}
    for name, data in (("", self.test), ("train_", self.train)):
      n = min(len(data["label"]), 5000)
      nll = correct = 0.0
      for i in range(0, n, EVAL_CHUNK):
        sl = slice(i, min(i + EVAL_CHUNK, n))
        a, b = self._eval(model, self._inputs(data["objects"][sl]), data["label"][sl])
        nll, correct = nll + float(a), correct + float(b)
      out[f"{name}loss"], out[f"{name}accuracy"] = nll / n, correct / n
    return out
