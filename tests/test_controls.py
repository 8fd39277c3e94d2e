"""The properties that define the controls of "Deconstructing Attention" (arXiv 2510.11602;
models/attention/README.md §9). The registry-wide properties (causality, padding, decoding, ...)
are in tests/test_attention_registry.py, which covers these variants too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import qk_controls
from attnlab.models.transformer import LanguageModel, TransformerConfig

CONTROLS = ("mlp_control", "taylor_softmax", "token_score_pool", "random_seq_qk",
            "fixed_text_qk", "static_embedding_qk")
QK_CONTROLS = ("random_seq_qk", "fixed_text_qk", "static_embedding_qk")
B, L, D, H = 2, 7, 32, 4


def build(name, causal=True, d=D, heads=H, **options):
  return attention.make(name, d_model=d, num_heads=heads, causal=causal, rngs=nnx.Rngs(0),
                        **options)


def n_params(layer):
  return sum(x.size for x in jax.tree.leaves(nnx.state(layer, nnx.Param)))


def test_parameter_counts_match_standard_at_d128_h4():
  """4 d^2 = 65,536 weights each (the README table)."""
  counts = {name: n_params(build(name, d=128, heads=4)) for name in ("standard",) + CONTROLS}
  assert counts == {name: 4 * 128 * 128 for name in counts}, counts
  # Same parameter tree as standard (checkpoints interchange) except the MLP's.
  ref = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(build("standard"), nnx.Param)))
  for name in CONTROLS[1:]:
    assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(build(name), nnx.Param))) == ref
  mlp = nnx.to_pure_dict(nnx.state(build("mlp_control"), nnx.Param))
  assert jax.tree.map(jnp.shape, mlp) == {"fc_in": {"kernel": (D, 2 * D)},
                                          "fc_out": {"kernel": (2 * D, D)}}


# ----------------------------------------------------------------------------------------------
# mlp_control: y_t depends on x_t only.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_mlp_output_at_t_depends_only_on_x_t(causal):
  layer = build("mlp_control", causal=causal)
  x = jax.random.normal(jax.random.key(0), (B, L, D))
  jac = jax.jacobian(lambda x: layer(x))(x)  # [B, L, D, B, L, D]
  for t in range(L):
    for s in range(L):
      block = np.abs(np.asarray(jac[:, t, :, :, s, :])).max()
      assert (block > 0) if s == t else (block == 0.0), (t, s)
  # Permuting the tokens permutes the outputs; a mask changes nothing.
  perm = np.random.default_rng(0).permutation(L)
  np.testing.assert_allclose(np.asarray(layer(x[:, perm])), np.asarray(layer(x))[:, perm],
                             rtol=1e-6, atol=1e-7)
  mask = jnp.ones((B, L), bool).at[0, 1].set(False)
  np.testing.assert_array_equal(np.asarray(layer(x, mask)), np.asarray(layer(x)))


# ----------------------------------------------------------------------------------------------
# taylor_softmax and token_score_pool against float64 NumPy.
# ----------------------------------------------------------------------------------------------


def _numpy_qkv(params, x, heads, kv_heads):
  b, l, d = x.shape
  dh = d // heads
  q = (x @ params["wq"]["kernel"]).reshape(b, l, heads, dh)
  k = (x @ params["wk"]["kernel"]).reshape(b, l, kv_heads, dh)
  v = (x @ params["wv"]["kernel"]).reshape(b, l, kv_heads, dh)
  rep = heads // kv_heads
  return q, np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2), dh


def _admissible(mask, causal, l):
  adm = np.broadcast_to(mask[:, None, None, :], (mask.shape[0], 1, l, l)).copy()
  if causal:
    adm &= np.tril(np.ones((l, l), bool))[None, None]
  return adm


def numpy_taylor(params, x, mask, causal, heads, kv_heads):
  """P_ij = w_ij / sum_j w_ij, w = 1 + s + s^2/2 over admissible keys; y = (P v) Wo."""
  q, k, v, dh = _numpy_qkv(params, x, heads, kv_heads)
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
  w = np.where(_admissible(mask, causal, x.shape[1]), 1 + s + s * s / 2, 0.0)
  p = w / w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(x.shape[0], x.shape[1], -1)
  return out @ params["wo"]["kernel"]


def numpy_token_score_pool(params, x, mask, causal, heads, kv_heads):
  """s_j = q_j.k_j / sqrt(dh); y_t = (sum_j e^{s_j} v_j / sum_j e^{s_j}) Wo, admissible j."""
  q, k, v, dh = _numpy_qkv(params, x, heads, kv_heads)
  s = np.einsum("bjhd,bjhd->bhj", q, k) / np.sqrt(dh)  # one score per token and head
  e = np.exp(s - s.max(-1, keepdims=True))[:, :, None, :]  # [B, H, 1, L]
  w = np.where(_admissible(mask, causal, x.shape[1]), e, 0.0)
  p = w / w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(x.shape[0], x.shape[1], -1)
  return out @ params["wo"]["kernel"]


@pytest.mark.parametrize("name, reference", [("taylor_softmax", numpy_taylor),
                                             ("token_score_pool", numpy_token_score_pool)])
@pytest.mark.parametrize("impl", ["xla", "chunked"])
@pytest.mark.parametrize("causal", [False, True])
def test_against_float64_numpy(name, reference, impl, causal):
  """Exact in float64 (1e-10), with GQA (2 kv heads for 4 query heads) and key padding; scores
  scaled up (init_std 0.5) so that s^2/2 matters."""
  with jax.enable_x64(True):
    layer = build(name, causal=causal, dtype="float64", impl=impl, q_chunk=3, k_chunk=2,
                  num_kv_heads=2, init_std=0.5)
    x = jax.random.normal(jax.random.key(3), (B, L, D), jnp.float64)
    mask = np.ones((B, L), bool)
    mask[0, 2] = mask[1, -2:] = False
    y = np.asarray(layer(x, jnp.asarray(mask)))
    params = jax.tree.map(np.asarray, layer.params())
    ref = reference(params, np.asarray(x), mask, causal, H, 2)
    s = np.einsum("bqhd,bkhd->bhqk", *_numpy_qkv(params, np.asarray(x), H, 2)[:2]) / np.sqrt(8)
  assert np.abs(s).max() > 1.0  # the quadratic term is not negligible here
  np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_taylor_weights_are_the_normalised_polynomial_and_positive():
  s = jnp.asarray([[-4.0, -1.0, 0.0, 2.5, 30.0]])
  adm = jnp.asarray([[True, True, True, True, False]])
  p = np.asarray(attention.controls.taylor_weights(s, adm))
  w = np.array([5.0, 0.5, 1.0, 1 + 2.5 + 3.125, 0.0])
  np.testing.assert_allclose(p[0], w / w.sum(), rtol=1e-6)
  assert (p[0, :4] > 0).all()
  np.testing.assert_allclose(np.exp(np.asarray(attention.controls.taylor_log_weights(s))),
                             1 + np.asarray(s) + np.asarray(s) ** 2 / 2, rtol=1e-5)


def test_token_score_pool_has_no_pairwise_product():
  """The logit of pair (i, j) is s_j, the same for every query i; without causal masking every
  position therefore outputs the same pooled vector."""
  layer = build("token_score_pool", causal=False)
  x = jax.random.normal(jax.random.key(0), (1, L, D))
  p = layer.params()
  q = attention.common.dense(p["wq"], x).reshape(1, L, H, D // H)
  k = attention.common.dense(p["wk"], x).reshape(1, L, H, D // H)
  s = attention.controls.token_scores(q, k)
  logits = attention.controls._broadcast_scores(s, L)  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(logits[:, :, 0]), np.asarray(logits[:, :, -1]))
  # Non-causal: every position outputs the same pooled vector.
  y = np.asarray(layer(x))
  np.testing.assert_allclose(y[:, 0], y[:, -1], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# The qk-controls.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random_seq_qk", "fixed_text_qk"])
def test_standalone_fixed_sequence_controls_are_linear_in_x(name):
  """Standalone, queries and keys do not depend on x, so y = P (x Wv) Wo is linear in x."""
  layer = build(name)
  x1, x2 = (jax.random.normal(jax.random.key(i), (B, L, D)) for i in (1, 2))
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(np.asarray(layer(x1 + 2 * x2)),
                               np.asarray(layer(x1) + 2 * layer(x2)), rtol=1e-4, atol=1e-6)
    std = build("standard")
    assert not np.allclose(np.asarray(std(x1 + 2 * x2)), np.asarray(std(x1) + 2 * std(x2)),
                           rtol=1e-3, atol=1e-5)


def test_fixed_sequences():
  text = qk_controls.text_tokens(256, 2000)
  assert bytes(text[:20].astype(np.uint8)) == b"The Zen of Python, b"
  assert (text[856:856 + 50] == text[:50]).all()
  a, b = qk_controls.random_tokens(0, 256, 100), qk_controls.random_tokens(0, 256, 5000)
  assert (a == b[:100]).all() and a.max() < 256 and len(set(a.tolist())) > 50
  assert not (qk_controls.random_tokens(1, 256, 100) == a).all()
  assert qk_controls.random_tokens(0, 11, 300).max() < 11
  assert qk_controls.text_tokens(11, 300).max() < 11


def lm(name, layout="uniform", positions="learned", vocab=64, max_len=16):
  cfg = TransformerConfig(vocab_size=vocab, d_model=D, num_layers=2, num_heads=H, d_ff=64,
                          max_len=max_len, positions=positions,
                          attention=attention.spec(name, layout=layout))
  return LanguageModel(cfg, rngs=nnx.Rngs(0))


def record_calls(monkeypatch, name):
  """Record (x, symbols) of every call of variant ``name``'s pure function."""
  cls = attention.REGISTRY[name]
  original, seen = cls.apply, []

  def recording(params, x, **kw):
    seen.append((params, x, kw))
    return original(params, x, **kw)

  monkeypatch.setattr(cls, "apply", staticmethod(recording))
  return seen


def _input_calls(seen, batch):
  """The calls on the input tokens (the fixed stream's own pass has batch 1, length max_len)."""
  return [c for c in seen if c[1].shape[0] == batch]


def _logits(call):
  params, _, kw = call
  return np.asarray(qk_controls.qk_logits(params, kw["symbols"], num_heads=kw["num_heads"],
                                          options=kw["options"], positions=kw["positions"]))


@pytest.mark.parametrize("name", ["random_seq_qk", "fixed_text_qk"])
@pytest.mark.parametrize("layout", ["uniform", "hybrid"])
def test_fixed_sequence_weights_do_not_depend_on_the_input(monkeypatch, name, layout):
  model = lm(name, layout)
  seen = record_calls(monkeypatch, name)
  t1 = jax.random.randint(jax.random.key(1), (B, L), 0, 64)
  t2 = jax.random.randint(jax.random.key(2), (B, L), 0, 64)
  model(t1)
  first = _input_calls(seen, B)
  seen.clear()
  model(t2)
  second = _input_calls(seen, B)
  assert len(first) == len(second) == (2 if layout == "uniform" else 1)
  for a, b in zip(first, second):
    assert not np.allclose(np.asarray(a[1]), np.asarray(b[1]))  # the layers' inputs differ
    np.testing.assert_array_equal(np.asarray(a[2]["symbols"]), np.asarray(b[2]["symbols"]))
    np.testing.assert_array_equal(_logits(a), _logits(b))
  # The source is the fixed sequence's hidden state: the same for every example of the batch,
  # and what the fixed stream's own pass gave the layer at those positions.
  stream_calls = [c for c in seen if c[1].shape[0] == 1]
  assert len(stream_calls) == len(second)
  for inp, own in zip(second, stream_calls):
    np.testing.assert_array_equal(np.asarray(inp[2]["symbols"][0]),
                                  np.asarray(own[2]["symbols"][0, :L]))
    np.testing.assert_array_equal(np.asarray(inp[2]["symbols"][0]),
                                  np.asarray(inp[2]["symbols"][1]))


@pytest.mark.parametrize("layout", ["uniform", "hybrid"])
def test_static_embedding_scores_depend_only_on_token_identity(monkeypatch, layout):
  model = lm("static_embedding_qk", layout)
  seen = record_calls(monkeypatch, "static_embedding_qk")
  # Token 5 at positions 1 and 4, token 9 at 2; the other tokens differ between the sequences.
  t1 = jnp.asarray([[3, 5, 9, 7, 5, 11, 2]])
  t2 = jnp.asarray([[8, 5, 9, 1, 5, 12, 6]])
  model(t1)
  model(t2)
  calls = _input_calls(seen, 1)
  n = 2 if layout == "uniform" else 1
  assert len(calls) == 2 * n
  for a, b in zip(calls[:n], calls[n:]):
    la, lb = _logits(a), _logits(b)
    same = [1, 2, 4]
    np.testing.assert_allclose(la[..., same, :][..., same], lb[..., same, :][..., same],
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(la[..., 1, :], la[..., 4, :], rtol=1e-6, atol=1e-7)
    assert not np.allclose(la[..., 0, :], lb[..., 0, :])
  # The source is LN1 of the embedding-table rows of the tokens (no positions, no blocks).
  block = model.stack.blocks[0]
  emb = model.embed(t1)
  np.testing.assert_allclose(np.asarray(calls[0][2]["symbols"]),
                             np.asarray(block.attn_input(emb)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CONTROLS)
@pytest.mark.parametrize("layout", ["uniform", pytest.param("hybrid", marks=pytest.mark.slow)])
def test_language_model_decodes_like_its_full_forward(name, layout):
  positions = "rope" if name in QK_CONTROLS else "learned"
  model = lm(name, layout, positions=positions)
  tokens = jax.random.randint(jax.random.key(1), (B, 9), 0, 64)
  full = model(tokens)
  assert full.shape == (B, 9, 64) and bool(jnp.all(jnp.isfinite(full)))
  cache = model.init_cache(B, 16)
  steps = []
  for chunk in (slice(0, 4), slice(4, 5), slice(5, 9)):
    y, cache = model(tokens[:, chunk], cache=cache)
    steps.append(y)
  np.testing.assert_allclose(np.asarray(full), np.asarray(jnp.concatenate(steps, 1)),
                             rtol=1e-5, atol=1e-5)
  # Skip (the Hybrid's variant layer deleted) runs too.
  assert model(tokens, skip_layers=(0,)).shape == full.shape


@pytest.mark.slow
def test_fixed_stream_is_differentiable_and_trains_the_shared_blocks():
  """Gradients reach the parameters through the fixed stream (no stop_gradient;
  models/attention/README.md §9.4): embedding rows that only the fixed sequence uses get one."""
  model = lm("random_seq_qk", "hybrid")
  tokens = jax.random.randint(jax.random.key(1), (B, L), 0, 64)
  used = np.unique(np.asarray(tokens))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):  # logits of the input's own tokens only: the tied head reads no other row
    return jnp.sum(nnx.merge(graphdef, params, rest)(tokens)[..., used] ** 2)

  emb = np.asarray(nnx.to_pure_dict(jax.grad(loss)(params))["embed"]["embedding"])
  stream_only = np.setdiff1d(qk_controls.random_tokens(0, 64, L), used)
  others = np.setdiff1d(np.arange(64), np.union1d(used, qk_controls.random_tokens(0, 64, 16)))
  assert len(stream_only) and len(others)
  assert np.abs(emb[stream_only]).max() > 0 and np.abs(emb[others]).max() == 0


def test_l1_cpu_sweep_runs_the_claims_rows_for_every_seed_first():
  """First one block of 15 runs per seed: `standard`, the controls (Uniform, Hybrid) and the
  uniform map alone, which the paper's claims need; then one block of 11 per seed with the
  other rows, `memory_efficient` (equal to `standard`) last."""
  import os
  from attnlab.train import sweep
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "experiments", "lm_ablation", "l1_cpu.py")
  runs = [r.name for r in sweep.expand(path)]
  assert len(runs) == 3 * (14 + 12) and len(set(runs)) == len(runs)
  for seed in range(3):
    block = runs[15 * seed: 15 * (seed + 1)]
    assert all(f",seed={seed}" in n for n in block)
    controls = [f"attention={c},layout={lay},seed={seed}" for c in CONTROLS
                for lay in ("uniform", "hybrid")]
    assert block[0] == f"attention=standard,layout=uniform,seed={seed}"
    assert block[1:13] == controls
    assert all("softmax_heads=False" in n for n in block[13:])
    rest = runs[45 + 11 * seed: 45 + 11 * (seed + 1)]
    assert all(f",seed={seed}" in n for n in rest)
    assert rest[-2:] == [f"attention=memory_efficient,layout={lay},seed={seed}"
                         for lay in ("uniform", "hybrid")]


def test_mechanisms_are_the_registry_without_the_controls():
  from attnlab.models.attention import registry
  assert set(registry.mechanisms()) == set(registry.REGISTRY) - set(CONTROLS)
  assert all(registry.REGISTRY[c].is_control for c in CONTROLS)
