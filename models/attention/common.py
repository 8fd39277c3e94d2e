"""Pieces every attention variant shares: options, parameters with logical axes, RoPE, caches.

Parameters are created as ``nnx.Param`` carrying logical axis names in their ``out_sharding``
metadata (``embed``, ``heads``, ``kv_heads``, ``mlp``, ``vocab`` or None); the training code maps
them to mesh axes with a rules table. Modules never see a mesh.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import kernels

DTYPES = ("float32", "bfloat16", "float16", "float64")
INITS = ("normal", "fan_in_uniform")


def _check_choice(field: str, value: Any, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"{field}={value!r} is not allowed; choose one of {tuple(allowed)}")


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
  """Options every variant accepts; variants subclass this with their own fields.

  Attributes:
    impl: kernel, one of the variant's ``supported_impls`` (``xla``, ``chunked``, ``cudnn``).
    dtype: compute dtype of projections and attention inputs (parameters stay float32; logits,
      softmax and normalisers are float32 whatever this is).
    rope: rotary position embedding on queries and keys (interleaved pairs).
    rope_theta: RoPE base.
    q_chunk, k_chunk: chunk sizes of the chunked kernel.
    init: ``normal`` (N(0, init_std), GPT-2 style) or ``fan_in_uniform`` (U(+-1/sqrt(fan_in)),
      PyTorch's Linear default, used by the in-context-regression model).
    init_std: std of the normal init of input projections.
    out_init_std: std of the output projection (default ``init_std``; the transformer passes
      ``init_std / sqrt(2 * num_layers)``).
    use_bias: biases on the projections.
    head_dim: per-head width (default ``d_model // num_heads``).
  """

  impl: str = "xla"
  dtype: str = "float32"
  rope: bool = False
  rope_theta: float = 10000.0
  q_chunk: int = kernels.DEFAULT_Q_CHUNK
  k_chunk: int = kernels.DEFAULT_K_CHUNK
  init: str = "normal"
  init_std: float = 0.02
  out_init_std: float | None = None
  use_bias: bool = False
  head_dim: int | None = None

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")

  def __post_init__(self):
    _check_choice("attention.impl", self.impl, self.supported_impls)
    _check_choice("attention.dtype", self.dtype, DTYPES)
    _check_choice("attention.init", self.init, INITS)
    kernels.check_chunks(self.q_chunk, self.k_chunk)
    if self.head_dim is not None and self.head_dim <= 0:
      raise ValueError(f"head_dim must be positive, got {self.head_dim}")

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


# ----------------------------------------------------------------------------------------------
# Parameters.
# ----------------------------------------------------------------------------------------------


def make_param(rngs: nnx.Rngs | None, init, shape, axes, dtype=jnp.float32) -> nnx.Param:
  """A float32 ``nnx.Param`` initialised by ``init(key, shape)`` with logical axis names."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not match shape {shape}")
  key = rngs.params() if rngs is not None else None
  value = init(key, tuple(shape), dtype)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


def kernel_init(opts: AttentionOptions, fan_in: int, out: bool = False):
  """The variant-wide init of a dense kernel from the options."""
  if opts.init == "fan_in_uniform":
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
  std = opts.out_init_std if (out and opts.out_init_std is not None) else opts.init_std
  return nnx.initializers.normal(std)


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


# ----------------------------------------------------------------------------------------------
# Positions.
# ----------------------------------------------------------------------------------------------


def apply_rope(x, positions, theta: float = 10000.0):
  """Rotary embedding on interleaved pairs (2k, 2k+1); angles in float32.

  Args:
    x: ``[B, L, H, d]`` with even d.
    positions: int ``[B, L]``.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"RoPE needs an even head dimension, got {d}")
  inv_freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # [d/2]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, d/2]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], d // 2, 2)
  x0, x1 = xf[..., 0], xf[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def resolve_positions(x, positions, cache):
  """Positions ``[B, L]``: given ones, else ``arange`` offset by the cache index."""
  if positions is not None:
    return positions.astype(jnp.int32)
  offset = 0 if cache is None else cache["index"]
  return kernels.default_positions(x.shape[0], x.shape[1], offset)


# ----------------------------------------------------------------------------------------------
# Key/value caches for incremental decoding.
# ----------------------------------------------------------------------------------------------


def init_kv_cache(batch: int, max_length: int, arrays: dict[str, tuple], dtype) -> dict:
  """A cache dict: ``arrays`` maps name -> per-token trailing shape; plus ``mask`` and ``index``.

  ``index`` counts the tokens written; ``mask[b, j]`` is True for written, real tokens.
  """
  cache = {name: jnp.zeros((batch, max_length, *shape), dtype) for name, shape in arrays.items()}
  cache["mask"] = jnp.zeros((batch, max_length), bool)
  cache["index"] = jnp.zeros((), jnp.int32)
  return cache


def update_kv_cache(cache: dict, new: dict[str, jax.Array], mask) -> tuple[dict, jax.Array]:
  """Write the new tokens' arrays at ``cache['index']``; returns (cache, key positions).

  Args:
    cache: from :func:`init_kv_cache`.
    new: name -> ``[B, T, ...]`` arrays for the T new tokens.
    mask: optional bool ``[B, T]`` for the new tokens.
  """
  idx = cache["index"]
  out = dict(cache)
  for name, value in new.items():
    out[name] = jax.lax.dynamic_update_slice_in_dim(cache[name], value.astype(cache[name].dtype),
                                                    idx, axis=1)
  b, t = next(iter(new.values())).shape[:2]
  new_mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
  out["mask"] = jax.lax.dynamic_update_slice_in_dim(cache["mask"], new_mask, idx, axis=1)
  out["index"] = idx + t
  k_pos = kernels.default_positions(b, cache["mask"].shape[1])
  return out, k_pos
