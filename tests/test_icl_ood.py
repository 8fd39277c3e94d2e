"""The out-of-distribution evaluation of experiments/icl_regression/README.md Table A6
(train/icl_ood.py): shifted prompts, baselines on them, and `attnlab ood` on a tiny run."""

import json

import numpy as np
import pytest

from attnlab.train import baselines, icl_ood


@pytest.mark.parametrize("spread", ["linear", "geometric"])
@pytest.mark.parametrize("rotate", [True, False])
def test_skew_covariance_has_identity_trace_and_a_1_to_10_spread(spread, rotate):
  d = 5
  cov = icl_ood.skew_covariance(d, spread, rotate=rotate)
  ev = np.linalg.eigvalsh(cov)
  np.testing.assert_allclose(np.trace(cov), d, rtol=1e-12)
  np.testing.assert_allclose(ev.max() / ev.min(), 10.0, rtol=1e-10)
  base = np.linspace(1, 10, d) if spread == "linear" else np.geomspace(1, 10, d)
  np.testing.assert_allclose(ev, base * d / base.sum(), rtol=1e-10)
  np.testing.assert_allclose(cov, cov.T, atol=1e-12)
  if not rotate:
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-12)
  u = icl_ood.rotation(d)
  np.testing.assert_allclose(u @ u.T, np.eye(d), atol=1e-12)


def test_prompts_shapes_dtypes_and_empirical_covariance():
  n, l, d = 4000, 10, 5
  p = icl_ood.ood_prompts("skew_geometric", n, l, d=d, seed=1)
  assert p["x"].shape == (n, l, d) and p["y"].shape == (n, l, 1)
  assert p["xq"].shape == (n, d) and p["yq"].shape == (n, 1) and p["beta"].shape == (n, d)
  assert all(p[k].dtype == np.float32 for k in ("x", "y", "xq", "yq", "beta"))
  x = p["x"].reshape(-1, d).astype(np.float64)
  emp = x.T @ x / len(x)
  cov = icl_ood.skew_covariance(d, "geometric")
  assert np.abs(emp - cov).max() < 0.1 * np.abs(cov).max()
  # Same seed, same prompts: a pure function.
  again = icl_ood.ood_prompts("skew_geometric", n, l, d=d, seed=1)
  for k in ("x", "y", "xq", "yq"):
    np.testing.assert_array_equal(p[k], again[k])


def test_shifts_transform_the_same_draws():
  iso = icl_ood.ood_prompts("isotropic", 50, 20)
  big = icl_ood.ood_prompts("scale=2", 50, 20)
  np.testing.assert_allclose(big["x"], 2 * iso["x"], rtol=1e-6)
  np.testing.assert_array_equal(big["beta"], iso["beta"])
  clean = icl_ood.ood_prompts("noise=0", 50, 20)
  assert clean["noise_var"] == 0.0 and iso["noise_var"] == 0.1
  np.testing.assert_allclose(clean["y"][..., 0], np.einsum("bld,bd->bl", clean["x"],
                                                           clean["beta"]), atol=1e-5)
  noisy = icl_ood.ood_prompts("noise=0.5", 50, 20)
  resid = noisy["y"][..., 0] - clean["y"][..., 0]
  np.testing.assert_allclose(resid, np.sqrt(5) * (iso["y"][..., 0] - clean["y"][..., 0]),
                             atol=1e-4)
  skew = icl_ood.ood_prompts("skew_linear", 50, 20)
  ev = icl_ood.skew_eigenvalues(5, "linear")
  u = icl_ood.rotation(5)
  np.testing.assert_allclose(skew["x"], (iso["x"].astype(np.float64) * np.sqrt(ev)) @ u.T,
                             atol=1e-5)
  with pytest.raises(ValueError, match="unknown shift"):
    icl_ood.parse_shift("rotate=3")


def test_baselines_on_shifted_prompts_equal_direct_calls():
  shifts, lengths, n = ("skew_linear", "noise=0.5", "scale=0.5"), (10, 40), 300
  res = icl_ood.evaluate(None, shifts=shifts, lengths=lengths, n_prompts=n)
  for shift in shifts:
    p = icl_ood.ood_prompts(shift, n, max(lengths), seed=icl_ood.PROMPT_SEED)
    v = p["noise_var"]
    for length in lengths:
      x, y, xq, yq = (p["x"][:, :length].astype(np.float64),
                      p["y"][:, :length].astype(np.float64), p["xq"].astype(np.float64),
                      p["yq"].astype(np.float64))
      direct = {"ridge": baselines.ridge(x, y, xq, noise_var=v),
                "least_squares": baselines.ridge(x, y, xq, lam=0.0),
                "dgd": baselines.debiased_gd(x, y, xq), "gd": baselines.gd(x, y, xq)}
      for name, pred in direct.items():
        assert res[name][shift][length] == pytest.approx(float(np.mean((pred - yq) ** 2)),
                                                         rel=1e-12)
  # The Bayes ridge beats debiased GD under skew; least squares ignores the covariance.
  assert res["ridge"]["skew_linear"][40] < res["dgd"]["skew_linear"][40]


def test_ood_command_on_a_tiny_trained_run(tmp_path, capsys):
  from attnlab.train import cli
  work = tmp_path / "run"
  assert cli.main(["train", "--config", "icl_regression:heads=2,runlocal", "--workdir",
                   str(work), "--config.steps=20", "--config.log_every=10",
                   "--config.eval_every=20", "--config.checkpoint.every=20",
                   "--config.eval.prompts=200"]) == 0
  out = tmp_path / "ood.md"
  assert cli.main(["ood", "--workdir", str(work), "--out", str(out), "--prompts", "100"]) == 0
  text = out.read_text()
  assert "| `skew_geometric` | model |" in text and "L = 160" in text
  doc = json.loads((tmp_path / "ood.json").read_text())
  assert doc["step"] == 20 and doc["num_heads"] == 2 and doc["n_prompts"] == 100
  assert set(doc["mse"]) == {"model", *icl_ood.BASELINES}
  assert set(doc["mse"]["model"]) == set(icl_ood.SHIFTS)
  ref = icl_ood.evaluate(None, n_prompts=100)
  for name in icl_ood.BASELINES:
    for shift in icl_ood.SHIFTS:
      for length in icl_ood.LENGTHS:
        assert doc["mse"][name][shift][str(length)] == ref[name][shift][length]
  assert all(np.isfinite(v) for per in doc["mse"]["model"].values() for v in per.values())
  assert cli.main(["ood", "--workdir", str(tmp_path / "nothing")]) == 2
