"""Tests of ``relational`` (dual attention, models/attention/README.md §3.9 items 1-5, float64
reference)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import relational, symbols

B, L, D, H = 2, 6, 32, 4
HIGHEST = "highest"


def build(causal=True, **options):
  # explicit (models/attention/README.md §3.8); dh * ra / R here
  options.setdefault("rel_proj_dim", 8)
  return attention.make("relational", d_model=D, num_heads=H, causal=causal, rngs=nnx.Rngs(0),
                        **options)


@nnx.jit
def fwd(layer, x, mask=None, symbols=None):
  """A jitted layer call (one compile instead of many eager primitive compiles)."""
  return layer(x, mask) if symbols is None else layer(x, mask, symbols=symbols)


def apply_jit(*, causal=False, **fields):
  """``relational_apply`` jitted, with options built from ``fields`` in x's dtype."""

  def f(p, x, symbols, mask):
    options = relational.RelationalOptions(dtype=jnp.dtype(x.dtype).name, **fields)
    return relational.relational_apply(p, x, num_heads=fields["sa_heads"] + fields["ra_heads"],
                                       options=options, causal=causal, symbols=symbols,
                                       mask=mask)

  return jax.jit(f)


def inputs(seed=0, length=L, padded=True):
  x = jax.random.normal(jax.random.key(seed), (B, length, D))
  mask = jnp.ones((B, length), bool)
  if padded:
    mask = mask.at[0, 2].set(False).at[1, -2:].set(False)
  return x, mask


def close_valid(a, b, mask, rtol=1e-5, atol=1e-6):
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# An independent float64 NumPy implementation of §3.1-3.3, written from the math.
# ----------------------------------------------------------------------------------------------

NP_ACT = {"identity": lambda r: r, "tanh": np.tanh, "relu": lambda r: np.maximum(r, 0.0)}


def np_rope(x, pos, theta=10000.0):
  out = x.copy()
  d = x.shape[-1]
  for k in range(d // 2):
    ang = pos[:, :, None] * theta ** (-2.0 * k / d)
    x0, x1 = x[..., 2 * k], x[..., 2 * k + 1]
    out[..., 2 * k] = x0 * np.cos(ang) - x1 * np.sin(ang)
    out[..., 2 * k + 1] = x0 * np.sin(ang) + x1 * np.cos(ang)
  return out


def np_weights(logits_row, adm_row):
  """Softmax over admissible keys of one row; None when no key is admissible."""
  if not adm_row.any():
    return None
  s = np.where(adm_row, logits_row, -np.inf)
  w = np.exp(s - s[adm_row].max())
  return w / w.sum()


def np_admissible(mask, causal, i, length):
  return np.array([mask[j] and (j <= i or not causal) for j in range(length)])


def np_relational(p, x, sym, *, heads, causal, mask, act="identity", rope=False):
  """Relational heads: p has numpy 2-D kernels and wr [H, dh, R]; sym [B,L,d] or [2K+1,d]."""
  b_, l_, _ = x.shape
  nh, dh, nr = p["wr"].shape
  dk = p["wq_attn"].shape[1] // nh
  hkv = p["wk_attn"].shape[1] // dk
  dr = p["wq_rel"].shape[1] // nr
  pos = np.broadcast_to(np.arange(l_), (b_, l_)).astype(np.float64)
  qa = (x @ p["wq_attn"]).reshape(b_, l_, nh, dk)
  ka = (x @ p["wk_attn"]).reshape(b_, l_, hkv, dk)
  if rope:
    qa, ka = np_rope(qa, pos), np_rope(ka, pos)
  qr = (x @ p["wq_rel"]).reshape(b_, l_, nr, dr)
  kr = (x @ p.get("wk_rel", p["wq_rel"])).reshape(b_, l_, nr, dr)
  relative = sym.ndim == 2
  out = np.zeros((b_, l_, nh, dh))
  for b in range(b_):
    for i in range(l_):
      adm = np_admissible(mask[b], causal, i, l_)
      for h in range(nh):
        g = h // (nh // hkv)
        logits = np.array([qa[b, i, h] @ ka[b, j, g] for j in range(l_)]) / math.sqrt(dh)
        alpha = np_weights(logits, adm)
        if alpha is None:
          continue
        for j in range(l_):
          if not adm[j]:
            continue
          rel = NP_ACT[act](np.sum(qr[b, i] * kr[b, j], axis=-1) / math.sqrt(dr))  # [R]
          if relative:  # the reference's [L, L, d] symbols, projected per pair
            k = (len(sym) - 1) // 2
            s_j = sym[min(max(j - i, -k), k) + k]
          else:
            s_j = sym[b, j]
          sv = (s_j @ p["wv"]).reshape(hkv, dh)[g]
          out[b, i, h] += alpha[j] * (sv + p["wr"][h] @ rel)
  return out.reshape(b_, l_, nh * dh) @ p["wo"]


def np_sensory(p, x, *, heads, causal, mask, rope=False):
  b_, l_, d = x.shape
  dh = p["wo"].shape[0] // heads
  hkv = p["wk"].shape[1] // dh
  pos = np.broadcast_to(np.arange(l_), (b_, l_)).astype(np.float64)
  q = (x @ p["wq"]).reshape(b_, l_, heads, dh)
  k = (x @ p["wk"]).reshape(b_, l_, hkv, dh)
  v = (x @ p["wv"]).reshape(b_, l_, hkv, dh)
  if rope:
    q, k = np_rope(q, pos), np_rope(k, pos)
  out = np.zeros((b_, l_, heads, dh))
  for b in range(b_):
    for i in range(l_):
      adm = np_admissible(mask[b], causal, i, l_)
      for h in range(heads):
        g = h // (heads // hkv)
        alpha = np_weights(k[b, :, g] @ q[b, i, h] / math.sqrt(dh), adm)
        if alpha is not None:
          out[b, i, h] = alpha @ v[b, :, g]
  return out.reshape(b_, l_, heads * dh) @ p["wo"]


def random_params(rng, *, d, sa, ra, dh, hkv_sa, hkv_ra, nr, dr, symmetric=False, scale=1.0):
  def w(i, o):
    return rng.normal(size=(i, o)) * scale / math.sqrt(i)
  params = {}
  if sa:
    params["self_attention"] = {"wq": w(d, sa * dh), "wk": w(d, hkv_sa * dh),
                                "wv": w(d, hkv_sa * dh), "wo": w(sa * dh, sa * dh)}
  if ra:
    params["relational_attention"] = {
        "wq_attn": w(d, ra * dh), "wk_attn": w(d, hkv_ra * dh), "wq_rel": w(d, nr * dr),
        "wr": rng.normal(size=(ra, dh, nr)) * scale, "wv": w(d, hkv_ra * dh),
        "wo": w(ra * dh, ra * dh)}
    if not symmetric:
      params["relational_attention"]["wk_rel"] = w(d, nr * dr)
  return params


def as_jax(params):
  """NumPy kernels -> the module's ``{'kernel': ...}`` layout (``wr`` stays an array)."""
  return {g: {k: (jnp.asarray(v) if k == "wr" else {"kernel": jnp.asarray(v)})
              for k, v in grp.items()} for g, grp in params.items()}


CASES = [  # (sa, ra, hkv, R, dr, symmetric, act)
    (0, 4, 2, 4, 8, False, "identity"),
    (2, 2, 1, 4, 4, True, "tanh"),
    (1, 3, 1, 2, 12, False, "relu"),
]


@pytest.mark.parametrize("case, causal, paths", [
    (CASES[0], False, [("xla", "pairwise"), ("xla", "rewrite")]),
    (CASES[0], True, [("xla", "pairwise"), ("chunked", "rewrite")]),
    (CASES[1], True, [("xla", "pairwise"), ("chunked", "pairwise")]),
    (CASES[2], False, [("xla", "pairwise"), ("chunked", "pairwise")]),
])
def test_float64_reference(case, causal, paths):
  """Dual attention (per-token symbols) on every kernel path equals NumPy to 1e-10."""
  sa, ra, hkv, nr, dr, symmetric, act = case
  rng = np.random.default_rng(1)
  dh = D // H
  p = random_params(rng, d=D, sa=sa, ra=ra, dh=dh, hkv_sa=sa and min(hkv, sa), hkv_ra=hkv,
                    nr=nr, dr=dr, symmetric=symmetric)
  x = rng.normal(size=(B, L, D))
  sym = rng.normal(size=(B, L, D))
  mask = np.ones((B, L), bool)
  mask[0, 0] = mask[1, 4:] = False  # causal: row (0, 0) has no admissible key
  if not causal:
    mask[1] = False  # an example with no admissible key at all
  ref = np.concatenate(
      ([np_sensory(p["self_attention"], x, heads=sa, causal=causal, mask=mask)] if sa else [])
      + [np_relational(p["relational_attention"], x, sym, heads=ra, causal=causal, mask=mask,
                       act=act)], axis=-1)
  with jax.enable_x64(True):
    for impl, rel_impl in paths:
      f = apply_jit(sa_heads=sa, ra_heads=ra, causal=causal, rel_activation=act, impl=impl,
                    rel_impl=rel_impl, q_chunk=4, k_chunk=3)
      y = f(as_jax(p), jnp.asarray(x), jnp.asarray(sym), jnp.asarray(mask))
      assert y.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_float64_position_relative(causal):
  """The bucketed form equals the reference's per-pair [L, L, d] symbol projection."""
  rng = np.random.default_rng(2)
  p = random_params(rng, d=D, sa=0, ra=H, dh=D // H, hkv_sa=0, hkv_ra=2, nr=2, dr=16)
  k = 2
  table = rng.normal(size=(2 * k + 1, D))
  x = rng.normal(size=(B, L, D))
  mask = np.ones((B, L), bool)
  mask[1, 0] = False
  ref = np_relational(p["relational_attention"], x, table, heads=H, causal=causal, mask=mask)
  with jax.enable_x64(True):
    for impl in ("xla", "chunked") if causal else ("xla",):
      f = apply_jit(sa_heads=0, ra_heads=H, causal=causal, impl=impl, q_chunk=4, k_chunk=4)
      y = f(as_jax(p), jnp.asarray(x), jnp.asarray(table), jnp.asarray(mask))
      np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-10, atol=1e-10)


def test_rope_against_numpy():
  """RoPE on Qa/Ka (and the sensory q/k) only; float32 (common.apply_rope rotates in f32)."""
  rng = np.random.default_rng(3)
  p = random_params(rng, d=D, sa=2, ra=2, dh=D // H, hkv_sa=2, hkv_ra=2, nr=2, dr=8)
  x, sym = rng.normal(size=(B, L, D)), rng.normal(size=(B, L, D))
  mask = np.ones((B, L), bool)
  ref = np.concatenate([np_sensory(p["self_attention"], x, heads=2, causal=True, mask=mask,
                                   rope=True),
                        np_relational(p["relational_attention"], x, sym, heads=2, causal=True,
                                      mask=mask, rope=True)], -1)
  pj = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), as_jax(p))
  with jax.default_matmul_precision(HIGHEST):
    f = apply_jit(sa_heads=2, ra_heads=2, causal=True, rope=True)
    y = f(pj, jnp.asarray(x, jnp.float32), jnp.asarray(sym, jnp.float32), None)
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)


def test_symbol_retrievers_against_numpy():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(B, L, D)).astype(np.float32)
  sym = symbols.SymbolicAttention(D, 4, 16, rngs=nnx.Rngs(0))
  p = jax.tree.map(np.asarray, sym.params())
  q = (x @ p["q_proj"]["kernel"] + p["q_proj"]["bias"]).reshape(B, L, 4, D // 4)
  f = p["template_features"].reshape(16, 4, D // 4)
  s = p["symbol_library"].reshape(16, 4, D // 4)
  logits = np.einsum("blhc,nhc->blhn", q, f) / math.sqrt(D // 4)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = np.einsum("blhn,nhc->blhc", w, s).reshape(B, L, D)
  with jax.default_matmul_precision(HIGHEST):
    got = jax.jit(lambda p, x: symbols.symbolic_attention(p, x, num_heads=4))(sym.params(), x)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
  table = np.arange(10 * D, dtype=np.float32).reshape(10, D)
  positions = np.array([[3, 4, 5, 6, 7, 8], [0, 0, 1, 1, 2, 12]])
  got = symbols.positional_symbols({"symbol_library": jnp.asarray(table)}, positions)
  np.testing.assert_array_equal(np.asarray(got), table[np.minimum(positions, 9)])  # clipped
  buckets = symbols.relative_buckets(jnp.arange(4)[None], jnp.arange(4)[None], 2)
  np.testing.assert_array_equal(np.asarray(buckets[0]), [[2, 3, 4, 4], [1, 2, 3, 4],
                                                         [0, 1, 2, 3], [0, 0, 1, 2]])


# ----------------------------------------------------------------------------------------------
# Exact reductions to `standard` (§3.9 items 1-2).
# ----------------------------------------------------------------------------------------------


def standard_layer(causal, **options):
  return attention.make("standard", d_model=D, num_heads=H, causal=causal, rngs=nnx.Rngs(1),
                        **options)


@pytest.mark.parametrize("causal", [True])
def test_wr_zero_and_symbols_x_is_standard(causal):
  layer = build(causal, sa_heads=0, ra_heads=H, rope=True)
  ra = layer.relational_attention
  ra.wr[...] = jnp.zeros_like(ra.wr[...])
  std = standard_layer(causal, rope=True)
  for dst, src in (("wq", "wq_attn"), ("wk", "wk_attn"), ("wv", "wv"), ("wo", "wo")):
    getattr(std, dst).kernel[...] = getattr(ra, src).kernel[...]
  x, mask = inputs()
  with jax.default_matmul_precision(HIGHEST):
    close_valid(fwd(layer, x, mask, x), fwd(std, x, mask), mask)


@pytest.mark.parametrize("causal", [False])
def test_no_relational_heads_is_standard(causal):
  layer = build(causal, sa_heads=H, ra_heads=0, num_kv_heads=2, rope=True)
  assert "relational_attention" not in nnx.to_pure_dict(nnx.state(layer, nnx.Param))
  assert layer.retriever is None
  std = standard_layer(causal, num_kv_heads=2, rope=True)
  nnx.update(std, nnx.state(layer.self_attention, nnx.Param))
  x, mask = inputs()
  with jax.default_matmul_precision(HIGHEST):
    close_valid(fwd(layer, x, mask), fwd(std, x, mask), mask)


def test_share_attn_params_equals_copied_weights():
  shared = build(True, share_attn_params=True)
  tree = nnx.to_pure_dict(nnx.state(shared, nnx.Param))
  assert set(tree["self_attention"]) == {"wv", "wo"}
  plain = build(True)
  nnx.update(plain, nnx.state(shared, nnx.Param))
  plain.self_attention.wq.kernel[...] = shared.relational_attention.wq_attn.kernel[...]
  plain.self_attention.wk.kernel[...] = shared.relational_attention.wk_attn.kernel[...]
  x, mask = inputs()
  np.testing.assert_array_equal(np.asarray(fwd(shared, x, mask)), np.asarray(fwd(plain, x, mask)))


# ----------------------------------------------------------------------------------------------
# Prefix consistency, decoding, kernels (§3.9 items 3-5).
# ----------------------------------------------------------------------------------------------

SYMBOL_CASES = [
    dict(symbol_type="positional", max_len=32),
    dict(symbol_type="symbolic", n_symbols=8, symbol_heads=2),
    dict(symbol_type="position_relative", max_rel_pos=2),
]


@pytest.mark.parametrize("opts", [SYMBOL_CASES[0]], ids=lambda o: o["symbol_type"])
def test_prefix_consistency(opts):
  layer = build(True, rope=True, num_kv_heads=1, **opts)
  x, _ = inputs(length=7, padded=False)
  with jax.default_matmul_precision(HIGHEST):
    np.testing.assert_allclose(np.asarray(fwd(layer, x[:, :4])), np.asarray(fwd(layer, x)[:, :4]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts", [SYMBOL_CASES[0], SYMBOL_CASES[2]],
                         ids=lambda o: o["symbol_type"])
def test_decode_equals_full(opts):
  """(Symbolic symbols: the registry's decode test runs the default options.)"""
  layer = build(True, rope=True, num_kv_heads=1, symmetric_rels=True, n_relations=1,
                rel_proj_dim=16, **opts)
  x, _ = inputs(length=7, padded=False)
  step = nnx.jit(lambda m, x, c: m(x, cache=c))
  with jax.default_matmul_precision(HIGHEST):
    full = fwd(layer, x)
    cache = layer.init_cache(B, 12)
    ys = []
    for t in range(7):
      y, cache = step(layer, x[:, t:t + 1], cache)
      ys.append(y)
  assert int(cache["index"]) == 7
  assert ("sv" in cache) == (opts["symbol_type"] != "position_relative")
  np.testing.assert_allclose(np.asarray(jnp.concatenate(ys, 1)), np.asarray(full), rtol=1e-5,
                             atol=1e-5)


def masked_sq_loss(layer, mask):
  return lambda x: jnp.sum(jnp.where(mask[..., None], layer(x, mask), 0) ** 2)


def test_chunked_gradients_equal_xla_bidirectional():
  """Module level (forward and input gradients); the kernel paths are also checked against
  NumPy in float64 above, and causal chunked = xla by the registry tests."""
  x, mask = inputs(length=11)
  ref = build(False, symbol_type="positional", max_len=16)
  chk = build(False, symbol_type="positional", max_len=16, impl="chunked", q_chunk=4,
              k_chunk=3)
  nnx.update(chk, nnx.state(ref))
  with jax.default_matmul_precision(HIGHEST):
    v_ref, g_ref = jax.jit(jax.value_and_grad(masked_sq_loss(ref, mask)))(x)
    v_chk, g_chk = jax.jit(jax.value_and_grad(masked_sq_loss(chk, mask)))(x)
  np.testing.assert_allclose(float(v_chk), float(v_ref), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_chk), np.asarray(g_ref), rtol=1e-4, atol=1e-5)


def test_rows_without_keys_are_zero():
  layer = build(True)
  x, mask = inputs()
  mask = mask.at[1].set(False)
  for impl in ("xla", "chunked"):
    other = build(True, impl=impl)
    nnx.update(other, nnx.state(layer))
    np.testing.assert_array_equal(np.asarray(fwd(other, x, mask)[1]), 0.0)


# ----------------------------------------------------------------------------------------------
# Parameters and options.
# ----------------------------------------------------------------------------------------------


def count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def test_parameter_names_counts_and_axes():
  layer = nnx.eval_shape(lambda: attention.make(
      "relational", d_model=512, num_heads=8, causal=True, rngs=nnx.Rngs(0), rel_proj_dim=64,
      symbol_type="positional", max_len=4))
  tree = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
  assert set(tree) == {"self_attention", "relational_attention", "retriever"}
  assert set(tree["self_attention"]) == {"wq", "wk", "wv", "wo"}
  assert set(tree["relational_attention"]) == {"wq_attn", "wk_attn", "wq_rel", "wk_rel", "wr",
                                               "wv", "wo"}
  assert tree["relational_attention"]["wr"].shape == (4, 64, 4)
  assert tree["relational_attention"]["wo"]["kernel"].shape == (256, 256)
  assert count(layer.params()) == 1_180_672  # models/attention/README.md §3.7
  sym = nnx.eval_shape(lambda: attention.make(
      "relational", d_model=512, num_heads=8, causal=True, rngs=nnx.Rngs(0), rel_proj_dim=64,
      symmetric_rels=True, symbol_type="positional", max_len=4))
  assert count(sym.params()) == 1_049_600
  for path, var in nnx.to_flat_state(nnx.state(layer, nnx.Param)):
    axes = var.get_metadata()["out_sharding"]
    assert len(axes) == len(var.shape), path


def test_frozen_symbol_library_is_not_a_param():
  layer = build(True, symbol_type="symbolic", n_symbols=8, trainable_symbols=False)
  params = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
  assert "symbol_library" not in params["retriever"]
  assert "template_features" in params["retriever"]
  frozen = nnx.state(layer, symbols.FrozenSymbols)
  assert len(jax.tree.leaves(frozen)) == 1


@pytest.mark.parametrize("options, match", [
    (dict(symbol_type="learned"), "symbol_type"),
    (dict(rel_activation="softmax"), "rel_activation"),
    (dict(rel_impl="fast"), "rel_impl"),
    (dict(rel_impl="rewrite", rel_activation="tanh"), "rewrite"),
    (dict(rel_impl="rewrite", symbol_type="position_relative"), "rewrite"),
    (dict(n_symbols=0), "n_symbols"),
    (dict(max_rel_pos=0), "max_rel_pos"),
    (dict(impl="cudnn"), "impl"),
    (dict(sa_heads=3, ra_heads=3), "sa_heads"),
    (dict(sa_heads=-1), "sa_heads"),
    (dict(n_relations=3, rel_proj_dim=4), "rel_proj_dim"),
    (dict(num_kv_heads=3), "num_kv_heads"),
    (dict(sa_heads=1, ra_heads=3, share_attn_params=True), "share_attn_params"),
    (dict(symbol_heads=3), "symbol_heads"),
])
def test_invalid_options(options, match):
  with pytest.raises(ValueError, match=match):
    build(True, **options)
