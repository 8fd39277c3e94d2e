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


def project_from_options(params, x, o, *, num_heads, num_kv_heads, positions, cache):
  """``(q, k, v, positions)``: the projections as the options ask (head width, RoPE, dtype),
  with positions resolved (given, else ``arange`` offset by the cache index)."""
  positions = common.resolve_positions(x, positions, cache)
  q, k, v = project_qkv(params, x, num_heads=num_heads, num_kv_heads=num_kv_heads,
                        head_dim=o.head_dim or x.shape[-1] // num_heads, positions=positions,
                        rope=o.rope, rope_theta=o.rope_theta, dtype=o.compute_dtype)
  return q, k, v, positions


def standard_apply(params: dict, x: jax.Array, *, num_heads: int, options=None, causal=False,
                   mask=None, positions=None, cache=None, symbols=None):
  """Pure multi-head attention on ``params`` (names as in the module docstring).

  Args:
    params: ``{'wq': {'kernel', 'bias'?}, 'wk': ..., 'wv': ..., 'wo': ...}``.
    x: ``[B, L, d]``.
    num_heads: query heads H.
    options: :class:`StandardOptions` (None: the defaults, computing in x's dtype);
      ``num_kv_heads`` and ``head_dim`` default to H and ``d // H``; ``impl='cudnn'`` decodes
      with ``xla``.
    causal: causal masking.
    mask: optional bool ``[B, L]`` key mask (True = real token).
    positions: optional int ``[B, L]`` (RoPE angles, causal order when decoding); default
      ``arange(L)`` (offset by the cache index when decoding).
    cache: optional cache from :meth:`StandardAttention.init_cache`; then returns
      ``(y, new_cache)``.
    symbols: unused (part of the shared signature).

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
  """
  del symbols
  o = common.options_or_default(options, StandardOptions, x)
  q, k, v, positions = project_from_options(params, x, o, num_heads=num_heads,
                                            num_kv_heads=o.num_kv_heads or num_heads,
                                            positions=positions, cache=cache)
  return attend_and_project(params, q, k, v, o, mask=mask, causal=causal, positions=positions,
                            cache=cache)


def attend_and_project(params: dict, q, k, v, options: StandardOptions, *, mask, causal: bool,
                       positions, cache):
  """Softmax attention of projected ``q [B, L, H, dh]`` over ``k, v [B, L, Hkv, dh]`` (with the
  decoding cache when given: :func:`common.cached_keys`) on the options' kernel, then ``wo``;
  returns y ``[B, L, d]`` (and the new cache). The tail of every standard-shaped layer."""
  o = options
  keys, key_valid, q_pos, k_pos, cache = common.cached_keys(
      cache, {"k": k, "v": v}, mask, None if cache is None else positions)
  impl = "xla" if (cache is not None and o.impl == "cudnn") else o.impl
  out = kernels.dot_product_attention(q, keys["k"], keys["v"], mask=key_valid, causal=causal,
                                      impl=impl, q_positions=q_pos, k_positions=k_pos,
                                      q_chunk=o.q_chunk, k_chunk=o.k_chunk)
  y = common.dense(params["wo"], out.reshape(*out.shape[:2], -1), o.compute_dtype)
  return common.with_cache(y, cache)


def add_projections(layer, *, d_model: int, num_heads: int, options: StandardOptions,
                    rngs: nnx.Rngs) -> None:
  """Give ``layer`` ``standard``'s parameters ``wq, wk, wv, wo`` and its ``num_kv_heads`` and
  ``head_dim`` (models/attention/README.md §1.2); every layer with ``standard``'s parameter
  tree builds it here, so they initialise identically from the same ``rngs``."""
  o = options
  layer.num_kv_heads = o.num_kv_heads or num_heads
  if num_heads % layer.num_kv_heads:
    raise ValueError(f"num_heads={num_heads} must be a multiple of "
                     f"num_kv_heads={layer.num_kv_heads}")
  layer.head_dim = o.head_dim or d_model // num_heads
  hd, kvd = num_heads * layer.head_dim, layer.num_kv_heads * layer.head_dim
  init_in = common.kernel_init(o, d_model)
  layer.wq = common.Dense(d_model, hd, axes=("embed", "heads"), rngs=rngs, init=init_in,
                          use_bias=o.use_bias)
  layer.wk = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in,
                          use_bias=o.use_bias)
  layer.wv = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in,
                          use_bias=o.use_bias)
  layer.wo = common.Dense(hd, d_model, axes=("heads", "embed"), rngs=rngs,
                          init=common.kernel_init(o, hd, out=True), use_bias=o.use_bias)


class StandardShaped(common.AttentionLayer):
  """A layer with ``standard``'s parameters (:func:`add_projections`: ``wq, wk, wv, wo``) and
  its key/value decoding cache; subclasses set ``Options`` and ``apply``."""

  def __init__(self, *, d_model: int, num_heads: int, causal: bool, options: StandardOptions,
               rngs: nnx.Rngs):
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=options)
    add_projections(self, d_model=d_model, num_heads=num_heads, options=options, rngs=rngs)

  def cache_arrays(self) -> dict[str, tuple]:
    """Keys and values ``[Hkv, dh]`` per token."""
    shape = (self.num_kv_heads, self.head_dim)
    return {"k": shape, "v": shape}


@register("standard")
class StandardAttention(StandardShaped):
  """Multi-head softmax attention (models/attention/README.md §1). Call as ``layer(x, mask=None)``.

  Args:
    d_model: width of x and of the output.
    num_heads: query heads.
    causal: causal masking.
    options: :class:`StandardOptions`.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  Options = StandardOptions
  apply = staticmethod(standard_apply)


def memory_efficient_apply(params: dict, x: jax.Array, *, num_heads: int, options=None,
                           causal=False, mask=None, positions=None, cache=None, symbols=None):
  """:func:`standard_apply` with :class:`MemoryEfficientOptions` (the chunked kernel)."""
  return standard_apply(params, x, num_heads=num_heads,
                        options=common.options_or_default(options, MemoryEfficientOptions, x),
                        causal=causal, mask=mask, positions=positions, cache=cache,
                        symbols=symbols)


@register("memory_efficient")
class MemoryEfficientAttention(StandardAttention):
  """``standard`` math on the chunked O(L)-memory kernel (Rabe & Staats, arXiv 2112.05682).

  Same parameter names and shapes as :class:`StandardAttention`: checkpoints interchange.
  Chunk sizes are the options ``q_chunk`` and ``k_chunk`` (defaults 512/1024).
  """

  Options = MemoryEfficientOptions
  apply = staticmethod(memory_efficient_apply)
