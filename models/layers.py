"""Small NNX building blocks with logical axis names: LayerNorm, MLP, embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.params import Dense, make_param


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, statistics in float32; ``scale``/``bias`` ``[d]``."""

  def __init__(self, d: int, *, eps: float = 1e-6, rngs: nnx.Rngs | None = None):
    self.eps = eps
    self.scale = make_param(None, nnx.initializers.ones, (d,), ("embed",))
    self.bias = make_param(None, nnx.initializers.zeros, (d,), ("embed",))

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(x.dtype)


class MLP(nnx.Module):
  """GELU (tanh) MLP ``d -> d_ff -> d`` with biases (GPT-2 style)."""

  def __init__(self, d: int, d_ff: int, *, rngs: nnx.Rngs, init_std: float = 0.02,
               out_init_std: float = 0.02, dtype=jnp.float32):
    self.dtype = dtype
    self.fc_in = Dense(d, d_ff, axes=("embed", "mlp"), rngs=rngs,
                       init=nnx.initializers.normal(init_std), use_bias=True)
    self.fc_out = Dense(d_ff, d, axes=("mlp", "embed"), rngs=rngs,
                        init=nnx.initializers.normal(out_init_std), use_bias=True)

  def __call__(self, x):
    return self.fc_out(jax.nn.gelu(self.fc_in(x, self.dtype), approximate=True), self.dtype)


class Embed(nnx.Module):
  """Token embedding ``embedding [vocab, d]``; :meth:`attend` is the tied output head."""

  def __init__(self, vocab_size: int, d: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
    self.embedding = make_param(rngs, nnx.initializers.normal(init_std), (vocab_size, d),
                                ("vocab", "embed"))

  def __call__(self, tokens, dtype=jnp.float32):
    return jnp.take(self.embedding[...], tokens, axis=0).astype(dtype)

  def attend(self, x):
    """Tied LM head: float32 logits ``x @ embedding^T``."""
    return jnp.einsum("...d,vd->...v", x, self.embedding[...].astype(x.dtype),
                      preferred_element_type=jnp.float32)
