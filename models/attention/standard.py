"""``standard`` multi-head softmax attention and ``memory_efficient`` (the same math on the
Rabe-Staats chunked kernel).

Parameters (kernels ``[in, out]``; PyTorch ``nn.Linear.weight`` is the transpose):

* ``wq.kernel [d, H*dh]``, ``wk.kernel``/``wv.kernel [d, Hkv*dh]``, ``wo.kernel [H*dh, d]``;
  ``*.bias`` when ``use_bias``. Heads are split head-major (feature ``h*dh + c``).
* Porting: ``nnx.MultiHeadAttention`` kernels ``[d, H, dh]`` / ``[H, dh, d]`` reshape to these;
  GPT-2 ``c_attn`` (Conv1D ``[d, 3d]``, q|k|v) splits along the output axis.

``standard`` and ``memory_efficient`` have identical parameter trees, so the state of one loads
into the other. Decoding uses a KV cache (:meth:`StandardAttention.init_cache`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import common, kernels
from attnlab.models.attention.registry import register


@dataclasses.dataclass(frozen=True)
class StandardOptions(common.AttentionOptions):
  """Options of ``standard``: the common ones plus grouped-query attention.

  Attributes:
    num_kv_heads: key/value heads (default: num_heads); num_heads must be a multiple.
  """

  num_kv_heads: int | None = None
  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked", "cudnn")


@dataclasses.dataclass(frozen=True)
class MemoryEfficientOptions(StandardOptions):
  """Options of ``memory_efficient``: ``standard``'s, with ``impl`` fixed to ``chunked``."""

  impl: str = "chunked"
  supported_impls: ClassVar[tuple[str, ...]] = ("chunked",)


def project_qkv(params, x, *, num_heads, num_kv_heads, head_dim, positions, rope, rope_theta,
                dtype):
  """q ``[B,L,H,dh]``, k, v ``[B,L,Hkv,dh]`` from x, with RoPE on q and k if asked."""
  b, l, _ = x.shape
  q = common.dense(params["wq"], x, dtype).reshape(b, l, num_heads, head_dim)
  k = common.dense(params["wk"], x, dtype).reshape(b, l, num_kv_heads, head_dim)
  v = common.dense(params["wv"], x, dtype).reshape(b, l, num_kv_heads, head_dim)
  if rope:
    q = common.apply_rope(q, positions, rope_theta)
    k = common.apply_rope(k, positions, rope_theta)
  return q, k, v


def standard_apply(params: dict, x: jax.Array, *, num_heads: int, mask=None, causal=False,
                   positions=None, cache=None, num_kv_heads=None, head_dim=None, impl="xla",
                   rope=False, rope_theta=10000.0, dtype=None, q_chunk=kernels.DEFAULT_Q_CHUNK,
                   k_chunk=kernels.DEFAULT_K_CHUNK):
  """Pure multi-head attention on ``params`` (names as in the module docstring).

  Args:
    params: ``{'wq': {'kernel', 'bias'?}, 'wk': ..., 'wv': ..., 'wo': ...}``.
    x: ``[B, L, d]``.
    num_heads: query heads H.
    mask: optional bool ``[B, L]`` key mask (True = real token).
    causal: causal masking.
    positions: optional int ``[B, L]`` (RoPE angles, causal order); default ``arange(L)``
      (offset by the cache index when decoding).
    cache: optional cache from :meth:`StandardAttention.init_cache`; then returns
      ``(y, new_cache)``.
    num_kv_heads, head_dim: default H and ``d // H``.
    impl: ``xla``, ``chunked`` or ``cudnn`` (decoding with a cache uses ``xla`` for ``cudnn``).
    dtype: compute dtype (default x's).

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
  """
  d = x.shape[-1]
  num_kv_heads = num_kv_heads or num_heads
  head_dim = head_dim or d // num_heads
  dtype = dtype or x.dtype
  positions = common.resolve_positions(x, positions, cache)
  q, k, v = project_qkv(params, x, num_heads=num_heads, num_kv_heads=num_kv_heads,
                        head_dim=head_dim, positions=positions, rope=rope,
                        rope_theta=rope_theta, dtype=dtype)
  kw = dict(causal=causal, q_chunk=q_chunk, k_chunk=k_chunk)
  if cache is None:
    o = kernels.dot_product_attention(q, k, v, mask=mask, impl=impl, **kw)
  else:
    cache, k_pos = common.update_kv_cache(cache, {"k": k, "v": v}, mask)
    o = kernels.dot_product_attention(
        q, cache["k"], cache["v"], mask=cache["mask"], impl="xla" if impl == "cudnn" else impl,
        q_positions=positions, k_positions=k_pos, **kw)
  y = common.dense(params["wo"], o.reshape(*o.shape[:2], num_heads * head_dim), dtype)
  return y if cache is None else (y, cache)


@register("standard")
class StandardAttention(nnx.Module):
  """Multi-head softmax attention (attention.md §1). Call as ``layer(x, mask=None)``.

  Args:
    d_model: width of x and of the output.
    num_heads: query heads.
    causal: causal masking.
    options: :class:`StandardOptions`.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  Options = StandardOptions
  uses_symbols: ClassVar[bool] = False

  def __init__(self, *, d_model: int, num_heads: int, causal: bool, options: StandardOptions,
               rngs: nnx.Rngs):
    o = options
    self.d_model, self.num_heads, self.causal, self.options = d_model, num_heads, causal, o
    self.num_kv_heads = o.num_kv_heads or num_heads
    if num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={num_heads} must be a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    self.head_dim = o.head_dim or d_model // num_heads
    hd, kvd = num_heads * self.head_dim, self.num_kv_heads * self.head_dim
    init_in = common.kernel_init(o, d_model)
    self.wq = common.Dense(d_model, hd, axes=("embed", "heads"), rngs=rngs, init=init_in,
                           use_bias=o.use_bias)
    self.wk = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in,
                           use_bias=o.use_bias)
    self.wv = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in,
                           use_bias=o.use_bias)
    self.wo = common.Dense(hd, d_model, axes=("heads", "embed"), rngs=rngs,
                           init=common.kernel_init(o, hd, out=True), use_bias=o.use_bias)

  def apply_kwargs(self) -> dict:
    o = self.options
    return dict(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                head_dim=self.head_dim, causal=self.causal, impl=o.impl, rope=o.rope,
                rope_theta=o.rope_theta, dtype=o.compute_dtype, q_chunk=o.q_chunk,
                k_chunk=o.k_chunk)

  def __call__(self, x, mask=None, *, positions=None, cache=None):
    """x ``[B, L, d]``, optional key mask ``[B, L]`` -> ``[B, L, d]`` (plus cache if given)."""
    return standard_apply(common.params_of(self), x, mask=mask, positions=positions,
                          cache=cache, **self.apply_kwargs())

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> dict:
    """An empty KV cache for decoding up to ``max_length`` tokens."""
    shape = (self.num_kv_heads, self.head_dim)
    return common.init_kv_cache(batch_size, max_length, {"k": shape, "v": shape},
                                dtype or self.options.compute_dtype)


@register("memory_efficient")
class MemoryEfficientAttention(StandardAttention):
  """``standard`` math on the chunked O(L)-memory kernel (Rabe & Staats, arXiv 2112.05682).

  Same parameter names and shapes as :class:`StandardAttention`: checkpoints interchange.
  Chunk sizes are the options ``q_chunk`` and ``k_chunk`` (defaults 512/1024).
  """

  Options = MemoryEfficientOptions
