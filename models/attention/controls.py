"""Controls of "Deconstructing Attention" (Xue, Moosavi, Aletras, arXiv 2510.11602, Section 3)
that change the attention *math*: ``mlp_control`` (paper: MLP), ``taylor_softmax`` (paper:
Approximate) and ``token_score_pool`` (paper: Non-approximate). The controls that change where
queries and keys come from are in :mod:`attnlab.models.attention.qk_controls`.

Each is parameter-matched to ``standard`` (4 d^2 weights at the defaults;
models/attention/README.md §9):

* ``mlp_control``: ``y_t = gelu(x_t W_in) W_out``, ``fc_in.kernel [d, 2d]``,
  ``fc_out.kernel [2d, d]``: no token mixing, y_t depends on x_t only.
* ``taylor_softmax``: ``standard``'s parameters and projections; the softmax of the scores
  ``s = q.k / sqrt(dh)`` is replaced by its second-order Taylor form
  ``P_ij = w_ij / sum_j' w_ij'`` with ``w = 1 + s + s^2 / 2`` over the admissible keys.
* ``token_score_pool``: ``standard``'s parameters; one scalar score per token and head from its
  own query and key, ``s_j = q_j.k_j / sqrt(dh)``, and ``y_t = sum_j softmax_j(s) v_j`` over the
  admissible keys j (a causal cumulative softmax when causal): no query-key product between
  tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import common, kernels
from attnlab.models.attention.registry import register
from attnlab.models.attention.standard import (StandardOptions, StandardShaped,
                                               project_from_options)


def _advance_index(cache: dict, mask, b: int, t: int) -> dict:
  """A cache without per-token arrays, advanced by ``t`` tokens (mask written, index moved)."""
  new_mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
  idx = cache["index"]
  return {**cache, "mask": jax.lax.dynamic_update_slice_in_dim(cache["mask"], new_mask, idx, 1),
          "index": idx + t}


# ----------------------------------------------------------------------------------------------
# mlp_control (paper: MLP).
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MLPControlOptions(common.AttentionOptions):
  """Options of ``mlp_control``.

  Attributes:
    hidden_factor: hidden width = ``hidden_factor * d``; the default 2 gives ``standard``'s
      4 d^2 weights (``d * 2d + 2d * d``).

  ``impl`` (``xla`` or ``chunked``) has no effect: the layer mixes no tokens and runs no
  attention kernel. Both are accepted so that a Hybrid stack can put ``standard`` layers on the
  chunked kernel (they take the variant's kernel fields, models/attention/README.md §0.7).
  """

  hidden_factor: int = 2

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.hidden_factor, int) or self.hidden_factor <= 0:
      raise ValueError(f"attention.hidden_factor must be a positive integer, got "
                       f"{self.hidden_factor!r}")


def mlp_control_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                      mask=None, positions=None, cache=None, symbols=None):
  """Token-wise MLP ``y_t = gelu(x_t W_in (+ b_in)) W_out (+ b_out)`` (tanh GELU).

  Args:
    params: ``{'fc_in': {'kernel' [d, f*d], 'bias'?}, 'fc_out': {'kernel' [f*d, d], 'bias'?}}``.
    x: ``[B, L, d]``.
    num_heads, causal, positions, symbols: unused (the shared signature); the output at t
      depends on x_t only, so it is causal whatever ``causal`` says.
    options: :class:`MLPControlOptions` (None: the defaults, computing in x's dtype).
    mask: optional bool ``[B, L]``; only recorded in the cache (no token reads another).
    cache: optional cache from :meth:`MLPControl.init_cache` (index and mask only); then
      returns ``(y, new_cache)``.

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
  """
  del num_heads, causal, positions, symbols
  o = common.options_or_default(options, MLPControlOptions, x)
  dtype = o.compute_dtype
  h = jax.nn.gelu(common.dense(params["fc_in"], x, dtype), approximate=True)
  y = common.dense(params["fc_out"], h, dtype)
  if cache is not None:
    cache = _advance_index(cache, mask, *x.shape[:2])
  return common.with_cache(y, cache)


@register("mlp_control")
class MLPControl(common.AttentionLayer):
  """No token mixing (paper: MLP): a token-wise two-layer GELU MLP ``d -> 2d -> d``.

  Parameter-matched to ``standard``: ``fc_in.kernel [d, 2d]`` (N(0, init_std)) and
  ``fc_out.kernel [2d, d]`` (N(0, out_init_std)), 4 d^2 weights; biases only with ``use_bias``.
  ``num_heads`` and ``head_dim`` are accepted and unused (models/attention/README.md §9.1).
  """

  is_control = True

  Options = MLPControlOptions
  apply = staticmethod(mlp_control_apply)

  def __init__(self, *, d_model: int, num_heads: int, causal: bool,
               options: MLPControlOptions, rngs: nnx.Rngs):
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=options)
    hidden = options.hidden_factor * d_model
    self.fc_in = common.Dense(d_model, hidden, axes=("embed", "mlp"), rngs=rngs,
                              init=common.kernel_init(options, d_model),
                              use_bias=options.use_bias)
    self.fc_out = common.Dense(hidden, d_model, axes=("mlp", "embed"), rngs=rngs,
                               init=common.kernel_init(options, hidden, out=True),
                               use_bias=options.use_bias)

  def cache_arrays(self) -> dict[str, tuple]:
    """Nothing per token: decoding keeps only the index and mask."""
    return {}


# ----------------------------------------------------------------------------------------------
# taylor_softmax (paper: Approximate).
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaylorSoftmaxOptions(StandardOptions):
  """Options of ``taylor_softmax``: ``standard``'s (GQA included), kernels ``xla``/``chunked``."""

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")


def taylor_weights(logits, adm):
  """``P_ij = w_ij / sum_j' w_ij'``, ``w = 1 + s + s^2/2`` on admissible pairs (float32 or wider).

  ``w = ((s + 1)^2 + 1) / 2 >= 1/2``, so every admissible key has a positive weight; rows with
  no admissible key give zeros.
  """
  s = logits.astype(kernels.acc_dtype(logits))
  w = jnp.where(adm, 1.0 + s + 0.5 * s * s, 0.0)
  den = jnp.sum(w, axis=-1, keepdims=True)
  return w / jnp.where(den > 0, den, 1.0)


def taylor_log_weights(logits):
  """``log(1 + s + s^2/2)``: logits whose softmax is :func:`taylor_weights` (chunked kernel)."""
  s = logits.astype(kernels.acc_dtype(logits))
  return jnp.log(1.0 + s + 0.5 * s * s)


def taylor_softmax_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                         mask=None, positions=None, cache=None, symbols=None):
  """``standard`` with the softmax replaced by its second-order Taylor form (pure form).

  Args: as :func:`~attnlab.models.attention.standard.standard_apply` (``symbols`` unused);
  ``options`` is :class:`TaylorSoftmaxOptions`. On ``chunked`` the online-softmax kernel runs on
  the logits ``log w`` (exp(log w) = w, so the recurrence normalises w exactly).
  """
  del symbols
  o = common.options_or_default(options, TaylorSoftmaxOptions, x)
  b, l, _ = x.shape
  q, k, v, positions = project_from_options(params, x, o, num_heads=num_heads,
                                            num_kv_heads=o.num_kv_heads or num_heads,
                                            positions=positions, cache=cache)
  keys, key_valid, q_pos, k_pos, cache = common.cached_keys(
      cache, {"k": k, "v": v}, mask, None if cache is None else positions)
  q_pos = kernels.default_positions(b, l) if q_pos is None else q_pos
  k_pos = kernels.default_positions(b, keys["k"].shape[1]) if k_pos is None else k_pos
  scale = 1.0 / math.sqrt(q.shape[-1])
  if o.impl == "xla":
    p = taylor_weights(kernels.dot_product_logits(q, keys["k"], scale),
                       kernels.admissible(q_pos, k_pos, key_valid, causal))
    out = kernels.weighted_values(p, keys["v"])
  else:
    out, _ = kernels.chunked_attention(
        q, keys["k"], keys["v"],
        score_fn=lambda qc, kc, qp, kp: taylor_log_weights(kernels.dot_product_logits(qc, kc,
                                                                                      scale)),
        q_pos=q_pos, k_pos=k_pos, key_valid=key_valid, causal=causal, q_chunk=o.q_chunk,
        k_chunk=o.k_chunk)
  out = out.astype(v.dtype)
  y = common.dense(params["wo"], out.reshape(b, l, -1), o.compute_dtype)
  return common.with_cache(y, cache)


class StandardShapedLayer(StandardShaped):
  """A control with ``standard``'s parameters (``wq, wk, wv, wo``) and KV cache."""

  is_control = True


@register("taylor_softmax")
class TaylorSoftmaxAttention(StandardShapedLayer):
  """Softmax replaced by ``1 + s + s^2/2`` (paper: Approximate; models/attention/README.md
  §9.2). Same parameters, projections, masking and cache as ``standard``."""

  Options = TaylorSoftmaxOptions
  apply = staticmethod(taylor_softmax_apply)


# ----------------------------------------------------------------------------------------------
# token_score_pool (paper: Non-approximate).
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenScorePoolOptions(StandardOptions):
  """Options of ``token_score_pool``: ``standard``'s (GQA included), kernels ``xla``/``chunked``.

  ``rope`` is accepted and has no effect: rotating q_j and k_j by the same angle leaves
  ``q_j.k_j`` unchanged.
  """

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")


def token_scores(q, k):
  """Float32 ``[B, L, H]`` scores ``s_j^h = q_j^h . k_j^{g(h)} / sqrt(dh)`` (own q and k only)."""
  b, l, h, dh = q.shape
  kg = jnp.repeat(k, h // k.shape[2], axis=2)
  acc = kernels.acc_dtype(q, k)
  return jnp.einsum("blhd,blhd->blh", q, kg, preferred_element_type=acc) / math.sqrt(dh)


def _broadcast_scores(s_BxLkxH, lq: int):
  """Key scores ``[B, Lk, H]`` as logits ``[B, H, Lq, Lk]`` (the same for every query)."""
  s = jnp.moveaxis(s_BxLkxH, 2, 1)[:, :, None, :]
  return jnp.broadcast_to(s, (s.shape[0], s.shape[1], lq, s.shape[3]))


def token_score_pool_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                           mask=None, positions=None, cache=None, symbols=None):
  """``y_t = (sum_j softmax_j(s) v_j) W_o`` over admissible keys j, s from each token itself.

  Args: as :func:`~attnlab.models.attention.standard.standard_apply` (``symbols`` unused);
  ``options`` is :class:`TokenScorePoolOptions`. The pooling runs on the attention kernels
  with logits ``s_ij = s_j`` (no query enters them): that gives the masking, causal order,
  padding, chunking and decoding of every other variant. Decoding caches the scores (float32)
  and values.
  """
  del symbols
  o = common.options_or_default(options, TokenScorePoolOptions, x)
  b, l, _ = x.shape
  q, k, v, positions = project_from_options(params, x, o, num_heads=num_heads,
                                            num_kv_heads=o.num_kv_heads or num_heads,
                                            positions=positions, cache=cache)
  s = token_scores(q, k)
  keys, key_valid, q_pos, k_pos, cache = common.cached_keys(
      cache, {"s": s, "v": v}, mask, None if cache is None else positions)
  lk = keys["s"].shape[1]
  q_pos = kernels.default_positions(b, l) if q_pos is None else q_pos
  k_pos = kernels.default_positions(b, lk) if k_pos is None else k_pos
  if o.impl == "xla":
    p = kernels.masked_softmax(_broadcast_scores(keys["s"], l),
                               kernels.admissible(q_pos, k_pos, key_valid, causal))
    out = kernels.weighted_values(p, keys["v"])
  else:
    out, _ = kernels.chunked_attention(
        jnp.zeros((b, l, 1), s.dtype), keys["s"], keys["v"],
        score_fn=lambda qc, sc, qp, kp: _broadcast_scores(sc, qc.shape[1]),
        q_pos=q_pos, k_pos=k_pos, key_valid=key_valid, causal=causal, q_chunk=o.q_chunk,
        k_chunk=o.k_chunk)
  out = out.astype(v.dtype)
  y = common.dense(params["wo"], out.reshape(b, l, -1), o.compute_dtype)
  return common.with_cache(y, cache)


@register("token_score_pool")
class TokenScorePoolAttention(StandardShapedLayer):
  """Per-token scores pooled by a (causal cumulative) softmax (paper: Non-approximate;
  models/attention/README.md §9.3). ``standard``'s parameters; no pairwise q.k product."""

  Options = TokenScorePoolOptions
  apply = staticmethod(token_score_pool_apply)

  def cache_arrays(self) -> dict[str, tuple]:
    """Scores ``[H]`` and values ``[Hkv, dh]`` per token."""
    return {"s": (self.num_heads,), "v": (self.num_kv_heads, self.head_dim)}

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> dict:
    """:meth:`cache_arrays` with the values in the compute dtype and the scores in float32."""
    dtype = dtype or self.options.compute_dtype
    cache = common.init_kv_cache(batch_size, max_length,
                                 {"v": (self.num_kv_heads, self.head_dim)}, dtype)
    cache["s"] = jnp.zeros((batch_size, max_length, self.num_heads),
                           jnp.promote_types(dtype, jnp.float32))
    return cache
