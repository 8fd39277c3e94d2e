"""Closed-form predictors: the experiments/icl_regression/README.md §1.5 table (Monte Carlo),
Garg et al.'s baselines."""

import math

import jax
import numpy as np
import pytest

from attnlab.train import baselines, data_icl

N_PROMPTS = 30_000
# experiments/icl_regression/README.md §1.5: the table's own standard error is <= 0.005
TABLE_SE = 0.005


@pytest.fixture(scope="module")
def he_table():
  return baselines.he_reference_table(n_prompts=N_PROMPTS, seed=0, return_se=True)


def test_he_reference_table_matches_studies_table(he_table):
  mse, se = he_table
  assert set(mse) == set(baselines.HE_TABLE)
  for name, row in baselines.HE_TABLE.items():
    for length, target in row.items():
      # +-0.02, widened only where 3 combined standard errors exceed it (single-head, L=10).
      tol = max(0.02, 3 * math.hypot(se[name][length], TABLE_SE))
      assert abs(mse[name][length] - target) < tol, (name, length, mse[name][length], target)


def test_he_orderings(he_table):
  mse, _ = he_table
  for length in (10, 20, 40, 100):
    assert mse["ridge"][length] < mse["debiased_gd"][length] < mse["single_head_optimum"][length]
    assert mse["single_head_optimum"][length] < mse["zero"][length]
  for name in ("multihead_estimator", "ridge", "debiased_gd"):
    assert mse[name][10] > mse[name][20] > mse[name][40] > mse[name][100]


def test_gd_matches_its_closed_form(he_table):
  mse, se = he_table
  for length in (10, 20, 40, 100):
    exact = baselines.gd_mse_exact(length)
    assert abs(mse["gd"][length] - exact) < 4 * se["gd"][length] + 1e-3
  # §1.7: eta* = 1 / (1 + (d + 1 + s2 d) / L) = 0.860 at L = 40, and the linear_fixed U-shape.
  eta_star = 1 / (1 + (5 + 1 + 0.1 * 5) / 40)
  assert eta_star == pytest.approx(0.86, abs=1e-3)
  fixed = [baselines.gd_mse_exact(l, eta=0.86 * l / 40) for l in (10, 20, 40, 60, 80, 100)]
  np.testing.assert_allclose(fixed, [0.751, 0.488, 0.241, 0.364, 0.855, 1.72], atol=0.01)


def test_numpy_and_jax_paths_agree():
  batch = data_icl.sample_linear_regression(jax.random.key(0), 64, n_context=12)
  np_batch = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  for name, fn in baselines.HE_PREDICTORS.items():
    out_jax = jax.jit(fn)(batch["x"], batch["y"], batch["xq"])
    out_np = fn(np_batch["x"], np_batch["y"], np_batch["xq"])
    assert out_jax.shape == out_np.shape == (64, 1)
    np.testing.assert_allclose(out_jax, out_np, rtol=2e-4, atol=2e-4, err_msg=name)
  # y may come without its trailing axis.
  np.testing.assert_allclose(baselines.ridge(np_batch["x"], np_batch["y"][..., 0], np_batch["xq"]),
                             baselines.ridge(np_batch["x"], np_batch["y"], np_batch["xq"]))


def test_debiased_gd_is_the_first_order_head_pair():
  batch = {k: np.asarray(v, np.float64) for k, v in
           data_icl.sample_linear_regression(jax.random.key(1), 256).items()}
  omega, mu = 1e-4, 1.0
  pair = baselines.multihead_estimator(batch["x"], batch["y"], batch["xq"], omega, mu)
  dgd = baselines.debiased_gd(batch["x"], batch["y"], batch["xq"], eta=2 * omega * mu)
  np.testing.assert_allclose(pair, dgd, rtol=1e-3, atol=1e-7)


@pytest.fixture(scope="module")
def garg_errors():
  d, k_max = 5, 11
  batch = data_icl.sample_garg(jax.random.key(2), 8000, d=d, n_points=k_max)
  xs, ys = np.asarray(batch["xs"], np.float64), np.asarray(batch["ys"], np.float64)
  preds = {name: fn(xs, ys) for name, fn in baselines.GARG_BASELINES.items()}
  errors = {name: baselines.normalized_errors(p, ys, d) for name, p in preds.items()}
  return d, errors, preds


def _check(errors, k, expected, rel):
  mean = errors[:, k].mean()
  se = errors[:, k].std() / math.sqrt(errors.shape[0])
  assert abs(mean - expected) < max(rel * expected, 4 * se) + 1e-9, (k, mean, expected, se)


def test_garg_baselines_exact_expectations(garg_errors):
  d, errors, preds = garg_errors
  for name, p in preds.items():
    np.testing.assert_array_equal(p[:, 0], 0.0, err_msg=name)  # every baseline predicts 0 at k=0
    _check(errors[name], 0, 1.0, 0.05)
  for k in range(1, 11):
    _check(errors["least_squares"], k, baselines.garg_exact_expectation("least_squares", k, d),
           0.05)
  assert errors["least_squares"][:, d:].max() < 1e-6  # exact once k >= d (float32 data)
  for k in range(2, 11):
    _check(errors["averaging"], k, baselines.garg_exact_expectation("averaging", k, d), 0.06)
  # 3-NN with min(k, 3) neighbours, uniform weights: for k <= 3 it averages all k previous
  # labels, so the error is exactly 1 + 1/k.
  for k in (1, 2, 3):
    _check(errors["3nn"], k, 1 + 1 / k, 0.05)


def test_least_squares_is_minimum_norm():
  rng = np.random.default_rng(0)
  xs, ys = rng.standard_normal((4, 4, 6)), rng.standard_normal((4, 4))
  preds = baselines.least_squares_prefix(xs, ys)
  for b in range(4):
    for k in range(1, 4):
      w, *_ = np.linalg.lstsq(xs[b, :k], ys[b, :k], rcond=None)  # LAPACK: minimum norm
      assert preds[b, k] == pytest.approx(xs[b, k] @ w, rel=1e-9, abs=1e-12)


def test_bootstrap_band_of_the_mean():
  """90% percentile bootstrap of a mean over prompts: brackets the mean, about 2 x 1.645
  standard errors wide, exact for constant errors (experiments/icl_garg/README.md §2.2)."""
  rng = np.random.default_rng(0)
  err = rng.exponential(1.0, size=(1280, 3))
  err[:, 2] = 0.25
  lo, hi = baselines.bootstrap_band(err)
  mean, se = err.mean(0), err.std(0, ddof=1) / np.sqrt(len(err))
  assert np.all(lo[:2] < mean[:2]) and np.all(mean[:2] < hi[:2])
  np.testing.assert_allclose(hi[:2] - lo[:2], 2 * 1.645 * se[:2], rtol=0.15)
  assert lo[2] == pytest.approx(0.25) and hi[2] == pytest.approx(0.25)
