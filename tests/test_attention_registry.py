"""Properties every registered attention variant must have (models/attention/README.md §7).

Parametrised over the whole registry, so a newly registered variant inherits them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from conftest import ALL_VARIANTS

B, L, D, H = 2, 7, 32, 4


def build(name, causal=True, **options):
  return attention.make(name, d_model=D, num_heads=H, causal=causal, rngs=nnx.Rngs(0),
                        **options)


def inputs(seed=0, length=L):
  x = jax.random.normal(jax.random.key(seed), (B, length, D))
  mask = jnp.ones((B, length), bool).at[0, 2].set(False).at[1, -2:].set(False)
  return x, mask


def supports(name, impl):
  return impl in attention.REGISTRY[name].Options.supported_impls


@pytest.mark.parametrize("name", ALL_VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_shape_and_dtype(name, causal):
  x, mask = inputs()
  y = build(name, causal)(x, mask)
  assert y.shape == (B, L, D) and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_causality_bit_identical(name):
  layer = build(name, causal=True)
  x, _ = inputs()
  y = layer(x)
  x2 = x.at[:, -1].add(jax.random.normal(jax.random.key(9), (B, D)) * 3.0)
  y2 = layer(x2)
  np.testing.assert_array_equal(np.asarray(y[:, :-1]), np.asarray(y2[:, :-1]))
  assert not np.allclose(np.asarray(y[:, -1]), np.asarray(y2[:, -1]))


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_causality_gradient(name):
  """d y_i / d x_j = 0 for j > i (the gradient form of causality)."""
  layer = build(name, causal=True)
  x, _ = inputs()
  i = 3
  g = jax.grad(lambda x: layer(x)[:, i].sum())(x)
  assert float(jnp.abs(g[:, i + 1:]).max()) == 0.0
  assert float(jnp.abs(g[:, : i + 1]).max()) > 0.0


@pytest.mark.parametrize("name", ALL_VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_invariance(name, causal):
  """Changing masked tokens changes nothing at real positions."""
  layer = build(name, causal)
  x, mask = inputs()
  noise = jax.random.normal(jax.random.key(5), x.shape) * 5.0
  x2 = jnp.where(mask[..., None], x, noise)
  y, y2 = layer(x, mask), layer(x2, mask)
  valid = np.asarray(mask)
  np.testing.assert_array_equal(np.asarray(y)[valid], np.asarray(y2)[valid])


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_jit_equals_eager(name):
  layer = build(name, causal=True)
  x, mask = inputs()
  eager = layer(x, mask)
  jitted = nnx.jit(lambda m, x, mask: m(x, mask))(layer, x, mask)
  np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_finite_gradients_with_fully_masked_row(name):
  layer = build(name, causal=True)
  x, mask = inputs()
  mask = mask.at[1].set(False)  # one example with no real key at all
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

  def loss(params, x):
    y = nnx.merge(graphdef, params, rest)(x, mask)
    return jnp.sum(jnp.where(mask[..., None], y, 0.0) ** 2)

  gp, gx = jax.grad(loss, argnums=(0, 1))(params, x)
  for leaf in jax.tree_util.tree_leaves((gp, gx)):
    assert bool(jnp.all(jnp.isfinite(leaf)))
  y = layer(x, mask)
  assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", [n for n in ALL_VARIANTS
                                  if supports(n, "chunked") and supports(n, "xla")])
def test_chunked_equals_xla(name):
  x, mask = inputs(length=11)
  ref = build(name, causal=True, impl="xla")
  chk = build(name, causal=True, impl="chunked", q_chunk=4, k_chunk=3)
  nnx.update(chk, nnx.state(ref, nnx.Param))
  with jax.default_matmul_precision("highest"):
    a, b = ref(x, mask), chk(x, mask)
  valid = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_cached_decoding_equals_full_forward(name):
  layer = build(name, causal=True)
  if not hasattr(layer, "init_cache"):
    pytest.skip(f"{name} does not support incremental decoding")
  x, _ = inputs()
  full = layer(x)
  cache = layer.init_cache(B, 16)
  steps = []
  for t in range(L):
    y, cache = layer(x[:, t:t + 1], cache=cache)
    steps.append(y)
  np.testing.assert_allclose(np.asarray(full), np.asarray(jnp.concatenate(steps, 1)),
                             rtol=1e-5, atol=1e-5)
  # Several tokens at once (prefill then decode) give the same result too.
  cache = layer.init_cache(B, 16)
  y1, cache = layer(x[:, :4], cache=cache)
  y2, cache = layer(x[:, 4:], cache=cache)
  np.testing.assert_allclose(np.asarray(full), np.asarray(jnp.concatenate([y1, y2], 1)),
                             rtol=1e-5, atol=1e-5)


def test_make_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="standard"):
    attention.make("nope", d_model=D, num_heads=H, causal=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="allowed"):
    build("standard", not_an_option=1)
  with pytest.raises(ValueError, match="impl"):
    build("standard", impl="triton")
  with pytest.raises(ValueError, match="divisible"):
    attention.make("standard", d_model=30, num_heads=4, causal=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="q_chunk"):
    build("memory_efficient", q_chunk=0)


def test_standard_and_memory_efficient_share_parameters():
  a, b = build("standard"), build("memory_efficient")
  sa = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(a, nnx.Param)))
  sb = jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(b, nnx.Param)))
  assert sa == sb
  nnx.update(b, nnx.state(a, nnx.Param))
  x, mask = inputs()
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(np.asarray(a(x, mask)), np.asarray(b(x, mask)), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------
# The contract itself: dtypes, input errors, and a variant written from the README's recipe.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_every_variant_implements_the_layer_contract(name):
  cls = attention.REGISTRY[name]
  assert issubclass(cls, attention.AttentionLayer) and cls.name == name
  assert issubclass(cls.Options, attention.AttentionOptions)
  layer = build(name)
  assert callable(type(layer).apply) and isinstance(layer.apply_kwargs(), dict)
  x, mask = inputs()
  symbols = None
  if cls.uses_symbols:  # a standalone symbol layer owns a retriever; the pure form takes symbols
    symbols = layer.retriever(x, positions=jnp.broadcast_to(jnp.arange(L), (B, L)), mask=mask)
  pure = type(layer).apply(layer.params(), x, mask=mask, symbols=symbols, **layer.apply_kwargs())
  np.testing.assert_array_equal(np.asarray(pure), np.asarray(layer(x, mask)))


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_dtype_given_as_a_jax_dtype_or_a_name(name):
  a = attention.make(name, d_model=D, num_heads=H, causal=True, rngs=nnx.Rngs(0),
                     dtype=jnp.bfloat16)
  assert a.options.dtype == "bfloat16"
  x, _ = inputs()
  assert a(x.astype(jnp.bfloat16)).shape == (B, L, D)


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_inputs_of_the_wrong_shape_are_clear_errors(name):
  layer = build(name)
  x, mask = inputs()
  with pytest.raises(ValueError, match=r"\[batch, length\] = \(2, 7\) key mask"):
    layer(x, jnp.ones((B, 1, L, L), bool))  # a Flax-style attention mask
  with pytest.raises(ValueError, match="d_model=32"):
    layer(x[..., :16], mask)
  with pytest.raises(ValueError, match=r"\[batch, length, d_model"):
    layer(x[0], mask)


def test_relational_refuses_biases():
  with pytest.raises(ValueError, match="use_bias"):
    build("relational", use_bias=True)


def _readme_recipe() -> str:
  import pathlib
  import re
  text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  section = text[text.index("## Add a variant"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_recipe_variant_passes_the_registry_checks(tmp_path):
  """The README's "Add a variant" code, run as written, passes every registry-wide check."""
  import importlib.util
  path = tmp_path / "scaled_softmax.py"
  path.write_text(_readme_recipe())
  spec = importlib.util.spec_from_file_location("scaled_softmax_recipe", path)
  module = importlib.util.module_from_spec(spec)
  name = "scaled_softmax"
  try:
    spec.loader.exec_module(module)
    assert attention.REGISTRY[name] is module.ScaledSoftmaxAttention
    for causal in (False, True):
      test_shape_and_dtype(name, causal)
      test_padding_invariance(name, causal)
    test_causality_bit_identical(name)
    test_causality_gradient(name)
    test_jit_equals_eager(name)
    test_finite_gradients_with_fully_masked_row(name)
    test_chunked_equals_xla(name)
    test_cached_decoding_equals_full_forward(name)
    test_every_variant_implements_the_layer_contract(name)
    test_dtype_given_as_a_jax_dtype_or_a_name(name)
    test_inputs_of_the_wrong_shape_are_clear_errors(name)
    # The temperature is a real option: it changes the output and is checked like any other.
    x, mask = inputs()
    hot, cold = build(name, temperature=1.0), build(name, temperature=4.0)
    assert not np.allclose(np.asarray(hot(x, mask)), np.asarray(cold(x, mask)))
    with pytest.raises(ValueError, match="allowed"):
      build(name, temp=1.0)
    # And it plugs into the shared transformer.
    from attnlab.models.transformer import LanguageModel, TransformerConfig
    cfg = TransformerConfig(vocab_size=11, d_model=D, num_layers=2, num_heads=H, d_ff=64,
                            max_len=16, attention=attention.spec(name, layout="hybrid"))
    logits = LanguageModel(cfg, rngs=nnx.Rngs(0))(jnp.zeros((B, L), jnp.int32))
    assert logits.shape == (B, L, 11)
  finally:
    attention.REGISTRY.pop(name, None)
