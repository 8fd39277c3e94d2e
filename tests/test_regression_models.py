"""The in-context-regression models accept every registry variant (studies.md §1.2, §2.1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import ALL_VARIANTS
from attnlab.models.regression import AttentionOnlyRegression


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_he_model_runs_every_variant_and_reads_only_the_context(name):
  # adaptive_filter: 6 complex dims per head (its default, 3, is odd; see a2.py).
  options = {"complex_dims": 12} if name == "adaptive_filter" else {}
  model = AttentionOnlyRegression(5, 2, attention_name=name, attention_options=options,
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
    AttentionOnlyRegression(5, 4, attention_name="relational", rngs=nnx.Rngs(0))


def test_head_analysis_matrices_reproduce_the_prediction():
  """experiments/icl_regression/heads.py's M_h and OV_h give the model's own prediction:
  y = sum_h OV_h . sum_l softmax_l(z_q M_h z_l / sqrt(D)) z_l (studies.md §1.2, §1.6)."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(__file__), "..", "experiments", "icl_regression",
                      "heads.py")
  spec = importlib.util.spec_from_file_location("heads", path)
  heads = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(heads)
  model = AttentionOnlyRegression(5, 3, rngs=nnx.Rngs(2))
  m, ov = heads.head_matrices(model)
  kx, ky, kq = jax.random.split(jax.random.key(3), 3)
  x, y = jax.random.normal(kx, (2, 7, 5)), jax.random.normal(ky, (2, 7, 1))
  xq = jax.random.normal(kq, (2, 5))
  z = np.concatenate([np.asarray(x), np.asarray(y)], -1).astype(np.float64)  # [B, L, D]
  zq = np.concatenate([np.asarray(xq), np.zeros((2, 1))], -1).astype(np.float64)
  logits = np.einsum("bi,hij,blj->bhl", zq, m, z) / np.sqrt(6)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  expected = np.einsum("bhl,blj,hj->b", p, z, ov)
  np.testing.assert_allclose(np.asarray(model(x, y, xq))[:, 0], expected, rtol=1e-4, atol=1e-5)
  scores = heads.head_scores(m, ov, 5)
  assert scores["mu"].shape == (3,) and 0.0 <= scores["zero_sum_residual"] <= 1.0


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
    AttentionOnlyRegression(5, 2, attention_name="relational", normalization="linear_actual",
                            rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="model.normalization='cosine' is not allowed"):
    AttentionOnlyRegression(5, 2, normalization="cosine", rngs=nnx.Rngs(0))
