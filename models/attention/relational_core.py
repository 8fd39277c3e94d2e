"""The relational heads' math on projected arrays (DAT, arXiv 2405.16727): projections,
relations between receiver and sender, and the dual-attention core used by ``relational``.

See :mod:`attnlab.models.attention.relational` for the layer, its parameters and the kernels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from attnlab.models.attention import common, kernels, symbols as symbols_lib

REL_ACTIVATIONS = {
    "identity": lambda r: r,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": lambda r: jax.nn.gelu(r, approximate=True),
    "silu": jax.nn.silu,
}
"""Relation activations (point-wise; the reference's ``softmax`` over keys would read masked and
future keys, so it is not offered)."""

REL_IMPLS = ("pairwise", "rewrite")


def project_relational(params: dict, x, symbols, *, num_heads: int, positions, rope=False,
                       rope_theta=10000.0, dtype=None):
  """Projections of the relational heads.

  Args:
    params: ``relational_attention`` parameters (module docstring).
    x: ``[B, L, d]``.
    symbols: ``[B, L, d]`` per-token symbols or a ``[2K+1, d]`` position-relative table.
    num_heads: H_ra.
    positions: int ``[B, L]`` (RoPE on Qa, Ka only).

  Returns:
    ``qa [B,L,H,dk]``, ``ka [B,L,Hkv,dk]``, ``qr``, ``kr [B,L,R,dr]``, ``sv`` ``[B,L,Hkv,dh]``
    (or ``[2K+1,Hkv,dh]`` for a table).
  """
  dtype = dtype or x.dtype
  b, l, _ = x.shape
  h, dh, r = params["wr"].shape
  dk = params["wq_attn"]["kernel"].shape[1] // h
  hkv = params["wk_attn"]["kernel"].shape[1] // dk
  dr = params["wq_rel"]["kernel"].shape[1] // r
  qa = common.dense(params["wq_attn"], x, dtype).reshape(b, l, h, dk)
  ka = common.dense(params["wk_attn"], x, dtype).reshape(b, l, hkv, dk)
  if rope:
    qa = common.apply_rope(qa, positions, rope_theta)
    ka = common.apply_rope(ka, positions, rope_theta)
  qr = common.dense(params["wq_rel"], x, dtype).reshape(b, l, r, dr)
  kr = qr if "wk_rel" not in params else common.dense(params["wk_rel"], x, dtype).reshape(
      b, l, r, dr)
  sv = common.dense(params["wv"], symbols, dtype)
  sv = sv.reshape(*symbols.shape[:-1], hkv, dh)
  return qa, ka, qr, kr, sv


def pair_values(qr, kr, q_pos, k_pos, *, rel_activation="identity", max_rel_pos=None):
  """Relations ``act(<Qr_i, Kr_j> / sqrt(dr))`` ``[B, Lq, Lk, R]`` in float32, followed (when
  ``max_rel_pos`` is given) by the one-hot offset bucket ``[B, Lq, Lk, 2K+1]``."""
  acc = kernels.acc_dtype(qr, kr)
  rel = jnp.einsum("birc,bjrc->bijr", qr, kr, preferred_element_type=acc)
  rel = REL_ACTIVATIONS[rel_activation](rel * (1.0 / math.sqrt(qr.shape[-1])))
  if max_rel_pos is None:
    return rel
  buckets = symbols_lib.relative_buckets(q_pos, k_pos, max_rel_pos)
  return jnp.concatenate([rel, jax.nn.one_hot(buckets, 2 * max_rel_pos + 1, dtype=acc)], -1)


def _per_head(table, num_heads):
  """``[..., Hkv, dh]`` -> ``[..., H, dh]`` (query head h reads kv head h // G)."""
  return jnp.repeat(table, num_heads // table.shape[-2], axis=-2)


def relational_core(qa, ka, qr, kr, sv, wr, *, q_pos, k_pos, key_valid=None, causal=False,
                    rel_activation="identity", impl="xla", rel_impl="pairwise",
                    q_chunk=kernels.DEFAULT_Q_CHUNK, k_chunk=kernels.DEFAULT_K_CHUNK):
  """Relational attention on projected arrays (models/attention/README.md §3.1, steps 2-5).

  Args:
    qa: ``[B, Lq, H, dk]`` attention queries; ka ``[B, Lk, Hkv, dk]`` keys.
    qr: ``[B, Lq, R, dr]`` relation queries; kr ``[B, Lk, R, dr]`` relation keys.
    sv: projected symbols ``[B, Lk, Hkv, dh]``, or ``[2K+1, Hkv, dh]`` for position-relative
      symbols (row k = offset k - K between key and query positions).
    wr: ``[H, dh, R]``.
    q_pos, k_pos: int ``[B, Lq]``, ``[B, Lk]`` positions (causal mask, relative offsets).
    key_valid: optional bool ``[B, Lk]``.
    causal: causal masking (on alpha only; relations and symbols enter only through alpha).
    rel_activation: a key of :data:`REL_ACTIVATIONS`.
    impl: ``xla`` or ``chunked``.
    rel_impl: ``pairwise`` or ``rewrite`` (identity activation, per-token symbols).

  Returns:
    ``A [B, Lq, H, dh]`` float32; rows without admissible keys are zeros.
  """
  h, dh, r = wr.shape
  scale = 1.0 / math.sqrt(dh)
  relative = sv.ndim == 3
  max_rel_pos = (sv.shape[0] - 1) // 2 if relative else None
  acc = kernels.acc_dtype(qa, ka, qr, kr)
  kw = dict(q_chunk=q_chunk, k_chunk=k_chunk)
  if rel_impl == "rewrite":
    if rel_activation != "identity" or relative:
      raise ValueError("rel_impl='rewrite' needs identity relations and per-token symbols")
    b, lk, hkv, _ = ka.shape
    dr = qr.shape[-1]
    kr_all = jnp.broadcast_to(kr.reshape(b, lk, 1, r * dr), (b, lk, hkv, r * dr))
    values = jnp.concatenate([sv, kr_all.astype(sv.dtype)], axis=-1)
    o = kernels.dot_product_attention(qa, ka, values, mask=key_valid, causal=causal, impl=impl,
                                      q_positions=q_pos, k_positions=k_pos, scale=scale, **kw)
    sym = o[..., :dh].astype(acc)
    akr = o[..., dh:].reshape(*o.shape[:3], r, dr)
    att_rel = jnp.einsum("bihrc,birc->bihr", akr, qr,
                         preferred_element_type=acc) * (1.0 / math.sqrt(dr))
  else:
    pv = lambda qr_, kr_, qp, kp: pair_values(  # noqa: E731
        qr_, kr_, qp, kp, rel_activation=rel_activation, max_rel_pos=max_rel_pos)
    if impl == "xla":
      adm = kernels.admissible(q_pos, k_pos, key_valid, causal)
      alpha = kernels.masked_softmax(kernels.dot_product_logits(qa, ka, scale), adm)
      att_pair = jnp.einsum("bhij,bijr->bihr", alpha, pv(qr, kr, q_pos, k_pos))
      sym = None if relative else kernels.weighted_values(alpha, sv).astype(acc)
    elif impl == "chunked":
      b, lk, hkv, _ = ka.shape
      v = jnp.zeros((b, lk, hkv, 0), qa.dtype) if relative else sv
      sym, att_pair = kernels.chunked_attention(
          (qa, qr, q_pos), (ka, kr, k_pos), v,
          score_fn=lambda qc, kc, qp, kp: kernels.dot_product_logits(qc[0], kc[0], scale),
          pair_value_fn=lambda qc, kc: pv(qc[1], kc[1], qc[2], kc[2]),
          q_pos=q_pos, k_pos=k_pos, key_valid=key_valid, causal=causal, **kw)
    else:
      raise ValueError(f"relational attention impl={impl!r} is not one of ('xla', 'chunked')")
    att_rel = att_pair[..., :r]
    if relative:  # sum alpha per offset bucket, then the projected table once per bucket
      sym = jnp.einsum("bihk,khd->bihd", att_pair[..., r:], _per_head(sv, h).astype(acc))
  return sym + jnp.einsum("bihr,hdr->bihd", att_rel, wr.astype(acc))
