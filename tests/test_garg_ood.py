"""Garg et al.'s out-of-distribution settings (train/garg_ood.py, table B2 of
experiments/icl_garg/README.md): each setting's defining property, shared draws, baselines."""

import json

import numpy as np
import pytest

from attnlab.train import baselines, garg_ood

D, P, N = 6, 13, 64


@pytest.mark.parametrize("d", [5, 6, 20])
def test_skewed_covariance_has_the_stated_eigenvalues_and_trace_d(d):
  t = garg_ood.input_transform(d, "skewed")
  cov = t.T @ t  # x = z T with z ~ N(0, I): Cov x = T^T T
  inv_sq = 1.0 / np.arange(1, d + 1) ** 2
  expected = np.sort(d * inv_sq / inv_sq.sum())
  np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(cov)), expected, rtol=1e-10, atol=1e-12)
  assert np.trace(cov) == pytest.approx(d)  # the identity's trace: E|x|^2 = d
  assert not np.allclose(cov, np.diag(np.diag(cov)))  # rotated, not axis-aligned
  x = garg_ood.prompts("skewed", 4000, 3, d)["xs"].reshape(-1, d)
  emp = x.T @ x / len(x)
  assert np.abs(emp - cov).max() < 0.15 and np.trace(emp) == pytest.approx(d, rel=0.05)


@pytest.mark.parametrize("d", [5, 6])
def test_half_subspace_prompts_lie_in_a_half_dimensional_subspace(d):
  pr = garg_ood.prompts("half_subspace", N, P, d)
  x = pr["xs"].reshape(-1, d)
  sv = np.linalg.svd(x, compute_uv=False)
  assert (sv > 1e-8 * sv[0]).sum() == d // 2
  u = garg_ood.rotation(d)[:, :d // 2]  # the span: the rotation's first d//2 columns
  np.testing.assert_allclose(x - (x @ u) @ u.T, 0.0, atol=1e-10)
  t = garg_ood.input_transform(d, "half_subspace")
  assert np.trace(t.T @ t) == pytest.approx(d)
  # least squares is exact once it has d//2 points: the prompt only spans d//2 directions
  res = garg_ood.evaluate(None, d=d, n_points=P, shifts=("half_subspace",), n_prompts=N)
  assert res["least_squares"]["half_subspace"][d // 2] < 1e-12
  assert res["least_squares"]["half_subspace"][d // 2 - 1] > 0.1


def test_orthogonal_query_has_zero_inner_product_with_every_prompt_x():
  pr = garg_ood.prompts("orthogonal_query", N, P, D)
  xs, qx = pr["xs"], pr["qx"]
  for k in range(1, D):
    dots = np.einsum("nkd,nd->nk", xs[:, :k], qx[:, k])
    assert np.abs(dots).max() < 1e-10
    np.testing.assert_allclose(np.linalg.norm(qx[:, k], axis=-1),
                               np.linalg.norm(xs[:, k], axis=-1), rtol=1e-12)
  np.testing.assert_array_equal(qx[:, 0], xs[:, 0])
  assert np.isnan(qx[:, D:]).all()  # no orthogonal direction left once k >= d
  np.testing.assert_allclose(pr["qy"][:, :D], np.einsum("npd,nd->np", qx[:, :D], pr["w"]))
  res = garg_ood.evaluate(None, d=D, n_points=P, shifts=("orthogonal_query",), n_prompts=N)
  assert all(res["least_squares"]["orthogonal_query"][k] is None for k in range(D, P))
  # the minimum-norm least-squares fit is zero on the orthogonal complement: it predicts 0
  assert res["least_squares"]["orthogonal_query"][D - 1] == pytest.approx(
      float(np.mean(pr["qy"][:, D - 1] ** 2)) / D)


def test_orthant_prompts_are_positive_after_the_sign_flip_and_queries_are_not():
  pr = garg_ood.prompts("orthant", N, P, D)
  flipped = pr["xs"] * pr["signs"]  # one sign vector per prompt
  assert (flipped > 0).all()
  assert (pr["qx"] < 0).any() and not np.array_equal(pr["qx"], pr["xs"])
  np.testing.assert_allclose(np.abs(pr["xs"]), np.abs(pr["qx"]))  # the same draws
  np.testing.assert_allclose(pr["ys"], np.einsum("npd,nd->np", pr["xs"], pr["w"]))
  np.testing.assert_allclose(pr["qy"], np.einsum("npd,nd->np", pr["qx"], pr["w"]))


def test_noisy_labels_and_scales():
  base = garg_ood.prompts("standard", 2000, P, D)
  noisy = garg_ood.prompts("noisy_labels", 2000, P, D)
  clean = base["ys"] * np.sqrt(D) / base["ys"].std()
  resid = noisy["ys"] - clean
  assert resid.std() == pytest.approx(garg_ood.NOISE_STD, rel=0.03)
  np.testing.assert_allclose(noisy["qy"], noisy["ys"])  # the query label is noisy too
  for s in (0.333, 2.0):
    sx = garg_ood.prompts(f"scale_x={s}", N, P, D)
    np.testing.assert_allclose(sx["xs"], s * garg_ood.prompts("standard", N, P, D)["xs"])
    sw = garg_ood.prompts(f"scale_w={s}", N, P, D)
    np.testing.assert_allclose(sw["ys"], s * garg_ood.prompts("standard", N, P, D)["ys"])
  with pytest.raises(ValueError, match="unknown setting"):
    garg_ood.prompts("rotated", N, P, D)


def test_settings_share_draws_and_baselines_match_direct_calls():
  a, b = (garg_ood.prompts(s, N, P, D) for s in ("standard", "orthant"))
  np.testing.assert_array_equal(a["w"], b["w"])
  res = garg_ood.evaluate(None, d=D, n_points=P, n_prompts=N)
  for name, fn in baselines.GARG_BASELINES.items():
    direct = np.mean(baselines.normalized_errors(fn(a["xs"], a["ys"]), a["ys"], D), axis=0)
    assert [res[name]["standard"][k] for k in range(P)] == pytest.approx(list(direct),
                                                                        rel=1e-12)
  # orthant: each position predicted from a copy whose point k is the (unrestricted) query
  k = 4
  cut = b["xs"][:, :k + 1].copy()
  cut[:, k] = b["qx"][:, k]
  pred = baselines.least_squares_prefix(cut, b["ys"][:, :k + 1])[:, k]
  assert res["least_squares"]["orthant"][k] == pytest.approx(
      float(np.mean((pred - b["qy"][:, k]) ** 2)) / D, rel=1e-12)


def test_prompts_fingerprint_is_stable_and_seed_dependent():
  f1 = garg_ood.prompts_fingerprint(("standard", "orthant"), 16, 5, 3)
  assert f1 == garg_ood.prompts_fingerprint(("standard", "orthant"), 16, 5, 3)
  assert f1 != garg_ood.prompts_fingerprint(("standard", "orthant"), 16, 5, 3, seed=1)


@pytest.mark.slow
def test_ood_command_on_a_tiny_garg_run_and_its_report(tmp_path):
  from attnlab.train import cli, report
  work = tmp_path / "sw" / "standard-0"
  assert cli.main(["train", "--config", "icl_garg:runlocal", "--config.steps=4",
                   "--config.log_every=2", "--config.eval_every=4",
                   "--config.checkpoint.every=4", "--config.eval.prompts=32",
                   "--workdir", str(work)]) == 0
  assert cli.main(["ood", "--workdir", str(work), "--prompts", "32"]) == 0
  doc = json.loads((work / "ood.json").read_text())
  assert doc["task"] == "icl_garg" and doc["n_prompts"] == 32 and doc["d"] == 5
  assert set(doc["nerr"]) == {"model", *garg_ood.BASELINES}
  assert set(doc["nerr"]["model"]) == set(garg_ood.SHIFTS)
  assert doc["nerr"]["model"]["orthogonal_query"]["5"] is None
  assert np.isfinite(doc["nerr"]["model"]["skewed"]["10"])
  text, _ = report.build_report(str(tmp_path / "sw"))
  assert "table B2" in text and "| `half_subspace` | **`standard`** (seeds 0) |" in text
