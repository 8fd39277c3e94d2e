"""The README's import examples run as written."""

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx
from flax.nnx import bridge

from attnlab.models import attention


def test_layer_and_pure_kernel():
  x = jnp.ones((2, 16, 32))
  layer = attention.make("standard", d_model=32, num_heads=4, causal=True, rngs=nnx.Rngs(0))
  assert layer(x, mask=jnp.ones((2, 16), bool)).shape == (2, 16, 32)
  q = k = v = jnp.ones((1, 64, 2, 8))
  o = attention.dot_product_attention(q, k, v, causal=True, impl="chunked", q_chunk=16,
                                      k_chunk=16)
  assert o.shape == (1, 64, 2, 8)


def test_linen_bridge():
  class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
      attn = bridge.to_linen(attention.REGISTRY["standard"], d_model=32, num_heads=4,
                             causal=True, options=attention.options_for("standard"))
      return x + attn(x)

  x = jnp.ones((2, 8, 32))
  model = LinenBlock()
  variables = model.init(jax.random.key(0), x)
  y = model.apply(variables, x)
  assert y.shape == x.shape
  assert len(jax.tree.leaves(variables)) >= 4
