"""``enhanced_interactive`` (EIT's EMHA): the exact tests of models/attention/README.md §2.9."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import common, kernels
from attnlab.models.attention import enhanced_interactive as eit
from attnlab.models.attention.standard import standard_apply

B, T, D, M, H_ISI, C = 2, 7, 32, 4, 2, 8
DH = D // M


def build(causal=True, **options):
  return attention.make("enhanced_interactive", d_model=D, num_heads=M, causal=causal,
                        rngs=nnx.Rngs(0), **options)


_apply_jit = jax.jit(eit.enhanced_interactive_apply,
                     static_argnames=("num_heads", "causal", "options"))


def apply(params, x, *, num_heads, mask=None, causal=False, cache=None, positions=None,
          options=None, **fields):
  """The pure layer, jitted (one compile per configuration keeps this file fast); option
  fields may be given as keywords (computing in x's dtype unless ``dtype`` is given)."""
  if options is None:
    fields.setdefault("dtype", jnp.dtype(x.dtype).name)
    fields["dtype"] = jnp.dtype(fields["dtype"]).name
    options = eit.EnhancedInteractiveOptions(**fields)
  return _apply_jit(params, x, num_heads=num_heads, mask=mask, causal=causal, cache=cache,
                    positions=positions, options=options)


def jitted(layer):
  """The layer's forward as ``f(x, mask=None, cache=None)``, jitted."""
  params, kw = common.params_of(layer), layer.apply_kwargs()
  return lambda x, mask=None, cache=None: apply(params, x, mask=mask, cache=cache, **kw)


def random_mask(rng, batch=B, length=T):
  """Random key padding with at least one real token per example."""
  mask = rng.random((batch, length)) > 0.3
  mask[:, 0] = True
  return mask


# ----------------------------------------------------------------------------------------------
# An independent float64 NumPy oracle of models/attention/README.md §2.1, on PyTorch-layout
# weights.
# ----------------------------------------------------------------------------------------------


def torch_layout_weights(rng, h_isi=H_ISI, c=C):
  """Linear weights ``[out, in]`` and 1x1 conv weights ``[Cout, Cin/groups]`` with biases."""
  def u(shape, fan_in):
    b = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-2 * b, 2 * b, shape)  # wider than the init: both ReLU sides active

  w = {}
  for name in ("q", "k", "v", "o"):
    w[f"W{name}"] = rng.normal(0, 0.3, (D, D))
    w[f"b{name}"] = rng.normal(0, 0.1, (D,))
  w["Wf0"], w["bf0"] = u((M * h_isi, M), M), u((M * h_isi,), M)  # groups = M
  w["Wf1"], w["bf1"] = u((M, h_isi), h_isi), u((M,), h_isi)  # groups = M
  w["Wg0"], w["bg0"] = u((c, M), M), u((c,), M)  # groups = 1
  w["Wg1"], w["bg1"] = u((M, c), c), u((M,), c)  # groups = 1
  return w


def conv1x1(x, weight, bias, groups):
  """PyTorch ``Conv2d(k=1, groups)`` on ``[B, Cin, T, S]`` with weight ``[Cout, Cin/groups]``."""
  cout, cin_g = weight.shape
  out_per_group = cout // groups
  out = np.zeros((x.shape[0], cout) + x.shape[2:])
  for o in range(cout):
    g = o // out_per_group
    for r in range(cin_g):
      out[:, o] += weight[o, r] * x[:, g * cin_g + r]
    out[:, o] += bias[o]
  return out


def oracle(w, x, mask, causal, csi_after_softmax=False):
  """EMHA in float64 NumPy, straight from the paper's description
  (models/attention/README.md §2.1)."""
  relu = lambda a: np.maximum(a, 0.0)
  b, t, _ = x.shape
  q = (x @ w["Wq"].T + w["bq"]).reshape(b, t, M, DH)
  k = (x @ w["Wk"].T + w["bk"]).reshape(b, t, M, DH)
  v = (x @ w["Wv"].T + w["bv"]).reshape(b, t, M, DH)
  s = np.zeros((b, M * M, t, t))
  for i in range(M):
    for j in range(M):
      s[:, i * M + j] = np.einsum("btd,bsd->bts", q[:, :, i], k[:, :, j]) / math.sqrt(DH)
  h = relu(conv1x1(s, w["Wf0"], w["bf0"], groups=M))
  s_isi = conv1x1(h, w["Wf1"], w["bf1"], groups=M)
  adm = np.broadcast_to(mask[:, None, None, :], (b, 1, t, t)).copy()
  if causal:
    adm &= np.tril(np.ones((t, t), bool))[None, None]

  def softmax(a):
    a = np.where(adm, a, -np.inf)
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  if csi_after_softmax:
    p = conv1x1(relu(conv1x1(softmax(s_isi), w["Wg0"], w["bg0"], 1)), w["Wg1"], w["bg1"], 1)
    p = p * adm
  else:
    p = softmax(conv1x1(relu(conv1x1(s_isi, w["Wg0"], w["bg0"], 1)), w["Wg1"], w["bg1"], 1))
  o = np.einsum("bmts,bsmd->btmd", p, v).reshape(b, t, D)
  return o @ w["Wo"].T + w["bo"]


def ported_params(w):
  """Our parameter tree from PyTorch-layout weights (the porting rules of §2.2)."""
  p = {f"w{n}": {"kernel": w[f"W{n}"].T, "bias": w[f"b{n}"]} for n in "qkvo"}
  h_isi = w["Wf1"].shape[1]
  p.update(isi_w0=w["Wf0"].reshape(M, h_isi, M), isi_b0=w["bf0"].reshape(M, h_isi),
           isi_w1=w["Wf1"].reshape(M, h_isi), isi_b1=w["bf1"],
           csi_w0=w["Wg0"], csi_b0=w["bg0"], csi_w1=w["Wg1"], csi_b1=w["bg1"])
  return p


# ----------------------------------------------------------------------------------------------
# Parameters.
# ----------------------------------------------------------------------------------------------


def shapes(**options):
  layer = nnx.eval_shape(lambda: build(**options))
  return jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param)))


def test_parameter_names_shapes_and_count():
  s = shapes(isi_hidden_per_group=H_ISI, csi_hidden=C)
  mixing = {"isi_w0": (M, H_ISI, M), "isi_b0": (M, H_ISI), "isi_w1": (M, H_ISI),
            "isi_b1": (M,), "csi_w0": (C, M), "csi_b0": (C,), "csi_w1": (M, C), "csi_b1": (M,)}
  assert {k: v for k, v in s.items() if not k.startswith("w")} == mixing
  for name in ("wq", "wk", "wv", "wo"):
    assert s[name] == {"kernel": (D, D), "bias": (D,)}
  extra = sum(math.prod(v) for v in mixing.values())
  assert extra == M * M * H_ISI + 2 * M * H_ISI + M + 2 * M * C + C + M
  # Defaults: H_isi = 8, C = 4M; E-EIT: grouped layer of 2M channels then a dense map to M.
  d = shapes()
  assert d["isi_w0"] == (M, 8, M) and d["csi_w0"] == (4 * M, M)
  e = shapes(efficient=True)
  assert {k: v for k, v in e.items() if not k.startswith("w")} == {
      "isi_w0": (M, 2, M), "isi_b0": (M, 2), "csi_w1": (M, 2 * M), "csi_b1": (M,)}


def test_init():
  p = common.params_of(build())
  fan_in = {"isi_w0": M, "isi_b0": M, "isi_w1": 8, "isi_b1": 8, "csi_w0": M, "csi_b0": M,
            "csi_w1": 4 * M, "csi_b1": 4 * M}
  for name, f in fan_in.items():
    a = np.asarray(p[name])
    assert np.all(np.abs(a) <= 1 / math.sqrt(f)) and np.std(a) > 0.1 / math.sqrt(f)
  for name in ("wq", "wk", "wv", "wo"):
    assert np.all(np.asarray(p[name]["bias"]) == 0.0)
    assert abs(float(np.std(p[name]["kernel"])) - 0.02) < 0.005


def test_options_are_validated():
  with pytest.raises(ValueError, match="csi_after_softmax"):
    build(csi_after_softmax=True, impl="chunked")
  with pytest.raises(ValueError, match="efficient"):
    build(csi_after_softmax=True, efficient=True)
  with pytest.raises(ValueError, match="isi_hidden_per_group"):
    build(isi_hidden_per_group=0)
  with pytest.raises(ValueError, match="impl"):
    build(impl="cudnn")


# ----------------------------------------------------------------------------------------------
# (1) Reduction to standard MHA with identity ISI/CSI weights, float64.
# ----------------------------------------------------------------------------------------------


def identity_mixing(h_isi=3, c=2 * M + 2, efficient=False):
  """ISI/CSI weights that make EMHA exactly MHA (ReLU(s) - ReLU(-s) = s), zero padded."""
  eye = np.eye(M)
  h_isi = 2 if efficient else h_isi
  a0 = np.zeros((M, h_isi, M))
  a0[:, 0], a0[:, 1] = eye, -eye
  if efficient:  # hidden channel i*2 + c; logit m = h(m,0) - h(m,1)
    return dict(isi_w0=a0, isi_b0=np.zeros((M, 2)), csi_b1=np.zeros(M),
                csi_w1=np.stack([eye, -eye], axis=-1).reshape(M, 2 * M))
  a1 = np.zeros((M, h_isi))
  a1[:, 0], a1[:, 1] = 1.0, -1.0
  g0, g1 = np.zeros((c, M)), np.zeros((M, c))
  g0[:M], g0[M:2 * M] = eye, -eye
  g1[:, :M], g1[:, M:2 * M] = eye, -eye
  return dict(isi_w0=a0, isi_b0=np.zeros((M, h_isi)), isi_w1=a1, isi_b1=np.zeros(M),
              csi_w0=g0, csi_b0=np.zeros(c), csi_w1=g1, csi_b1=np.zeros(M))


@pytest.mark.parametrize("causal,variant", [
    (False, {}), (True, {}), (True, {"mixed_key": True}), (True, {"efficient": True}),
    (False, {"csi_after_softmax": True}), (True, {"impl": "chunked"})])
def test_reduces_to_standard_with_identity_mixing(causal, variant, rng):
  w = torch_layout_weights(rng)
  x, mask = rng.normal(size=(B, T, D)), random_mask(rng)
  with jax.enable_x64(True):
    proj = {k: jax.tree.map(jnp.asarray, v) for k, v in ported_params(w).items()
            if k.startswith("w")}
    params = {**proj, **jax.tree.map(jnp.asarray,
                                     identity_mixing(efficient=variant.get("efficient", False)))}
    xj, mj = jnp.asarray(x), jnp.asarray(mask)
    kw = dict(num_heads=M, mask=mj, causal=causal)
    if variant.get("impl") == "chunked":
      kw.update(q_chunk=3, k_chunk=2)
    y = apply(params, xj, **kw, **variant)
    ref = jax.jit(standard_apply, static_argnames=("num_heads", "causal"))(
        proj, xj, num_heads=M, mask=mj, causal=causal)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y)[mask], np.asarray(ref)[mask], rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# (3) The NumPy oracle: float64 to 1e-10, float32 (module) to 1e-5 / 1e-4.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal,variant", [
    (False, {}), (True, {}), (False, {"csi_after_softmax": True}),
    (True, {"csi_after_softmax": True}), (True, {"mixed_key": True}), (False, {"impl": "chunked"})])
def test_matches_numpy_oracle_float64(causal, variant, rng):
  w = torch_layout_weights(rng)
  x, mask = rng.normal(size=(B, T, D)), random_mask(rng)
  ref = oracle(w, x, mask, causal, variant.get("csi_after_softmax", False))
  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, ported_params(w))
    kw = dict(q_chunk=4, k_chunk=3) if variant.get("impl") == "chunked" else {}
    y = apply(params, jnp.asarray(x), num_heads=M, mask=jnp.asarray(mask), causal=causal,
              **kw, **variant)
    y = np.asarray(y)
  np.testing.assert_allclose(y[mask], ref[mask], rtol=0, atol=1e-10)


def test_module_matches_numpy_oracle_float32(rng):
  causal = True
  w = torch_layout_weights(rng, h_isi=8, c=4 * M)  # the defaults
  x, mask = rng.normal(size=(B, T, D)), random_mask(rng)
  layer = build(causal)
  state = nnx.state(layer, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                                               ported_params(w)))
  nnx.update(layer, state)
  with jax.default_matmul_precision("highest"):
    y = np.asarray(jitted(layer)(jnp.asarray(x, jnp.float32), jnp.asarray(mask)))
  np.testing.assert_allclose(y[mask], oracle(w, x, mask, causal)[mask], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# (2) Causality, and the leak of CSI on probabilities without the re-mask.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{"csi_after_softmax": True}, {"mixed_key": True},
                                     {"efficient": True}])
def test_causality_bit_identical(variant):
  f = jitted(build(True, **variant))
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  x2 = x.at[:, -1].add(3.0)
  y, y2 = f(x), f(x2)
  np.testing.assert_array_equal(np.asarray(y[:, :-1]), np.asarray(y2[:, :-1]))
  assert not np.allclose(np.asarray(y[:, -1]), np.asarray(y2[:, -1]))


@functools.partial(jax.jit, static_argnames="remask")
def _core_on(x, p, remask):
  q, k, v = (common.dense(p[n], x).reshape(B, T, M, DH) for n in ("wq", "wk", "wv"))
  pos = kernels.default_positions(B, T)
  return eit.enhanced_interactive_core(p, q, k, v, q_pos=pos, k_pos=pos, causal=True,
                                       csi_after_softmax=True, remask=remask)


def test_csi_after_softmax_without_remask_leaks_the_future():
  p = common.params_of(build(True, csi_after_softmax=True))
  x = jax.random.normal(jax.random.key(0), (B, T, D))
  x2 = x.at[:, -1].add(3.0)
  for remask, leaks in ((True, False), (False, True)):
    y, y2 = _core_on(x, p, remask), _core_on(x2, p, remask)
    diff = float(jnp.abs(y[:, :-1] - y2[:, :-1]).max())
    assert (diff > 1e-3) if leaks else (diff == 0.0)
  # The gradient form: without the re-mask, output 0 depends on the last token.
  g = jax.grad(lambda x: _core_on(x, p, False)[:, 0].sum())(x)
  assert float(jnp.abs(g[:, -1]).max()) > 0.0


# ----------------------------------------------------------------------------------------------
# (4) Mixed key = naive, (5) decode = full, (6) chunked = xla.
# ----------------------------------------------------------------------------------------------


def inputs(seed=0, length=T):
  x = jax.random.normal(jax.random.key(seed), (B, length, D))
  mask = jnp.ones((B, length), bool).at[0, 2].set(False).at[1, -2:].set(False)
  return x, mask


@pytest.mark.parametrize("causal,variant", [
    (False, {"efficient": True}), (True, {"csi_after_softmax": True}), (True, {"rope": True})])
def test_mixed_key_equals_naive(causal, variant):
  x, mask = inputs()
  naive = build(causal, **variant)
  mixed = build(causal, mixed_key=True, **variant)
  nnx.update(mixed, nnx.state(naive, nnx.Param))
  with jax.default_matmul_precision("highest"):
    a, b = jitted(naive)(x, mask), jitted(mixed)(x, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", [{"mixed_key": True, "rope": True}, {"efficient": True},
                                     {"csi_after_softmax": True},
                                     {"impl": "chunked", "q_chunk": 2, "k_chunk": 3}])
def test_cached_decoding_equals_full_forward(variant):
  layer = build(True, **variant)
  f = jitted(layer)
  x, mask = inputs()
  mask = mask.at[1, -2:].set(True).at[1, 3].set(False)  # padding inside the decoded sequence
  full = f(x, mask)
  cache = layer.init_cache(B, 12)
  steps = []
  for t in range(T):
    y, cache = f(x[:, t:t + 1], mask[:, t:t + 1], cache)
    steps.append(y)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(full)[valid], np.asarray(jnp.concatenate(steps, 1))[valid],
                             rtol=1e-5, atol=1e-5)
  assert int(cache["index"]) == T


@pytest.mark.parametrize("variant", [{"mixed_key": True, "efficient": True}])
def test_chunked_equals_xla(variant):
  x, mask = inputs(length=11)
  ref = build(True, impl="xla", **variant)
  chk = build(True, impl="chunked", q_chunk=4, k_chunk=3, **variant)
  nnx.update(chk, nnx.state(ref, nnx.Param))
  with jax.default_matmul_precision("highest"):
    a, b = jitted(ref)(x, mask), jitted(chk)(x, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-5, atol=1e-6)


def test_chunked_equals_xla_with_gradients():
  x, mask = inputs(length=11)
  ref = build(True, impl="xla")
  chk = build(True, impl="chunked", q_chunk=4, k_chunk=3)
  nnx.update(chk, nnx.state(ref, nnx.Param))
  w = jax.random.normal(jax.random.key(3), (B, 11, D))
  valid = np.asarray(mask)

  @jax.jit
  def run(x):
    out = []
    for layer in (ref, chk):
      kw = layer.apply_kwargs()

      def loss(p, x, kw=kw):
        y = eit.enhanced_interactive_apply(p, x, mask=mask, **kw)  # inside run's jit
        return jnp.sum(jnp.where(mask[..., None], y * w, 0.0)), y

      (_, y), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
          common.params_of(layer), x)
      out.append((y, gx, gp))
    return out

  with jax.default_matmul_precision("highest"):
    (a, ga, gpa), (b, gb, gpb) = run(x)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-4, atol=1e-5)
  for name in ("isi_w0", "csi_w1"):
    np.testing.assert_allclose(np.asarray(gpa[name]), np.asarray(gpb[name]), rtol=1e-4,
                               atol=1e-5)


def test_bfloat16_compute_is_finite_and_close():
  x, mask = inputs()
  ref = build(True)
  low = build(True, dtype="bfloat16")
  y32, y16 = jitted(ref)(x, mask), jitted(low)(x, mask)
  assert y16.dtype == jnp.bfloat16
  err = jnp.linalg.norm((y16.astype(jnp.float32) - y32)[mask]) / jnp.linalg.norm(y32[mask])
  assert float(err) < 2e-2
