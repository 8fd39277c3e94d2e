"""Garg et al., "What Can Transformers Learn In-Context?" (arXiv 2208.01066),
experiments/icl_garg/README.md §2.

Noiseless linear regression ``y = w^T x`` with ``x, w ~ N(0, I_d)``; the prompt interleaves
``x_1, y_1, x_2, ...`` and a GPT-2-style stack (any attention variant) predicts every ``y_k``
from the first k points. Training draws fresh prompts from ``fold_in(key(seed), step)`` under
the dimension/points curriculum; the loss is the squared error averaged over all prefix
positions. Evaluation: normalised error (squared error / d) at every k = 0..2d on a fixed test
set (metrics ``nerr@k=K``), beside least squares, 3-NN and averaging on the same prompts.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attnlab.models.regression import PromptRegressionModel
from attnlab.models.transformer import TransformerConfig
from attnlab.train import baselines, data_icl
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base

TEST_SEED = 20220803


@dataclasses.dataclass(frozen=True)
class GargSettings:
  """Model, data, curriculum and evaluation of a Garg et al. run.

  ``dims`` and ``points`` are curriculum schedules ``(start, end, inc, interval)``; a schedule
  with ``start == end`` is constant (no curriculum). ``d`` and ``n_points`` are the final
  (evaluation) dimension and prompt points.
  """

  model: TransformerConfig
  d: int = 20
  n_points: int = 41
  dims: tuple[int, int, int, int] = (20, 20, 1, 2000)
  points: tuple[int, int, int, int] = (41, 41, 2, 2000)
  eval_points: int = 41
  eval_prompts: int = 1280
  eval_batch_size: int = 256

  def curriculum(self, step: int) -> tuple[int, int]:
    """``(active_dims, n_points)`` used at ``step``."""
    return data_icl.curriculum(step, {"dims": self.dims, "points": self.points})

  def eval_ks(self) -> tuple[int, ...]:
    """The table's k: d/2 (rounded down), d-1, d and 2d (those below ``eval_points``)."""
    ks = (self.d // 2, self.d - 1, self.d, 2 * self.d)
    return tuple(k for k in dict.fromkeys(ks) if 0 <= k < self.eval_points)


def parse_settings(cd, spec) -> GargSettings:
  """Typed settings from ``config.model``, ``config.data``, ``config.curriculum``,
  ``config.eval`` and ``config.attention``."""
  from attnlab.train.tasks.lm import transformer_config
  data, cur = cd.data, cd.curriculum
  d, n_points = int(data.d), int(data.n_points)
  if d <= 0 or n_points <= 0:
    raise ConfigError(f"config.data.d and config.data.n_points must be positive, got {d}, "
                      f"{n_points}")
  sched = {}
  for var, final in (("dims", d), ("points", n_points)):
    s = tuple(int(v) for v in cur[var])
    if len(s) != 4 or s[3] <= 0 or s[2] <= 0:
      raise ConfigError(f"config.curriculum.{var} must be (start, end, inc, interval) with "
                        f"positive inc and interval, got {tuple(cur[var])}")
    if s[1] != final or not 0 < s[0] <= s[1]:
      raise ConfigError(f"config.curriculum.{var}={s} must run from a positive start up to "
                        f"config.data.{'d' if var == 'dims' else 'n_points'}={final}")
    sched[var] = s
  eval_points = int(cd.eval.points)
  if eval_points < 1 or 2 * max(n_points, eval_points) > cd.model.max_len:
    raise ConfigError(f"config.eval.points={eval_points} and config.data.n_points={n_points} "
                      f"need 2*points <= config.model.max_len={cd.model.max_len}")
  # The model trains on prompts of 2 * n_points tokens (x_1, y_1, ..., x_n, y_n).
  model = transformer_config(cd, spec, vocab_size=1, causal=True, train_length=2 * n_points)
  return GargSettings(model=model, d=d, n_points=n_points, dims=sched["dims"],
                      points=sched["points"], eval_points=eval_points,
                      eval_prompts=int(cd.eval.prompts),
                      eval_batch_size=int(cd.eval.batch_size))


@functools.partial(jax.jit, static_argnames=("batch", "d", "n_points"))
def _sample(key, active_dims, n_active_points, *, batch: int, d: int, n_points: int):
  """A training batch at full shape: coordinates >= active_dims zeroed, and a loss mask that
  keeps the first ``n_active_points`` points (the model is causal, so later points never
  change earlier predictions)."""
  b = data_icl.sample_garg(key, batch, d=d, n_points=n_points, active_dims=active_dims)
  mask = (jnp.arange(n_points) < n_active_points).astype(jnp.float32)
  return b["xs"], b["ys"], jnp.broadcast_to(mask, (batch, n_points))


class Task(base.Task):
  """Squared error over all prefix positions; evaluation: normalised error per k."""

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    self._test = None
    self._predict = None

  def describe(self) -> dict:
    s = self.s
    return {"d": s.d, "n_points": s.n_points, "curriculum": {"dims": list(s.dims),
                                                             "points": list(s.points)},
            "eval_points": s.eval_points, "eval_prompts": s.eval_prompts,
            "eval_ks": list(s.eval_ks()),
            "test_set": {"seed": TEST_SEED, "prompts": s.eval_prompts, "points": s.eval_points,
                         "d": s.d}}

  def build_model(self, rngs: nnx.Rngs) -> PromptRegressionModel:
    return PromptRegressionModel(self.s.d, self.s.model, rngs=rngs)

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    dims, points = self.s.curriculum(step)
    key = jax.random.fold_in(jax.random.key(self.run.seed), step)
    xs, ys, mask = _sample(key, dims, points, batch=self.run.batch_size, d=self.s.d,
                           n_points=self.s.n_points)
    rows = self.run.batch_size // process_count
    sl = slice(process_index * rows, (process_index + 1) * rows)
    return {"xs": np.asarray(xs)[sl], "ys": np.asarray(ys)[sl], "mask": np.asarray(mask)[sl]}

  def loss(self, model, batch, deterministic: bool):
    pred = model(batch["xs"], batch["ys"], deterministic=deterministic)
    mask = batch["mask"]
    loss = jnp.sum(mask * jnp.square(pred - batch["ys"])) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, {"loss": loss}

  def test_set(self) -> dict:
    """Fixed test prompts (full dimension, ``eval_points`` points), shared by all runs."""
    if self._test is None:
      b = data_icl.sample_garg(jax.random.key(TEST_SEED), self.s.eval_prompts, d=self.s.d,
                               n_points=self.s.eval_points)
      self._test = {k: np.asarray(v) for k, v in b.items()}
    return self._test

  def evaluate(self, model_fn) -> dict:
    """``nerr@k=K`` for every k, the mean normalised squared error of the k-th prediction, and
    its 90% bootstrap band over the test prompts (``nerr_p05@k=K``, ``nerr_p95@k=K``)."""
    if self._predict is None:
      self._predict = nnx.jit(lambda m, xs, ys: m(xs, ys))
    model = model_fn()
    test = self.test_set()
    preds = []
    bs = self.s.eval_batch_size
    for i in range(0, len(test["xs"]), bs):
      preds.append(np.asarray(self._predict(model, test["xs"][i:i + bs], test["ys"][i:i + bs])))
    per_prompt = baselines.normalized_errors(np.concatenate(preds), test["ys"], self.s.d)
    lo, hi = baselines.bootstrap_band(per_prompt)
    out = {f"nerr@k={k}": float(e) for k, e in enumerate(per_prompt.mean(axis=0))}
    out.update({f"nerr_p05@k={k}": float(e) for k, e in enumerate(lo)})
    out.update({f"nerr_p95@k={k}": float(e) for k, e in enumerate(hi)})
    return out

  def reference_metrics(self) -> dict:
    """Least squares, 3-NN and averaging on the same prompts: ``<name>_nerr@k=K``; the test
    prompts' fingerprint ``test_set_sha256`` (a string, compared across runs by the report)."""
    test = self.test_set()
    out = {"test_set_sha256": data_icl.fingerprint(test)}
    for name, fn in baselines.GARG_BASELINES.items():
      err = baselines.normalized_errors(fn(test["xs"], test["ys"]), test["ys"], self.s.d)
      out.update({f"{name}_nerr@k={k}": float(e) for k, e in enumerate(err.mean(axis=0))})
    return out
