"""Context broadcasting and the ``uniform_broadcast`` layer: the exact tests of
models/attention/README.md §5.5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import broadcast, common
from attnlab.models.attention import uniform_broadcast as ub
from attnlab.models.attention.standard import standard_apply
from attnlab.models.transformer import Block, TransformerConfig

B, T, D, H = 2, 7, 32, 4


def build(causal=True, **options):
  return attention.make("uniform_broadcast", d_model=D, num_heads=H, causal=causal,
                        rngs=nnx.Rngs(0), **options)


def inputs(seed=0):
  x = jax.random.normal(jax.random.key(seed), (B, T, D))
  mask = jnp.ones((B, T), bool).at[0, 2].set(False).at[1, -2:].set(False)
  return x, mask


# ----------------------------------------------------------------------------------------------
# The CB operation (models/attention/broadcast.py).
# ----------------------------------------------------------------------------------------------


def test_bidirectional_cb_is_the_one_liner_exactly():
  x = jax.random.normal(jax.random.key(0), (2, 197, 384), jnp.float32)
  ref = (x + x.mean(axis=1, keepdims=True)) * 0.5
  np.testing.assert_array_equal(np.asarray(broadcast.context_broadcast(x)), np.asarray(ref))


def test_causal_mean_is_uniform_causal_attention():
  b, t, d = 2, 37, 16
  x = jax.random.normal(jax.random.key(1), (b, t, d))
  c = broadcast.context_mean(x, causal=True)
  zeros = jnp.zeros((b, t, 1, d))
  attn = jax.nn.dot_product_attention(zeros, zeros, x[:, :, None, :], is_causal=True,
                                      implementation="xla")[:, :, 0]
  np.testing.assert_allclose(np.asarray(c), np.asarray(attn), rtol=1e-6, atol=1e-6)
  avg = np.tril(np.ones((t, t), np.float32)) / np.arange(1, t + 1, dtype=np.float32)[:, None]
  np.testing.assert_allclose(np.asarray(c), np.einsum("ts,bsd->btd", avg, np.asarray(x)),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(c[:, 0]), np.asarray(x[:, 0]))  # c_1 = X_1
  y = broadcast.context_broadcast(x, causal=True)
  np.testing.assert_array_equal(np.asarray(y[:, 0]), np.asarray(x[:, 0]))


def test_mean_preservation_and_padding():
  x, mask = inputs()
  y = broadcast.context_broadcast(x)
  np.testing.assert_allclose(np.asarray(y.mean(1)), np.asarray(x.mean(1)), rtol=1e-6, atol=1e-6)
  ym = broadcast.context_broadcast(x, mask)
  m = np.asarray(mask, np.float32)[..., None]
  masked_mean = lambda a: (np.asarray(a) * m).sum(1) / m.sum(1)
  np.testing.assert_allclose(masked_mean(ym), masked_mean(x), rtol=1e-6, atol=1e-6)
  # Padded tokens are left out: example 1 equals CB of its 5 real tokens.
  np.testing.assert_allclose(np.asarray(ym[1, :5]),
                             np.asarray(broadcast.context_broadcast(x[1:, :5])[0]), rtol=1e-6)
  # Causal: example 0 drops token 2 from every prefix mean.
  yc = broadcast.context_broadcast(x, mask, causal=True)
  keep = jnp.array([0, 1, 3, 4, 5, 6])
  ref = broadcast.context_broadcast(x[:1, keep], causal=True)[0]
  np.testing.assert_allclose(np.asarray(yc[0, keep]), np.asarray(ref), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(yc[0, :2]), np.asarray(
      broadcast.context_broadcast(x[:1, :2], causal=True)[0]))


def test_cumsum_is_float32_for_bfloat16_inputs():
  t = 4096
  x = (1.0 + 0.01 * jax.random.normal(jax.random.key(2), (1, t, 4))).astype(jnp.bfloat16)
  c = broadcast.context_mean(x, causal=True)
  assert c.dtype == jnp.float32
  xf = np.asarray(x, np.float64)
  ref = np.cumsum(xf, axis=1) / np.arange(1, t + 1)[None, :, None]
  np.testing.assert_allclose(np.asarray(c), ref, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The registered layer: y = CB(MHA(x)).
# ----------------------------------------------------------------------------------------------


def test_parameters_are_standards_plus_cb_scale():
  shapes = lambda m: jax.tree.map(jnp.shape, common.params_of(m))
  std = attention.make("standard", d_model=D, num_heads=H, causal=True, rngs=nnx.Rngs(0))
  assert shapes(build()) == shapes(std)
  scaled = build(cb_scaled=True)
  assert shapes(scaled) == {**shapes(std), "cb_scale": (D,)}
  np.testing.assert_array_equal(np.asarray(scaled.cb_scale[...]), np.ones(D))


@pytest.mark.parametrize("causal", [False, True])
def test_layer_is_cb_of_standard_attention(causal):
  x, mask = inputs()
  layer = build(causal)
  p = common.params_of(layer)
  mha = standard_apply(p, x, num_heads=H, mask=mask, causal=causal)
  ref = broadcast.context_broadcast(mha, mask, causal)
  np.testing.assert_array_equal(np.asarray(layer(x, mask)), np.asarray(ref))
  # CB_S with s = 1 is CB; another s scales the mean.
  scaled = build(causal, cb_scaled=True)
  nnx.update(scaled, nnx.state(layer, nnx.Param))
  np.testing.assert_array_equal(np.asarray(scaled(x, mask)), np.asarray(layer(x, mask)))
  s = jnp.linspace(-1.0, 2.0, D)
  scaled.cb_scale[...] = s
  c = broadcast.context_mean(mha, mask, causal)
  np.testing.assert_allclose(np.asarray(scaled(x, mask)), np.asarray(0.5 * (mha + s * c)),
                             rtol=1e-6, atol=1e-6)


def test_cached_decoding_with_padding_and_cb_scale():
  layer = build(True, cb_scaled=True)
  layer.cb_scale[...] = jnp.linspace(0.5, 1.5, D)
  p, kw = common.params_of(layer), layer.apply_kwargs()
  f = jax.jit(lambda x, mask, cache=None: ub.uniform_broadcast_apply(p, x, mask=mask,
                                                                     cache=cache, **kw))
  x, mask = inputs()
  full = f(x, mask)
  np.testing.assert_allclose(np.asarray(full), np.asarray(layer(x, mask)), rtol=1e-5, atol=1e-6)
  cache = layer.init_cache(B, 12)
  assert cache["cb_sum"].shape == (B, D) and cache["cb_count"].shape == (B,)
  steps = []
  for t in range(T):
    y, cache = f(x[:, t:t + 1], mask[:, t:t + 1], cache)
    steps.append(y)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(full)[valid], np.asarray(jnp.concatenate(steps, 1))[valid],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(cache["cb_count"]), valid.sum(1))
  # Prefill and decode in two chunks.
  cache = layer.init_cache(B, 12)
  y1, cache = f(x[:, :3], mask[:, :3], cache)
  y2, cache = f(x[:, 3:], mask[:, 3:], cache)
  np.testing.assert_allclose(np.asarray(full)[valid],
                             np.asarray(jnp.concatenate([y1, y2], 1))[valid], rtol=1e-5,
                             atol=1e-6)


def test_cudnn_needs_a_gpu_and_bfloat16():
  if jax.default_backend() == "gpu":
    pytest.skip("CPU-only check")
  x, _ = inputs()
  with pytest.raises(ValueError, match="GPU"):
    build(impl="cudnn")(x)


# ----------------------------------------------------------------------------------------------
# The block option cb_position='mlp_out' (models/transformer.py).
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_block_mlp_out_applies_cb_to_the_mlp_branch(causal):
  cfg = TransformerConfig(d_model=D, num_heads=H, d_ff=2 * D, num_layers=1, causal=causal,
                          cb_position="mlp_out")
  block = Block(cfg, 0, rngs=nnx.Rngs(0))
  x, mask = inputs()
  h = x + block.attn(block.ln1(x), mask)
  m = block.mlp(block.ln2(h))
  ref = h + broadcast.context_broadcast(m, mask, causal)
  out = block(x, mask)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-6, atol=1e-6)
  assert not np.allclose(np.asarray(out), np.asarray(h + m), atol=1e-4)


# ----------------------------------------------------------------------------------------------
# softmax_heads=False: the uniform map alone (the input-independent control of
# experiments/lm_ablation/README.md §3.2).
# ----------------------------------------------------------------------------------------------


def _uniform_reference(p, x, mask, causal, num_kv_heads=H):
  """float64 NumPy: y_t = sum_{s admissible} m_s (W_o W_v x)_s / max(1, count)."""
  xs, m = np.asarray(x, np.float64), np.asarray(mask, np.float64)
  hd = D // H
  v = (xs @ np.asarray(p["wv"]["kernel"], np.float64)).reshape(B, T, num_kv_heads, hd)
  v = np.repeat(v, H // num_kv_heads, axis=2).reshape(B, T, H * hd)
  o = v @ np.asarray(p["wo"]["kernel"], np.float64)
  w = np.tril(np.ones((T, T))) if causal else np.ones((T, T))
  w = w[None] * m[:, None, :]
  return np.einsum("bts,bsd->btd", w, o) / np.maximum(w.sum(-1, keepdims=True), 1.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_kv_heads", [H, 2])
def test_uniform_only_is_the_mean_of_the_value_output_projection(causal, num_kv_heads):
  x, mask = inputs()
  layer = build(causal, softmax_heads=False, num_kv_heads=num_kv_heads)
  p = common.params_of(layer)
  np.testing.assert_allclose(np.asarray(layer(x, mask)),
                             _uniform_reference(p, x, mask, causal, num_kv_heads),
                             rtol=1e-5, atol=1e-5)
  # Input-independent weights: the queries and keys play no part (zero gradient).
  grads = jax.grad(lambda q: jnp.sum(ub.uniform_broadcast_apply(
      {**p, "wq": q}, x, mask=mask, **layer.apply_kwargs())))(p["wq"])
  assert not np.any(np.asarray(grads["kernel"]))


def test_uniform_only_decodes_like_its_full_forward():
  layer = build(True, softmax_heads=False, cb_scaled=True)
  layer.cb_scale[...] = jnp.linspace(0.5, 1.5, D)
  x, mask = inputs(1)
  full = layer(x, mask)
  cache = layer.init_cache(B, 12)
  steps = []
  for t in range(T):
    y, cache = layer(x[:, t:t + 1], mask[:, t:t + 1], cache=cache)
    steps.append(y)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(full)[valid], np.asarray(jnp.concatenate(steps, 1))[valid],
                             rtol=1e-5, atol=1e-6)
  assert int(cache["index"]) == T
