"""``adaptive_filter`` (isotropic AFA, models/attention/README.md §4.7): exact reductions and
references.

* the RoPE/dot-product limit against ``jax.nn.dot_product_attention``;
* the mu -> 0 branch (finite value and gradient);
* an independent float64 NumPy implementation of §4.1 (complex arithmetic, direct residuals);
* chunked == xla in float32 including gradients; Toeplitz gather == direct; decode == full.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import adaptive_filter as af
from attnlab.models.attention import common

B, L, D, H = 2, 6, 16, 2


def build(causal=True, d_model=D, num_heads=H, seed=0, **options):
  return attention.make("adaptive_filter", d_model=d_model, num_heads=num_heads, causal=causal,
                        rngs=nnx.Rngs(seed), **options)


def perturbed_params(layer, seed=1, scale=0.5):
  """The layer's parameters with every per-head parameter and bias moved off its init."""
  rng = np.random.default_rng(seed)

  def move(path, a):
    a = np.asarray(a, np.float64)
    if path[-1].key == "kernel":
      return a
    return a + scale * rng.standard_normal(a.shape)

  return jax.tree_util.tree_map_with_path(move, common.params_of(layer))


def inputs(seed=0, length=L, d_model=D):
  x = np.random.default_rng(seed).standard_normal((B, length, d_model))
  mask = np.ones((B, length), bool)
  mask[0, 2] = False
  mask[1, -2:] = False
  return x, mask


# ----------------------------------------------------------------------------------------------
# Independent float64 NumPy implementation of models/attention/README.md §4.1 (complex numbers
# throughout).
# ----------------------------------------------------------------------------------------------


def np_softplus(z):
  return np.logaddexp(0.0, z)


def np_sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def numpy_afa(p, x, *, num_heads, causal, mask, positions, o):
  b, length, _ = x.shape
  n = p["wq"]["kernel"].shape[1] // 2
  h, m = num_heads, n // num_heads
  eps, lref = 1e-5, o.ref_length

  def proj(name):
    z = x @ p[name]["kernel"] + p[name].get("bias", 0.0)
    return (z[..., :n] + 1j * z[..., n:]).reshape(b, length, h, m).transpose(0, 2, 1, 3)

  q, k, v = proj("wq"), proj("wk"), proj("wv")  # [B, H, L, m] complex
  mu = (np_sigmoid(p["decay_raw"]) - 1.0) * 5.0 / lref - eps
  if o.zero_decay:
    mu = np.zeros(h)
  base = (p["freq_raw"] if o.learn_rotations
          else np.tile(10000.0 ** (-np.arange(m // 2) / (m // 2)), (h, 1)))
  omega = np.zeros((h, m))
  omega[:, 0::2], omega[:, 1::2] = base, -base
  omega *= 10.0 * np.pi / lref
  sigma2 = 0.0 * mu if o.zero_process_noise else np_softplus(p["sigma_raw"])
  eta2 = 0.0 * mu if o.zero_measurement_noise else np_softplus(p["eta_raw"]) + eps
  gamma2 = np_softplus(p["gamma_raw"]) + eps
  if o.rfa_scoring:
    nu = m * np_softplus(p["nu_raw"]) + 2.0 + eps
    temp, dof = np_softplus(p["tau"]) + eps, (nu + m) / m
  else:
    nu = np_softplus(p["nu_raw"]) + eps
    temp, dof = p["tau"] ** 2, np.ones(h)
  hd = lambda a: a[None, :, None, None]  # noqa: E731  per-head scalar -> [1, H, 1, 1]

  t = positions.astype(np.float64)
  dt = np.abs(t[:, :, None] - t[:, None, :])[:, None]  # [B, 1, L, L]
  log_e = np.clip(hd(mu) * dt, -10.0, 10.0)
  e = np.exp(log_e)
  with np.errstate(divide="ignore", invalid="ignore"):
    closed = -np.expm1(2.0 * log_e) / (-2.0 * hd(mu))
  frac = np.where(np.abs(hd(mu)) < eps, dt * (1.0 + hd(mu) * dt), closed)
  var = hd(sigma2) * frac + hd(eta2) * e ** 2 + hd(gamma2)

  ph = np.exp(-1j * omega[None, :, None, :] * t[:, None, :, None])  # e^{-i w t} [B, H, L, m]
  qt, kt, vt = q * ph, k * ph, v * ph
  if o.full_residual:
    diff = qt[:, :, :, None, :] - e[..., None] * kt[:, :, None, :, :]
    r2 = np.sum(np.abs(diff) ** 2, axis=-1)
  else:
    r2 = -2.0 * e * np.real(np.einsum("bhic,bhjc->bhij", np.conj(qt), kt))
  add = {0: 0.0 * dt, 1: -np.log(var),
         2: -(hd(sigma2 / (eta2 + gamma2)) if o.rfa_scoring else hd(nu)) * dt}[o.additive]
  c = 1.0 if o.rfa_scoring else m
  mult = {0: 1.0 / (np.sqrt(m) if o.rfa_scoring else m) + 0.0 * dt,
          1: 1.0 / (hd(nu) * c * var),
          2: 1.0 / (c * (hd(sigma2) * dt + hd(eta2)))}[o.multiplicative]
  if o.weight == "robust":
    s = hd(temp) * (add - hd(dof) * np.log1p(r2 * mult))
    energy = add - np.log1p(r2 * mult) if o.rfa_scoring else s
  else:
    s = hd(temp) * (add - r2 * mult)
    energy = add - r2 * mult if o.rfa_scoring else s

  adm = np.broadcast_to(mask[:, None, None, :], s.shape).copy()
  if causal:
    adm &= t[:, None, None, :] <= t[:, None, :, None]
  any_adm = adm.any(-1, keepdims=True)
  s_max = np.where(adm, s, -np.inf).max(-1, keepdims=True)
  w = np.where(adm, np.exp(s - np.where(any_adm, s_max, 0.0)), 0.0)
  attn = np.where(any_adm, w / np.where(any_adm, w.sum(-1, keepdims=True), 1.0), 0.0)
  y = np.einsum("bhij,bhjc->bhic", attn * e, vt) / ph  # rotate back: e^{+i w t_i}

  if o.gate == "none":
    u = y
  elif o.gate == "residual":
    u = y + v
  else:
    if o.gate == "learned":
      g = np_sigmoid(p["gate"])[None, :, None, :]
    else:
      e_max = np.where(adm, energy, -np.inf).max(-1, keepdims=True)
      tot = np.where(adm, np.exp(energy - np.where(any_adm, e_max, 0.0)), 0.0).sum(-1)
      lse = np.where(any_adm[..., 0], np.log(np.where(any_adm[..., 0], tot, 1.0))
                     + np.where(any_adm, e_max, 0.0)[..., 0], 0.0)[..., None]  # [B, H, L, 1]
      scale, prior = p["gate_scale"][None, :, None, :], p["gate_prior"][None, :, None, :]
      if o.rfa_scoring:
        corr = (np.log(nu - 2.0 + eps) - np.log(nu + eps))[None, :, None, None]
        g = np_sigmoid(np.exp(scale) * (lse + corr) - prior)
      else:
        g = np_sigmoid(scale ** 2 * lse - np.log(prior ** 2 + eps))
    u = g * y + (1.0 - g) * v
  if o.next_step:
    u = u * np.exp(mu)[None, :, None, None] * np.exp(1j * omega)[None, :, None, :]
  u = u.transpose(0, 2, 1, 3).reshape(b, length, n)
  return np.concatenate([u.real, u.imag], -1) @ p["wo"]["kernel"] + p["wo"].get("bias", 0.0)


NUMPY_CASES = {  # name: (options, causal)
    "default": (dict(), True),
    "gaussian_add2_mult2_residual": (dict(weight="gaussian", additive=2, multiplicative=2,
                                          gate="residual"), False),
    "const_fixed_rot_next_step": (dict(additive=0, multiplicative=0, gate="none",
                                       learn_rotations=False, next_step=True, use_bias=True),
                                  True),
    "precision_gate": (dict(gate="precision"), False),
    "rfa_precision_gate_mult0": (dict(rfa_scoring=True, gate="precision", multiplicative=0),
                                 True),
    "rfa_gaussian_add2_mult2": (dict(rfa_scoring=True, weight="gaussian", additive=2,
                                     multiplicative=2), False),
    "dot_product_mu0": (dict(weight="gaussian", full_residual=False, zero_decay=True,
                             zero_process_noise=True, zero_measurement_noise=True), True),
    "authors_sizing_chunked": (dict(complex_dims=D, impl="chunked", q_chunk=4, k_chunk=3), True),
    "packed_positions_direct": (dict(toeplitz=False), True),
}


@pytest.mark.parametrize("case", sorted(NUMPY_CASES))
def test_matches_float64_numpy(case):
  options, causal = NUMPY_CASES[case]
  layer = build(causal, dtype="float64", **options)
  params = perturbed_params(layer)
  x, mask = inputs()
  positions = np.broadcast_to(np.arange(L), (B, L))
  if case == "packed_positions_direct":  # repeated and irregular times, distances beyond L
    positions = np.array([[0, 1, 2, 0, 1, 2], [0, 2, 3, 5, 8, 9]])
  with np.errstate(divide="ignore"):
    expected = numpy_afa(jax.tree.map(np.asarray, params), x, num_heads=H, causal=causal,
                         mask=mask, positions=positions, o=layer.options)
  with jax.enable_x64(True):
    got = af._apply_jit(params, jnp.asarray(x), mask=jnp.asarray(mask),
                        positions=jnp.asarray(positions), num_heads=H, causal=causal,
                        options=layer.options)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Exact reductions.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_rope_dot_product_limit(causal):
  """mu = sigma2 = 0, Gaussian weight, no additive term, S = 1/m, dot-product residual, no gate:
  A = softmax((2 tau^2/m) Re<q~, k~>) and y = e^{i w t} dot_product_attention on [re|im]."""
  options = af.AdaptiveFilterOptions(
      weight="gaussian", additive=0, multiplicative=0, full_residual=False, zero_decay=True,
      zero_process_noise=True, gate="none")
  m, tau = 4, 0.8
  rng = np.random.default_rng(3)
  params = {"decay_raw": rng.standard_normal(H), "freq_raw": rng.standard_normal((H, m // 2)),
            "sigma_raw": rng.standard_normal(H), "eta_raw": rng.standard_normal(H),
            "gamma_raw": rng.standard_normal(H), "tau": np.full(H, tau),
            "nu_raw": rng.standard_normal(H)}
  dyn = af.dynamics(params, m, options)
  q, k, v = (jnp.asarray(rng.standard_normal((B, L, H, 2 * m)), jnp.float32) for _ in range(3))
  _, mask = inputs()
  pos = jnp.broadcast_to(jnp.arange(L), (B, L))
  with jax.default_matmul_precision("highest"):
    core = jax.jit(af.adaptive_filter_core, static_argnames=("causal", "options"))
    y, _ = core(q, k, v, dyn, q_pos=pos, k_pos=pos, mask=jnp.asarray(mask), causal=causal,
                options=options)
    # Reference: rotate with complex numbers, then standard attention on [re | im] stacks.
    omega = np.asarray(dyn["omega"])
    ph = np.exp(-1j * omega[None, None] * np.arange(L)[None, :, None, None])  # [1, L, H, m]
    to_c = lambda a: np.asarray(a[..., :m]) + 1j * np.asarray(a[..., m:])  # noqa: E731
    stack = lambda c: jnp.asarray(np.concatenate([c.real, c.imag], -1), jnp.float32)  # noqa: E731
    qt, kt, vt = (stack(to_c(a) * ph) for a in (q, k, v))
    out = jax.nn.dot_product_attention(qt, kt, vt, scale=2 * tau ** 2 / m,
                                       mask=jnp.asarray(mask)[:, None, None, :],
                                       is_causal=causal)
    expected = to_c(out) / ph
    np.testing.assert_allclose(to_c(y), expected, rtol=1e-5, atol=1e-5)
    # The logits themselves: s = (2 tau^2 / m) Re<q~_i, k~_j>.
    qs, ks = af._rotated_side(q, pos[:, :, None, None] * dyn["omega"], jnp.float32), \
        af._rotated_side(k, pos[:, :, None, None] * dyn["omega"], jnp.float32)
    s, _, e = jax.jit(af.pair_scores, static_argnums=(5, 6))(qs, ks, pos, pos, dyn, m, options)
    expected_s = (2 * tau ** 2 / m) * jnp.einsum("bqhc,bkhc->bhqk", qt, kt)
  np.testing.assert_allclose(np.asarray(s), np.asarray(expected_s), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(e), 1.0)


def test_small_mu_branch_is_finite_and_continuous():
  base = {"sigma2": jnp.array([0.7]), "eta2": jnp.array([0.3]), "gamma2": jnp.array([0.2])}

  @jax.jit
  def variance(mu, delta):
    return af.decay_and_variance(delta, dict(base, mu=jnp.reshape(mu, (1,))))[1][0]

  delta = jnp.arange(8.0)
  np.testing.assert_allclose(variance(0.0, delta), 0.7 * delta + 0.3 + 0.2, rtol=1e-6)
  grad = jax.jit(jax.jacobian(variance))
  jac = grad(0.0, delta)
  np.testing.assert_allclose(jac, 0.7 * delta ** 2 + 2 * 0.3 * delta, rtol=1e-5, atol=1e-6)
  for mu in (1e-7, -1e-7, -0.99e-5, -2e-5):
    assert bool(jnp.all(jnp.isfinite(grad(mu, delta))))
  # Every distance term (-log V, 1/(nu m V), E) at mu = 0: finite with finite gradients.
  def terms_sum(mu, sigma2):
    dyn = dict(base, mu=jnp.reshape(mu, (1,)), sigma2=jnp.reshape(sigma2, (1,)),
               nu=jnp.array([1.3]))
    t = af.distance_terms(delta, dyn, 4, af.AdaptiveFilterOptions())
    return sum(jnp.sum(v) for v in t.values())

  value, grads = jax.jit(jax.value_and_grad(terms_sum, argnums=(0, 1)))(0.0, 0.0)
  assert all(bool(jnp.isfinite(g)) for g in (value, *grads))
  with jax.enable_x64(True):  # the series matches the closed form up to O(mu^2 dt^3)
    mu, d = -0.999e-5, np.arange(8.0)
    exact = 0.7 * np.expm1(2 * mu * d) / (2 * mu) + 0.3 * np.exp(2 * mu * d) + 0.2
    got = variance(jnp.float64(mu), jnp.asarray(d))
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Kernels, Toeplitz gather, decoding.
# ----------------------------------------------------------------------------------------------

def test_chunked_equals_xla_with_gradients():
  """Causal, precision gate (its logsumexp is a second online pass) and next-step prediction."""
  length = 11
  options = dict(gate="precision", next_step=True)
  ref = build(True, impl="xla", **options)
  chk = build(True, impl="chunked", q_chunk=4, k_chunk=3, **options)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), perturbed_params(ref, scale=0.3))
  x, mask = inputs(length=length)
  x, mask = jnp.asarray(x, jnp.float32), jnp.asarray(mask)
  w = jax.random.normal(jax.random.key(1), (B, length, D))

  def loss(params, x, layer):
    y = af.adaptive_filter_apply(params, x, mask=mask, **layer.apply_kwargs())
    return jnp.sum(jnp.where(mask[..., None], y * w, 0.0)), y

  with jax.default_matmul_precision("highest"):
    (_, ya), ga = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, ref), argnums=(0, 1),
                                             has_aux=True))(params, x)
    (_, yb), gb = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, chk), argnums=(0, 1),
                                             has_aux=True))(params, x)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(ya)[valid], np.asarray(yb)[valid], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
    a, b = np.asarray(a), np.asarray(b)  # float32 sums of many terms: 1e-6 of the leaf's scale
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(a).max()))


def test_chunked_equals_xla_rfa_direct_terms():
  """Bidirectional RFA scoring with per-pair (non-Toeplitz) terms and irregular times."""
  options = dict(rfa_scoring=True, gate="precision", additive=2, toeplitz=False)
  ref = build(False, impl="xla", **options)
  chk = build(False, impl="chunked", q_chunk=4, k_chunk=3, **options)
  nnx.update(chk, nnx.state(ref, nnx.Param))
  x, mask = inputs(length=11)
  positions = jnp.asarray(np.cumsum(np.random.default_rng(2).integers(0, 3, (B, 11)), axis=1))
  with jax.default_matmul_precision("highest"):
    a = ref(jnp.asarray(x, jnp.float32), jnp.asarray(mask), positions=positions)
    b = chk(jnp.asarray(x, jnp.float32), jnp.asarray(mask), positions=positions)
  np.testing.assert_allclose(np.asarray(a)[mask], np.asarray(b)[mask], rtol=1e-6, atol=1e-6)


def test_toeplitz_gather_equals_direct():
  layer = build(False)
  m, o = 4, layer.options
  dyn = af.dynamics(perturbed_params(layer), m, o)
  pos = jnp.array([[0, 3, 1, 5, 5, 2], [4, 0, 1, 2, 3, 5]])

  @jax.jit
  def both(dyn, pos):
    table = af.distance_table(6, dyn, m, o, jnp.float32)
    return af.pair_terms(pos, pos, dyn, m, o, table), af.pair_terms(pos, pos, dyn, m, o)

  gathered, direct = both(dyn, pos)
  for name in ("E", "B", "S"):
    assert gathered[name].shape == (2, H, 6, 6)
    np.testing.assert_allclose(np.asarray(gathered[name]), np.asarray(direct[name]), rtol=1e-6)


def test_decode_equals_full():
  """Token by token and prefill + decode, with the precision gate and next-step prediction."""
  layer = build(True, gate="precision", next_step=True)
  x = jnp.asarray(inputs()[0], jnp.float32)
  with jax.default_matmul_precision("highest"):
    full = layer(x)
    cache = layer.init_cache(B, 8)
    steps = []
    for t in range(L):
      y, cache = layer(x[:, t:t + 1], cache=cache)
      steps.append(y)
    cache = layer.init_cache(B, 8)
    y1, cache = layer(x[:, :3], cache=cache)
    y2, cache = layer(x[:, 3:], cache=cache)
  np.testing.assert_allclose(np.asarray(full), np.asarray(jnp.concatenate(steps, 1)),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(full), np.asarray(jnp.concatenate([y1, y2], 1)),
                             rtol=1e-5, atol=1e-6)
  assert set(cache) == {"k", "v", "k_sq", "t", "mask", "index"}


def test_ref_length_is_fixed_not_the_current_length():
  """mu and omega scale with 1/ref_length: a causal prefix gives the same outputs alone."""
  layer = build(True)
  x = jnp.asarray(inputs()[0], jnp.float32)
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(np.asarray(layer(x)[:, :4]), np.asarray(layer(x[:, :4])),
                               rtol=1e-5, atol=1e-6)
  params = common.params_of(layer)
  dyn, dyn50 = (af.dynamics(params, 4, dataclasses.replace(layer.options, ref_length=r))
                for r in (101, 50))
  np.testing.assert_allclose(np.asarray(dyn50["omega"]), np.asarray(dyn["omega"]) * 101 / 50,
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(dyn50["mu"] + 1e-5), np.asarray(dyn["mu"] + 1e-5)
                             * 101 / 50, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Parameters, init, options.
# ----------------------------------------------------------------------------------------------


def param_shapes(layer):
  return jax.tree.map(jnp.shape, common.params_of(layer))


def test_parameter_names_shapes_and_count():
  layer = build()
  m = 4  # complex_dims defaults to D/2 = 8, i.e. 4 per head
  assert param_shapes(layer) == {
      "wq": {"kernel": (D, 2 * H * m)}, "wk": {"kernel": (D, 2 * H * m)},
      "wv": {"kernel": (D, 2 * H * m)}, "wo": {"kernel": (2 * H * m, D)},
      "decay_raw": (H,), "freq_raw": (H, m // 2), "sigma_raw": (H,), "eta_raw": (H,),
      "gamma_raw": (H,), "tau": (H,), "nu_raw": (H,), "gate": (H, m)}
  count = sum(a.size for a in jax.tree_util.tree_leaves(common.params_of(layer)))
  assert count == 4 * D * D + 6 * H + H * m // 2 + H * m
  authors = build(complex_dims=D)
  kernels = sum(a.size for a in jax.tree_util.tree_leaves(common.params_of(authors))
                if a.ndim == 2 and a.shape[0] * a.shape[1] >= D * D)
  assert kernels == 8 * D * D
  fixed = param_shapes(build(learn_rotations=False, gate="precision"))
  assert "freq_raw" not in fixed and "gate" not in fixed
  assert fixed["gate_scale"] == fixed["gate_prior"] == (H, m)
  assert nnx.state(layer, nnx.Param)["wq"]["kernel"].out_sharding == ("embed", "heads")
  assert nnx.state(layer, nnx.Param)["gate"].out_sharding == ("heads", None)
  np.testing.assert_array_equal(np.asarray(layer.gate[...]), 0.0)
  np.testing.assert_array_equal(np.asarray(layer.tau[...]), 1.0)


def test_complex_glorot_statistics():
  d, n = 256, 128
  w = np.asarray(af.complex_glorot(d, n, "in")(jax.random.key(0), (d, 2 * n), jnp.float32))
  re, im = w[:, :n], w[:, n:]
  np.testing.assert_allclose(np.mean(re ** 2 + im ** 2), 2.0 / (d + n), rtol=0.05)
  np.testing.assert_allclose(np.mean(re ** 2), np.mean(im ** 2), rtol=0.1)
  wo = np.asarray(af.complex_glorot(n, d, "out")(jax.random.key(1), (2 * n, d), jnp.float32))
  np.testing.assert_allclose(np.mean(wo[:n] ** 2 + wo[n:] ** 2), 2.0 / (d + n), rtol=0.05)


@pytest.mark.parametrize("options, field", [
    (dict(weight="student"), "weight"),
    (dict(additive=3), "additive"),
    (dict(multiplicative=True), "multiplicative"),
    (dict(gate="sometimes"), "gate"),
    (dict(proj_init="xavier"), "proj_init"),
    (dict(next_step=1), "next_step"),
    (dict(ref_length=0), "ref_length"),
    (dict(full_residual=False), "full_residual"),
    (dict(impl="cudnn"), "impl"),
    (dict(complex_dims=5), "multiple of num_heads"),
    (dict(complex_dims=6), "even"),
])
def test_invalid_options_raise(options, field):
  with pytest.raises(ValueError, match=field):
    build(**options)


def test_options_are_a_dataclass_of_the_registry():
  opts = attention.options_for("adaptive_filter", gate="residual")
  assert dataclasses.asdict(opts)["gate"] == "residual"
  assert math.isclose(af.rope_frequencies(8)[1], 10000 ** -0.25, rel_tol=1e-6)
