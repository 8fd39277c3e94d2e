"""Hypothesis property tests over every registered variant: random batch, length (including 1),
heads, head sizes, dtypes and masks (including rows with every key masked).

Fully masked rows: every variant returns finite values there (models/attention/README.md §0.2
leaves them unspecified; the softmax-based kernels return zeros, CB returns its own input's
half); they are checked for finiteness only.
"""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings

from attnlab.models import attention
from conftest import ALL_VARIANTS


@st.composite
def cases(draw):
  heads = draw(st.sampled_from([1, 2, 4]))
  head_dim = draw(st.sampled_from([4, 8, 12]))  # AFA needs an even number of complex pairs
  batch = draw(st.integers(1, 2))
  length = draw(st.integers(1, 9))
  dtype = draw(st.sampled_from(["float32", "bfloat16"]))
  causal = draw(st.booleans())
  mask = np.asarray(draw(st.lists(st.booleans(), min_size=batch * length,
                                  max_size=batch * length))).reshape(batch, length)
  if draw(st.booleans()):
    mask[0] = False  # a sequence with every key masked
  seed = draw(st.integers(0, 2**16))
  return heads, head_dim, batch, length, dtype, causal, mask, seed


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_VARIANTS)
@settings(max_examples=6, deadline=None, derandomize=True)
@given(case=cases())
def test_fuzzed_inputs(name, case):
  heads, head_dim, batch, length, dtype, causal, mask, seed = case
  d = heads * head_dim
  layer = attention.make(name, d_model=d, num_heads=heads, causal=causal, rngs=nnx.Rngs(seed),
                         dtype=dtype)
  x = jax.random.normal(jax.random.key(seed), (batch, length, d)).astype(dtype)
  mask = jnp.asarray(mask)
  y = layer(x, mask)
  assert y.shape == (batch, length, d)
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
  # Padding invariance: changing masked tokens changes nothing at real positions.
  noise = jax.random.normal(jax.random.key(seed + 1), x.shape).astype(dtype) * 4
  y2 = layer(jnp.where(mask[..., None], x, noise), mask)
  valid = np.asarray(mask)
  np.testing.assert_array_equal(np.asarray(y, np.float32)[valid],
                                np.asarray(y2, np.float32)[valid])
  if causal and length > 1:
    x3 = x.at[:, -1].add(jnp.asarray(3.0, dtype))
    y3 = layer(x3, mask)
    np.testing.assert_array_equal(np.asarray(y, np.float32)[:, :-1],
                                  np.asarray(y3, np.float32)[:, :-1])
