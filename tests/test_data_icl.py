"""In-context regression samplers: shapes, purity and statistics
(experiments/icl_regression/README.md §1.1, §1.9, experiments/icl_garg/README.md §2.1)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.train import data_icl

N = 20_000  # prompts for the statistics checks (relative tolerances below are > 4 SE)


def test_linear_regression_shapes_and_purity():
  key = jax.random.key(0)
  batch = data_icl.sample_linear_regression(key, 3)
  assert batch["x"].shape == (3, 40, 5) and batch["y"].shape == (3, 40, 1)
  assert batch["xq"].shape == (3, 5) and batch["yq"].shape == (3, 1)
  assert all(v.dtype == jnp.float32 for v in batch.values())
  again = jax.jit(lambda k: data_icl.sample_linear_regression(k, 3))(key)
  for name in batch:
    np.testing.assert_allclose(batch[name], again[name], rtol=1e-6, atol=1e-6)
  other = data_icl.sample_linear_regression(jax.random.fold_in(key, 1), 3)
  assert not np.allclose(batch["x"], other["x"])


def test_linear_regression_statistics():
  d, noise = 5, 0.1
  batch = data_icl.sample_linear_regression(jax.random.key(1), N, d=d, n_context=8,
                                            noise_var=noise, return_beta=True)
  x, y, xq, yq, beta = (np.asarray(batch[k], np.float64)
                        for k in ("x", "y", "xq", "yq", "beta"))
  assert np.var(beta) == pytest.approx(1 / d, rel=0.03)  # beta ~ N(0, I/d), as in the code
  assert np.mean(x**2) == pytest.approx(1.0, rel=0.02)
  eps = y[..., 0] - np.einsum("bld,bd->bl", x, beta)
  assert np.var(eps) == pytest.approx(noise, rel=0.03)
  eps_q = yq[:, 0] - np.einsum("bd,bd->b", xq, beta)  # the query label is noisy too
  assert np.var(eps_q) == pytest.approx(noise, rel=0.05)
  assert np.mean(yq**2) == pytest.approx(1 + noise, rel=0.04)  # the zero predictor's MSE
  clean = data_icl.sample_linear_regression(jax.random.key(1), 4, query_noise=False,
                                            return_beta=True)
  np.testing.assert_allclose(clean["yq"][:, 0], jnp.einsum("bd,bd->b", clean["xq"],
                                                           clean["beta"]), rtol=1e-5, atol=1e-5)


def test_anisotropic_covariates():
  cov = data_icl.anisotropic_cov(5, 0.5)
  assert cov[0, 2] == 0.25 and np.allclose(cov, cov.T)
  eig = np.linalg.eigvalsh(cov)
  assert eig.min() == pytest.approx(0.36, abs=0.01) and eig.max() == pytest.approx(2.26, abs=0.01)
  batch = data_icl.sample_linear_regression(jax.random.key(2), 4000, cov=cov)
  x = np.asarray(batch["x"], np.float64).reshape(-1, 5)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.03)
  xq = np.asarray(batch["xq"], np.float64)
  np.testing.assert_allclose(np.cov(xq.T), cov, atol=0.1)


def test_multitask_sampler():
  batch = data_icl.sample_multitask(jax.random.key(3), N // 4, return_beta=True)
  x, y, xq, yq = (np.asarray(batch[k], np.float64) for k in ("x", "y", "xq", "yq"))
  b1, b2 = np.asarray(batch["beta1"], np.float64), np.asarray(batch["beta2"], np.float64)
  assert x.shape == (N // 4, 48, 6) and y.shape == (N // 4, 48, 2)
  assert xq.shape == (N // 4, 6) and yq.shape == (N // 4, 2)
  assert np.var(b1) == pytest.approx(1.0, rel=0.05)  # unit variance here
  # Task 1 reads x[:4], task 2 reads x[2:]; query labels are noiseless.
  np.testing.assert_allclose(yq[:, 0], np.einsum("bd,bd->b", xq[:, :4], b1), atol=1e-4)
  np.testing.assert_allclose(yq[:, 1], np.einsum("bd,bd->b", xq[:, 2:], b2), atol=1e-4)
  eps1 = y[..., 0] - np.einsum("bld,bd->bl", x[..., :4], b1)
  eps2 = y[..., 1] - np.einsum("bld,bd->bl", x[..., 2:], b2)
  assert np.var(eps1) == pytest.approx(4 * 0.1, rel=0.03)  # std sqrt(4) * sqrt(0.1)
  assert np.var(eps2) == pytest.approx(4 * 0.1, rel=0.03)
  assert abs(np.corrcoef(eps1.ravel(), eps2.ravel())[0, 1]) < 0.02


def test_garg_sampler():
  batch = data_icl.sample_garg(jax.random.key(4), N // 4, d=8, n_points=11, return_w=True)
  xs, ys, w = (np.asarray(batch[k], np.float64) for k in ("xs", "ys", "w"))
  assert xs.shape == (N // 4, 11, 8) and ys.shape == (N // 4, 11)
  assert np.var(w) == pytest.approx(1.0, rel=0.05)  # no 1/d factor
  np.testing.assert_allclose(ys, np.einsum("bkd,bd->bk", xs, w), atol=1e-4)  # noiseless
  # Curriculum: coordinates >= active_dims are zero; active_dims may be traced.
  sample = jax.jit(lambda k, a: data_icl.sample_garg(k, 16, d=8, n_points=5, active_dims=a))
  part = sample(jax.random.key(5), 3)
  assert np.all(np.asarray(part["xs"])[..., 3:] == 0)
  assert np.all(np.asarray(part["xs"])[..., :3] != 0)
  full = sample(jax.random.key(5), 8)
  np.testing.assert_array_equal(np.asarray(full["xs"])[..., :3], np.asarray(part["xs"])[..., :3])


def test_curriculum_schedule():
  assert data_icl.curriculum(0) == (5, 11)
  assert data_icl.curriculum(1999) == (5, 11)
  assert data_icl.curriculum(2000) == (6, 13)
  assert data_icl.curriculum(29_999) == (19, 39)
  assert data_icl.curriculum(30_000) == (20, 41)
  assert data_icl.curriculum(500_000) == (20, 41)
  nested = {"dims": {"start": 5, "end": 10, "inc": 1, "interval": 2000},
            "points": {"start": 11, "end": 21, "increment": 2, "interval": 2000}}
  flat = types.SimpleNamespace(dims_start=5, dims_end=10, dims_inc=1, dims_interval=2000,
                               points_start=11, points_end=21, points_inc=2,
                               points_interval=2000)
  tuples = {"dims": (5, 10, 1, 2000), "points": (11, 21, 2, 2000)}
  for cfg in (nested, flat, tuples):
    assert data_icl.curriculum(0, cfg) == (5, 11)
    assert data_icl.curriculum(4000, cfg) == (7, 15)
    assert data_icl.curriculum(10_000, cfg) == (10, 21)
    assert data_icl.curriculum(50_000, cfg) == (10, 21)
