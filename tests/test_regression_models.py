"""The in-context-regression models accept every registry variant
(experiments/icl_regression/README.md §1.2, experiments/icl_garg/README.md §2.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ALL_VARIANTS
from attnlab.models import attention
from attnlab.models.regression import AttentionOnlyRegression


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_he_model_runs_every_variant_and_reads_only_the_context(name):
  # adaptive_filter: 6 complex dims per head (its default, 3, is odd; see a2.py).
  options = {"complex_dims": 12} if name == "adaptive_filter" else {}
  model = AttentionOnlyRegression(5, 2, attention=attention.spec(name, **options),
                                  rngs=nnx.Rngs(0))
  kx, ky, kq = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(kx, (3, 8, 5))
  y = jax.random.normal(ky, (3, 8, 1))
  xq = jax.random.normal(kq, (3, 5))
  pred = model(x, y, xq)
  assert pred.shape == (3, 1) and bool(jnp.all(jnp.isfinite(pred)))
  # Dropping the last context pair changes the prediction; a dropped pair's values do not.
  mask = jnp.ones((3, 8), bool).at[:, -1].set(False)
  dropped = model(x, y, xq, context_mask=mask)
  y2 = y.at[:, -1].add(10.0)
  np.testing.assert_allclose(model(x, y2, xq, context_mask=mask), dropped, rtol=1e-5, atol=1e-5)


def test_relational_head_width_must_divide_the_token_width():
  with pytest.raises(ValueError, match="model.num_heads=4 must divide 6"):
    AttentionOnlyRegression(5, 4, attention=attention.spec("relational"), rngs=nnx.Rngs(0))


def _written_out_prediction(m, ov, x, y, xq):
  """sum_h sum_l softmax_l(z_q M_h z_l / sqrt(D)) z_l . OV_h[:, t], in float64 NumPy."""
  b = x.shape[0]
  z = np.concatenate([np.asarray(x), np.asarray(y)], -1).astype(np.float64)  # [B, L, D]
  zq = np.concatenate([np.asarray(xq), np.zeros((b, y.shape[-1]))], -1).astype(np.float64)
  logits = np.einsum("bi,hij,blj->bhl", zq, m, z) / np.sqrt(z.shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhl,blj,hjt->bt", p, z, ov)


@pytest.mark.parametrize("n_out", [1, 2])
def test_head_analysis_matrices_reproduce_the_prediction(n_out):
  """icl_heads' M_h and OV_h (also experiments/icl_regression/heads.py's) give the model's own
  prediction for every output: y_t = sum_h OV_h[:, t] . sum_l softmax_l(z_q M_h z_l / sqrt(D))
  z_l (experiments/icl_regression/README.md §1.2, §1.6, §1.9)."""
  from attnlab.train import icl_heads
  d = 6 if n_out == 2 else 5
  model = AttentionOnlyRegression(d, 3, n_out=n_out, rngs=nnx.Rngs(2))
  m, ov = icl_heads.head_matrices(model)
  assert m.shape == (3, d + n_out, d + n_out) and ov.shape == (3, d + n_out, n_out)
  kx, ky, kq = jax.random.split(jax.random.key(3), 3)
  x, y = jax.random.normal(kx, (2, 7, d)), jax.random.normal(ky, (2, 7, n_out))
  xq = jax.random.normal(kq, (2, d))
  np.testing.assert_allclose(np.asarray(model(x, y, xq)), _written_out_prediction(m, ov, x, y, xq),
                             rtol=1e-4, atol=1e-5)
  if n_out == 1:
    scores = icl_heads.head_scores(m, ov, d)
    assert scores["mu"].shape == (3,) and 0.0 <= scores["zero_sum_residual"] <= 1.0
    logged = icl_heads.parameter_metrics(model, d)
    np.testing.assert_allclose([logged[f"mu@h={h}"] for h in range(3)], ov[:, -1, 0])
    np.testing.assert_allclose([logged[f"omega@h={h}"] for h in range(3)],
                               np.diagonal(m[:, :d, :d], axis1=1, axis2=2).mean(1) / np.sqrt(d + 2))
  else:
    from attnlab.train.data_icl import multitask_slices
    slices = multitask_slices(d)
    t = icl_heads.task_scores(m, ov, d, slices)
    np.testing.assert_allclose(t["mu"][:, 1], ov[:, d + 1, 1])
    logged = icl_heads.parameter_metrics(model, d, slices)
    assert logged["mu@h=2,t=2"] == pytest.approx(ov[2, d + 1, 1])
    assert logged["omega@h=0,t=1"] == pytest.approx(np.diagonal(m[0])[:4].mean() / np.sqrt(d + 2))


def test_task_scores_count_serving_and_shared_heads():
  """A head serves task t when |mu_{h,t}| > 0.1 max |mu|; shared heads serve both (§1.9)."""
  from attnlab.train import icl_heads
  d, heads = 6, 3
  m = np.zeros((heads, d + 2, d + 2))
  ov = np.zeros((heads, d + 2, 2))
  ov[0, d, 0], ov[0, d + 1, 1] = 2.0, -1.5     # serves both
  ov[1, d, 0], ov[1, d + 1, 1] = -2.0, 0.05    # task 1 only (0.05 < 0.1 * 2)
  ov[2, d + 1, 1] = 0.1                        # dormant (0.1 is not > 0.2)
  s = icl_heads.task_scores(m, ov, d, (slice(0, 4), slice(2, 6)))
  assert s["serves"].tolist() == [[True, True], [True, False], [False, False]]
  assert s["shared"].tolist() == [True, False, False] and int(s["active"].sum()) == 2


def test_linear_normalisations_are_the_written_out_formulas():
  """linear_actual = (1/L) sum_l (q.k_l / sqrt(D)) v_l read out; linear_fixed divides by the
  training length instead, so at L = L_train they agree and elsewhere differ by L / L_train."""
  model = AttentionOnlyRegression(5, 2, normalization="linear_actual", rngs=nnx.Rngs(4))
  fixed = AttentionOnlyRegression(5, 2, normalization="linear_fixed", train_length=8,
                                  rngs=nnx.Rngs(4))
  kx, ky, kq = jax.random.split(jax.random.key(5), 3)
  xq = jax.random.normal(kq, (2, 5))
  for length in (8, 16):
    x, y = jax.random.normal(kx, (2, length, 5)), jax.random.normal(ky, (2, length, 1))
    z = np.concatenate([np.asarray(x), np.asarray(y)], -1).astype(np.float64)
    zq = np.concatenate([np.asarray(xq), np.zeros((2, 1))], -1).astype(np.float64)
    wq, wk, wv, wo = (np.asarray(getattr(model.attn, n).kernel[...], np.float64)
                      for n in ("wq", "wk", "wv", "wo"))
    q = (zq @ wq).reshape(2, 2, 6)
    k, v = (z @ wk).reshape(2, length, 2, 6), (z @ wv).reshape(2, length, 2, 6)
    w = np.einsum("bhc,blhc->bhl", q, k) / np.sqrt(6) / length
    expected = (np.einsum("bhl,blhc->bhc", w, v).reshape(2, 12) @ wo)[:, 5]
    np.testing.assert_allclose(np.asarray(model(x, y, xq))[:, 0], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fixed(x, y, xq))[:, 0], expected * length / 8,
                               rtol=1e-4, atol=1e-5)


def test_linear_normalisation_needs_standard_attention():
  with pytest.raises(ValueError, match="must use 'softmax'"):
    AttentionOnlyRegression(5, 2, attention=attention.spec("relational"),
                            normalization="linear_actual", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.normalization='cosine' is not allowed"):
    AttentionOnlyRegression(5, 2, normalization="cosine", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_head_dynamics_are_logged_exactly_for_bilinear_heads(name):
  """omega/mu (experiments/icl_regression/README.md §1.6) apply to q.k scores: `standard` and the
  layers built on it."""
  from attnlab.train import icl_heads
  opts = {"complex_dims": 12} if name == "adaptive_filter" else {}
  model = AttentionOnlyRegression(5, 2 if name != "relational" else 3,
                                  attention=attention.spec(name, **opts), rngs=nnx.Rngs(0))
  expected = name in ("standard", "memory_efficient", "uniform_broadcast")
  assert icl_heads.has_bilinear_heads(model) == expected
