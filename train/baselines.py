"""Closed-form in-context regression predictors (experiments/icl_regression/README.md §1.4,
§1.7, §1.8, experiments/icl_garg/README.md §2.2).

He et al. predictors take ``x [B, L, d]``, ``y [B, L, 1]`` (or ``[B, L]``), ``xq [B, d]`` and
return ``yhat [B, 1]``: jax.numpy (jittable) on jax arrays, numpy otherwise. Garg et al.'s
baselines (numpy, float64) take ``xs [B, K, d]``, ``ys [B, K]`` and return the prediction of
every ``ys[:, k]`` from the first k points, ``[B, K]`` (0 at k = 0).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


OMEGA = 0.13
MU = 3.45
ETA = 2 * OMEGA * MU  # 0.897: the GD step a +-(omega, mu) head pair computes to first order.
ETA_LINEAR = 0.86  # population optimum of the 1/L-normalised GD form at L = 40 (§1.7).


def _xp(*arrays):
  """jax.numpy when any input is a jax array (jittable), else numpy (fast Monte Carlo)."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _labels(y):
  return y[..., 0] if y.ndim == 3 else y


def _softmax(xp, s, axis=-1):
  e = xp.exp(s - xp.max(s, axis=axis, keepdims=True))
  return e / xp.sum(e, axis=axis, keepdims=True)


def softmax_heads(x, y, xq, omegas: Sequence[float], mus: Sequence[float]):
  """``sum_h mu_h sum_l softmax_l(omega_h x_l^T x_q) y_l`` -> ``[B, 1]``."""
  xp = _xp(x, y, xq)
  s_BxL = xp.einsum("bld,bd->bl", x, xq)
  y_BxL = _labels(y)
  out = 0.0
  for omega, mu in zip(omegas, mus):
    out = out + mu * xp.sum(_softmax(xp, omega * s_BxL) * y_BxL, axis=-1)
  return out[:, None]


def multihead_estimator(x, y, xq, omega: float = OMEGA, mu: float = MU):
  """The paper's two-head estimator with ``(omega, mu) = (+-0.13, +-3.45)``."""
  return softmax_heads(x, y, xq, (omega, -omega), (mu, -mu))


def single_head_optimum(x, y, xq, noise_var: float = 0.1, l_train: int = 40):
  """One head with ``omega = 1/sqrt(d)``, ``mu = sqrt(d) / (1 + (1+s2) (d/L_train) e)``.

  ``mu`` keeps ``L_train`` at every test length, as in the reference ``plots.ipynb``.
  """
  d = x.shape[-1]
  mu = math.sqrt(d) / (1.0 + (1.0 + noise_var) * (d / l_train) * math.e)
  return softmax_heads(x, y, xq, (1.0 / math.sqrt(d),), (mu,))


def gd(x, y, xq, eta: float = ETA):
  """One GD step from zero: ``(eta / L) sum_l y_l x_l^T x_q``."""
  xp = _xp(x, y, xq)
  l = x.shape[1]
  return (eta / l) * xp.einsum("bl,bld,bd->b", _labels(y), x, xq)[:, None]


def debiased_gd(x, y, xq, eta: float = ETA):
  """``(eta / L) sum_l y_l (x_l - xbar)^T x_q`` (what a +- head pair computes)."""
  xp = _xp(x, y, xq)
  return gd(x - xp.mean(x, axis=1, keepdims=True), y, xq, eta)


def linear_fixed(x, y, xq, eta: float = ETA_LINEAR, l_train: int = 40):
  """Linear attention normalised by the constant ``L_train`` (§1.7's ``linear_fixed``)."""
  return gd(x, y, xq, eta) * (x.shape[1] / l_train)


def linear_actual(x, y, xq, eta: float = ETA_LINEAR):
  """Linear attention normalised by the actual L (§1.7's ``linear_actual``, the GD form)."""
  return gd(x, y, xq, eta)


def ridge(x, y, xq, lam: float | None = None, noise_var: float = 0.1):
  """Ridge with ``lambda = sigma^2 d`` by default: the Bayes posterior mean for beta ~ N(0, I/d)."""
  xp = _xp(x, y, xq)
  d = x.shape[-1]
  lam = noise_var * d if lam is None else lam
  gram = xp.einsum("bli,blj->bij", x, x) + lam * xp.eye(d, dtype=x.dtype)
  xty = xp.einsum("bld,bl->bd", x, _labels(y))
  beta = xp.linalg.solve(gram, xty[..., None])[..., 0]
  return xp.einsum("bd,bd->b", beta, xq)[:, None]


def zero(x, y, xq):
  """The zero predictor (MSE = 1 + sigma^2 with a noisy query label)."""
  del y
  return _xp(x, xq).zeros((xq.shape[0], 1), x.dtype)


def gd_mse_exact(n_context: int, *, d: int = 5, noise_var: float = 0.1, eta: float = ETA,
                 query_noise: bool = True) -> float:
  """Exact test MSE of :func:`gd` for isotropic x and beta ~ N(0, I/d).

  ``1 + s2 - 2 eta + eta^2 (1 + (d + 1 + s2 d) / L)`` (without ``s2`` when the query label is
  noiseless). Also gives ``linear_actual`` (eta = 0.86) and ``linear_fixed`` (effective step
  ``eta L / L_train``) of §1.7; the minimiser is ``eta* = 1 / (1 + (d + 1 + s2 d) / L)``.
  """
  excess = 1.0 - 2.0 * eta + eta**2 * (1.0 + (d + 1 + noise_var * d) / n_context)
  return excess + (noise_var if query_noise else 0.0)


HE_PREDICTORS: dict[str, Callable] = {
    "multihead_estimator": multihead_estimator,
    "single_head_optimum": single_head_optimum,
    "gd": gd,
    "debiased_gd": debiased_gd,
    "ridge": ridge,
    "zero": zero,
}
"""The rows of experiments/icl_regression/README.md §1.5 (key -> predictor)."""

HE_TABLE = {
    "multihead_estimator": {10: 0.594, 20: 0.371, 40: 0.244, 100: 0.165},
    "single_head_optimum": {10: 0.888, 20: 0.583, 40: 0.409, 100: 0.286},
    "gd": {10: 0.628, 20: 0.375, 40: 0.242, 100: 0.163},
    "debiased_gd": {10: 0.604, 20: 0.373, 40: 0.244, 100: 0.165},
    "ridge": {10: 0.194, 20: 0.134, 40: 0.115, 100: 0.105},
    "zero": {10: 1.10, 20: 1.10, 40: 1.10, 100: 1.10},
}
"""experiments/icl_regression/README.md §1.5 estimator rows (Monte Carlo, 100k prompts per L,
SE <= 0.005)."""


def _numpy_prompts(rng, batch, n_context, d, noise_var, chol=None):
  """numpy twin of :func:`data_icl.sample_linear_regression` (same distribution)."""
  x = rng.standard_normal((batch, n_context, d))
  xq = rng.standard_normal((batch, d))
  if chol is not None:
    x, xq = x @ chol.T, xq @ chol.T
  beta = rng.standard_normal((batch, d)) / math.sqrt(d)
  std = math.sqrt(noise_var)
  y = np.einsum("bld,bd->bl", x, beta) + std * rng.standard_normal((batch, n_context))
  yq = np.einsum("bd,bd->b", xq, beta) + std * rng.standard_normal(batch)
  return {"x": x, "y": y[..., None], "xq": xq, "yq": yq[:, None]}


def he_reference_table(Ls: Sequence[int] = (10, 20, 40, 100), n_prompts: int = 100_000,
                       seed: int = 0, *, d: int = 5, noise_var: float = 0.1,
                       predictors: Mapping[str, Callable] | None = None, cov=None,
                       chunk: int = 10_000, return_se: bool = False):
  """Monte Carlo test MSE of closed-form predictors on He et al.'s prompts.

  The prompts follow :func:`data_icl.sample_linear_regression`'s distribution but are drawn
  with numpy (float64, nothing to compile) from ``default_rng(seed)``, at ``max(Ls)`` context
  pairs; the test length L uses the first L pairs of each prompt, so every predictor and every
  L sees the same prompts (common random numbers).

  Returns:
    ``{name: {L: mse}}``, and with ``return_se`` a second dict of standard errors.
  """
  predictors = dict(HE_PREDICTORS if predictors is None else predictors)
  Ls = [int(l) for l in Ls]
  rng = np.random.default_rng(seed)
  chol = None if cov is None else np.linalg.cholesky(np.asarray(cov, np.float64))
  errs = {name: {l: [] for l in Ls} for name in predictors}
  done = 0
  while done < n_prompts:
    take = min(chunk, n_prompts - done)
    batch = _numpy_prompts(rng, take, max(Ls), d, noise_var, chol)
    for l in Ls:
      x, y = batch["x"][:, :l], batch["y"][:, :l]
      for name, fn in predictors.items():
        errs[name][l].append(np.sum((fn(x, y, batch["xq"]) - batch["yq"]) ** 2, axis=-1))
    done += take
  mse = {name: {} for name in predictors}
  se = {name: {} for name in predictors}
  for name, per_l in errs.items():
    for l, parts in per_l.items():
      e = np.concatenate(parts)
      mse[name][l] = float(e.mean())
      se[name][l] = float(e.std(ddof=1) / math.sqrt(e.size))
  return (mse, se) if return_se else mse


# ------------------------------------------------------------------------------------------------
# Garg et al. baselines: the prediction at every prefix k.


def least_squares_prefix(xs, ys) -> np.ndarray:
  """Least squares on the first k points (minimum-norm when k < d); 0 at k = 0."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  b, k_max, _ = xs.shape
  preds = np.zeros((b, k_max))
  for k in range(1, k_max):
    w = np.linalg.pinv(xs[:, :k]) @ ys[:, :k, None]
    preds[:, k] = np.einsum("bd,bd->b", xs[:, k], w[..., 0])
  return preds


def nearest_neighbours_prefix(xs, ys, n_neighbours: int = 3) -> np.ndarray:
  """Uniform average of the ``min(k, n_neighbours)`` nearest of the first k points (Euclidean)."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  b, k_max, _ = xs.shape
  preds = np.zeros((b, k_max))
  for k in range(1, k_max):
    dist = np.sum((xs[:, :k] - xs[:, k:k + 1]) ** 2, axis=-1)
    m = min(k, n_neighbours)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :m]
    preds[:, k] = np.take_along_axis(ys[:, :k], idx, axis=1).mean(axis=1)
  return preds


def averaging_prefix(xs, ys) -> np.ndarray:
  """``w_hat = mean_{i<k} y_i x_i``, prediction ``w_hat^T x_k``; 0 at k = 0."""
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  b, k_max, d = xs.shape
  csum = np.cumsum(ys[..., None] * xs, axis=1)
  prev = np.concatenate([np.zeros((b, 1, d)), csum[:, :-1]], axis=1)
  counts = np.maximum(np.arange(k_max), 1)[None, :, None]
  return np.einsum("bkd,bkd->bk", prev / counts, xs)


GARG_BASELINES: dict[str, Callable] = {
    "least_squares": least_squares_prefix,
    "3nn": nearest_neighbours_prefix,
    "averaging": averaging_prefix,
}
"""experiments/icl_garg/README.md §2.2 baselines (key -> prefix predictor)."""


def normalized_errors(preds, ys, d: int) -> np.ndarray:
  """Per-prompt normalised squared error ``(pred - y)^2 / d``, ``[B, K]``."""
  return (np.asarray(preds, np.float64) - np.asarray(ys, np.float64)) ** 2 / d


def bootstrap_band(errors_NxK, resamples: int = 1000, percentiles=(5.0, 95.0),
                   seed: int = 0) -> np.ndarray:
  """Percentile bootstrap of the mean over prompts (experiments/icl_garg/README.md §2.2: 1,000
  resamples, the 5th-95th percentile band): ``[len(percentiles), K]``. Each resample draws N
  prompts with replacement (multinomial counts, so memory is ``resamples x N``, not ``x K``)."""
  err = np.asarray(errors_NxK, np.float64)
  n = err.shape[0]
  counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
  means = counts @ err / n  # [resamples, K]
  return np.percentile(means, percentiles, axis=0)


def garg_exact_expectation(name: str, k: int, d: int) -> float:
  """Exact normalised error for isotropic x and w: least squares ``max(1 - k/d, 0)``,
  averaging ``(d + 1)/k`` (k >= 1); both 1 at k = 0."""
  if k == 0:
    return 1.0
  if name == "least_squares":
    return max(1.0 - k / d, 0.0)
  if name == "averaging":
    return (d + 1) / k
  raise ValueError(f"no closed form for {name!r}")
