"""In-context linear regression with a one-layer attention-only model (He et al.,
arXiv 2503.12734). Prompts are sampled from ``fold_in(key(seed), step)``; test sets are fixed
per prompt length and shared by all variants.

``data.kind``: ``linear`` (one task, §1.1; anisotropic covariates §1.8) or ``multitask`` (two
overlapping linear tasks read out by two outputs, §1.9: y1 = beta1^T x[:4], y2 = beta2^T x[d-4:],
noiseless query labels). With a bilinear-score variant the per-head omega_h / mu_h of
:mod:`attnlab.train.icl_heads` are logged with every training row."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attnlab.models.attention import AttentionSpec
from attnlab.models.checks import check_choice
from attnlab.models.regression import AttentionOnlyRegression
from attnlab.train import baselines, data_icl, icl_heads
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base

COVARIANCES = ("isotropic", "anisotropic")
KINDS = ("linear", "multitask")
# coordinates of task 1 (first) and task 2 (last), experiments/icl_regression/README.md §1.9
MULTITASK_DIMS = (4, 4)
TEST_SEED = 20250301
EVAL_CHUNK = 1000  # test prompts per evaluation call


@dataclasses.dataclass(frozen=True)
class ICLSettings:
  """Data, model and evaluation of an in-context-regression run."""

  attention: AttentionSpec
  num_heads: int = 1
  d: int = 5
  n_context: int = 40
  noise_var: float = 0.1
  covariance: str = "isotropic"
  eval_lengths: tuple[int, ...] = (10, 20, 40, 100)
  eval_prompts: int = 5000
  normalization: str = "softmax"
  kind: str = "linear"

  @property
  def n_out(self) -> int:
    return 2 if self.kind == "multitask" else 1


def parse_settings(cd, spec) -> ICLSettings:
  data = cd.data
  check_choice("config.data.covariance", data.covariance, COVARIANCES, error=ConfigError)
  kind = data.get("kind", "linear")
  check_choice("config.data.kind", kind, KINDS, error=ConfigError)
  if kind == "multitask":
    if data.d < max(MULTITASK_DIMS):
      raise ConfigError(f"config.data.d={data.d} is too small for data.kind='multitask': each "
                        f"task reads {max(MULTITASK_DIMS)} coordinates")
    if data.covariance != "isotropic":
      raise ConfigError("config.data.covariance must be 'isotropic' with data.kind='multitask'")
  for field in ("d", "n_context"):
    if data[field] <= 0:
      raise ConfigError(f"config.data.{field} must be positive, got {data[field]}")
  if cd.model.num_heads <= 0:
    raise ConfigError(f"config.model.num_heads must be positive, got {cd.model.num_heads}")
  s = ICLSettings(attention=spec,
                  num_heads=cd.model.num_heads, d=data.d, n_context=data.n_context,
                  noise_var=data.noise_var, covariance=data.covariance,
                  eval_lengths=tuple(cd.eval.lengths), eval_prompts=cd.eval.prompts,
                  normalization=cd.model.get("normalization", "softmax"), kind=kind)
  from attnlab.models.regression import check_normalization
  try:
    check_normalization(s.normalization, spec.name, s.n_context)
  except ValueError as e:  # the CLI reports ConfigErrors as one line, exit status 2
    raise ConfigError(f"config.{e}") from None
  return s


class Task(base.Task):
  """MSE on the query label; evaluation: test MSE at several prompt lengths."""

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    self.cov = (np.asarray(data_icl.anisotropic_cov(self.s.d))
                if self.s.covariance == "anisotropic" else None)
    self._test_sets = {}
    self._predict = None
    self._sample = jax.jit(self.sample, static_argnums=(1, 2))
    self.task_slices = (data_icl.multitask_slices(self.s.d, *MULTITASK_DIMS)
                        if self.s.kind == "multitask" else None)

  def describe(self) -> dict:
    """Data facts and the test set's recipe (seed, prompts per length, lengths, distribution):
    the test set depends on these only, never on the training seed."""
    s = self.s
    return {"d": s.d, "n_context": s.n_context, "noise_var": s.noise_var, "kind": s.kind,
            "test_set": {"seed": TEST_SEED, "prompts": s.eval_prompts,
                         "lengths": list(s.eval_lengths), "covariance": s.covariance,
                         "noise_var": s.noise_var, "d": s.d, "kind": s.kind}}

  def test_set_fingerprint(self) -> str:
    """SHA-256 (16 hex digits) of the test prompts of every evaluation length, recorded in the
    final row as ``test_set_sha256`` (``attnlab report`` compares it across runs)."""
    return data_icl.fingerprint({f"L={length}/{k}": v for length in self.s.eval_lengths
                        for k, v in self.test_set(length).items()})

  def build_model(self, rngs: nnx.Rngs) -> AttentionOnlyRegression:
    return AttentionOnlyRegression(self.s.d, self.s.num_heads, n_out=self.s.n_out,
                                   attention=self.s.attention,
                                   normalization=self.s.normalization,
                                   train_length=self.s.n_context, rngs=rngs)

  def sample(self, key, batch: int, n_context: int):
    if self.s.kind == "multitask":
      d1, d2 = MULTITASK_DIMS
      return data_icl.sample_multitask(key, batch, d=self.s.d, n_context=n_context, d1=d1,
                                       d2=d2, noise_var=self.s.noise_var)
    return data_icl.sample_linear_regression(
        key, batch, d=self.s.d, n_context=n_context, noise_var=self.s.noise_var,
        cov=None if self.cov is None else jnp.asarray(self.cov))

  def parameter_metrics(self, model) -> dict:
    """Per-head omega_h / mu_h (experiments/icl_regression/README.md §1.6; per task for §1.9) of
    bilinear-score layers, logged with every training row; empty for the other variants (their
    scores are not bilinear)."""
    if not icl_heads.has_bilinear_heads(model):
      return {}
    return icl_heads.parameter_metrics(model, self.s.d, self.task_slices)

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    key = jax.random.fold_in(jax.random.key(self.run.seed), step)
    batch = self._sample(key, self.run.batch_size, self.s.n_context)
    rows = self.run.batch_size // process_count
    sl = slice(process_index * rows, (process_index + 1) * rows)
    return {k: np.asarray(v)[sl] for k, v in batch.items()}

  def loss(self, model, batch, deterministic: bool):
    pred = model(batch["x"], batch["y"], batch["xq"])
    loss = jnp.mean(jnp.square(pred - batch["yq"]))
    return loss, {"loss": loss}

  def test_set(self, length: int) -> dict:
    if length not in self._test_sets:
      key = jax.random.fold_in(jax.random.key(TEST_SEED), length)
      self._test_sets[length] = {k: np.asarray(v) for k, v in
                                 self.sample(key, self.s.eval_prompts, length).items()}
    return self._test_sets[length]

  def evaluate(self, model_fn) -> dict:
    """Test MSE at each evaluation length (fixed test sets, shared by all runs)."""
    if self._predict is None:
      self._predict = nnx.jit(lambda m, b: m(b["x"], b["y"], b["xq"]))
    model = model_fn()
    out = {}
    for length in self.s.eval_lengths:
      batch = self.test_set(length)
      n = len(batch["yq"])
      # Fixed-size chunks bound memory ([chunk, H, L, L] logits) and compile once per length.
      chunk = min(EVAL_CHUNK, n)
      preds = []
      for i in range(0, n - n % chunk, chunk):
        preds.append(np.asarray(self._predict(model, {k: v[i:i + chunk]
                                                      for k, v in batch.items()})))
      if n % chunk:
        preds.append(np.asarray(self._predict(model, {k: v[n - n % chunk:]
                                                      for k, v in batch.items()})))
      sq = (np.concatenate(preds) - batch["yq"]) ** 2
      out[f"mse@L={length}"] = float(np.mean(sq))
      if self.s.n_out > 1:
        for t in range(self.s.n_out):
          out[f"mse_task{t + 1}@L={length}"] = float(np.mean(sq[:, t]))
    return out

  def predictors(self) -> dict:
    """The closed-form predictors of experiments/icl_regression/README.md §1.4 for this run's
    noise level."""
    nv = self.s.noise_var
    return {
        "multihead_estimator": baselines.multihead_estimator,
        "single_head_optimum": lambda x, y, q: baselines.single_head_optimum(
            x, y, q, noise_var=nv, l_train=self.s.n_context),
        "gd": baselines.gd,
        "dgd": baselines.debiased_gd,
        "ridge": lambda x, y, q: baselines.ridge(x, y, q, noise_var=nv),
        "zero": baselines.zero,
    }

  def reference_metrics(self) -> dict:
    """Closed-form predictors on the same test sets (experiments/icl_regression/README.md §1.4; for
    ``multitask``, the Bayes posterior mean of each task and the zero predictor), and the test
    set's fingerprint ``test_set_sha256`` (a string)."""
    out = {"test_set_sha256": self.test_set_fingerprint()}
    if self.s.kind == "multitask":
      return dict(out, **self._multitask_references())
    for length in self.s.eval_lengths:
      batch = self.test_set(length)
      for name, fn in self.predictors().items():
        pred = np.asarray(fn(batch["x"], batch["y"], batch["xq"]))
        out[f"{name}_mse@L={length}"] = float(np.mean((pred.reshape(batch["yq"].shape)
                                                       - batch["yq"]) ** 2))
    return out

  def _multitask_references(self) -> dict:
    """Per task t: ridge on its own coordinates with lambda = noise variance / prior variance
    (the Bayes posterior mean: beta_t ~ N(0, I), context noise variance d_t * sigma^2) and the
    zero predictor; keys ``ridge_mse_task1@L=48`` etc. (query labels are noiseless)."""
    out = {}
    for length in self.s.eval_lengths:
      batch = self.test_set(length)
      for t, (sl, d_t) in enumerate(zip(self.task_slices, MULTITASK_DIMS)):
        x, xq, y = batch["x"][..., sl], batch["xq"][:, sl], batch["y"][..., t]
        yq = batch["yq"][:, t]
        ridge = np.asarray(baselines.ridge(x, y, xq, lam=d_t * self.s.noise_var))[:, 0]
        out[f"ridge_mse_task{t + 1}@L={length}"] = float(np.mean((ridge - yq) ** 2))
        out[f"zero_mse_task{t + 1}@L={length}"] = float(np.mean(yq ** 2))
    return out
