"""Parameter builders shared by every module: float32 ``nnx.Param`` with logical axis names,
a dense layer and its pure form.

Parameters carry logical axis names (``embed``, ``heads``, ``kv_heads``, ``mlp``, ``vocab`` or
None) in their ``out_sharding`` metadata; the training code maps them to mesh axes with a rules
table, so modules never see a mesh.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx


def make_param(rngs: nnx.Rngs | None, init, shape, axes, dtype=jnp.float32) -> nnx.Param:
  """A float32 ``nnx.Param`` initialised by ``init(key, shape)`` with logical axis names."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not match shape {shape}")
  key = rngs.params() if rngs is not None else None
  value = init(key, tuple(shape), dtype)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class Dense(nnx.Module):
  """``y = x @ kernel (+ bias)``; kernel ``[in, out]`` float32, cast to the compute dtype."""

  def __init__(self, in_features: int, out_features: int, *, axes, rngs: nnx.Rngs,
               init, use_bias: bool = False):
    self.kernel = make_param(rngs, init, (in_features, out_features), axes)
    self.bias = (make_param(rngs, nnx.initializers.zeros, (out_features,), axes[1:])
                 if use_bias else None)

  def __call__(self, x, dtype=None):
    return dense(params_of(self), x, dtype)


def dense(p: dict, x, dtype=None):
  """Pure form of :class:`Dense` on ``{'kernel', 'bias'?}``."""
  dtype = dtype or x.dtype
  y = jnp.einsum("...i,io->...o", x.astype(dtype), p["kernel"].astype(dtype),
                 preferred_element_type=jnp.float32 if dtype == jnp.float32 else None)
  if p.get("bias") is not None:
    y = y + p["bias"].astype(y.dtype)
  return y.astype(dtype)


def params_of(module: nnx.Module) -> dict:
  """The module's parameters as a nested dict of arrays (names as in ``nnx.state``)."""
  return nnx.to_pure_dict(nnx.state(module, nnx.Param))
