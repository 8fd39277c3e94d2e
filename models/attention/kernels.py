"""Attention kernels: pure JAX functions, no Flax.

Two kernels compute softmax attention of any score function:

* :func:`dense_attention_weights` / the ``xla`` path materialises the ``[B, H, Lq, Lk]``
  float32 logits (the reference every other path is tested against);
* :func:`chunked_attention` is the Rabe-Staats online-softmax kernel (arXiv 2112.05682) with
  pluggable score, value-weight and pair-value functions, O(L) memory.

:func:`dot_product_attention` is the standard math (softmax(q k^T / sqrt(dh)) v) on any of the
three implementations ``xla``, ``chunked`` and ``cudnn``.

Shapes: q ``[B, Lq, H, dh]``, k ``[B, Lk, Hkv, dh]``, v ``[B, Lk, Hkv, dv]``; query head ``h``
reads key/value head ``h // (H // Hkv)`` (grouped-query attention). Masks follow
models/attention/README.md §0.3: admissible pairs are
``key_valid[b, j] and (k_pos[j] <= q_pos[i] if causal)``; non-admissible logits become ``NEG``
immediately before the softmax, and rows with no admissible key return zeros.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

NEG = -1e30
"""Finite masking constant for float32 logits (never -inf: see models/attention/README.md §0.3)."""

IMPLS = ("xla", "chunked", "cudnn")

# Default chunk sizes of the chunked kernel. Smaller than the paper's TPU values (1024/4096):
# with 512/1024 the compiled temporary memory at L=8192 is > 16x below XLA's
# (models/attention/README.md §6.4).
DEFAULT_Q_CHUNK = 512
DEFAULT_K_CHUNK = 1024


def acc_dtype(*xs):
  """Accumulation dtype: float32, or float64 when an input is float64 (reference tests)."""
  return jnp.result_type(jnp.float32, *[x.dtype for x in xs])


def default_positions(batch: int, length: int, offset: Any = 0) -> jax.Array:
  """``[B, L]`` int32 positions ``offset + arange(L)``."""
  pos = jnp.arange(length, dtype=jnp.int32)[None, :] + jnp.asarray(offset, jnp.int32)
  return jnp.broadcast_to(pos, (batch, length))


def admissible(q_pos, k_pos, key_valid, causal: bool) -> jax.Array:
  """Boolean ``[B, 1, Lq, Lk]`` mask of admissible (query, key) pairs.

  Args:
    q_pos: int ``[B, Lq]`` query positions.
    k_pos: int ``[B, Lk]`` key positions.
    key_valid: optional bool ``[B, Lk]`` (True = real key).
    causal: if True, key position must be <= query position.
  """
  b, lq = q_pos.shape
  lk = k_pos.shape[1]
  adm = jnp.ones((b, 1, lq, lk), dtype=bool)
  if key_valid is not None:
    adm = adm & key_valid[:, None, None, :]
  if causal:
    adm = adm & (k_pos[:, None, None, :] <= q_pos[:, None, :, None])
  return adm


def masked_softmax(logits, adm) -> jax.Array:
  """Float32 softmax over the last axis with NEG masking; rows without admissible keys give 0."""
  logits = jnp.where(adm, logits.astype(acc_dtype(logits)), NEG)
  probs = jax.nn.softmax(logits, axis=-1)
  return jnp.where(jnp.any(adm, axis=-1, keepdims=True), probs, 0.0)


def _group_heads(x, num_kv_heads):
  """``[B, L, H, d]`` -> ``[B, L, Hkv, G, d]`` (query head h reads kv head h // G)."""
  b, l, h, d = x.shape
  if h % num_kv_heads:
    raise ValueError(f"num_heads={h} must be a multiple of num_kv_heads={num_kv_heads}")
  return x.reshape(b, l, num_kv_heads, h // num_kv_heads, d)


def dot_product_logits(q, k, scale) -> jax.Array:
  """Float32 logits ``[B, H, Lq, Lk]`` = q.k * scale with grouped-query head mapping."""
  if q.shape[2] == k.shape[2]:  # one query head per kv head: plain 4-D einsum (faster on CPU)
    return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc_dtype(q, k)) * scale
  qg = _group_heads(q, k.shape[2])
  s = jnp.einsum("bqkgd,bckd->bkgqc", qg, k, preferred_element_type=acc_dtype(q, k))
  b, hkv, g, lq, lk = s.shape
  return s.reshape(b, hkv * g, lq, lk) * scale


def weighted_values(p, v) -> jax.Array:
  """``sum_j p[b,h,i,j] v[b,j,h//G,:]`` -> ``[B, Lq, H, dv]`` with float32 accumulation."""
  b, h, lq, lk = p.shape
  hkv = v.shape[2]
  if h == hkv:
    return jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v,
                      preferred_element_type=acc_dtype(v))
  pg = p.reshape(b, hkv, h // hkv, lq, lk).astype(v.dtype)
  o = jnp.einsum("bkgqc,bckd->bqkgd", pg, v, preferred_element_type=acc_dtype(v))
  return o.reshape(b, lq, h, v.shape[-1])


def _check_impl(impl: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f"attention impl={impl!r} is not one of {IMPLS}")


def check_chunks(q_chunk: int, k_chunk: int) -> None:
  """Raise ValueError unless both chunk sizes are positive integers."""
  for name, value in (("q_chunk", q_chunk), ("k_chunk", k_chunk)):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")


# ----------------------------------------------------------------------------------------------
# The chunked (online-softmax) kernel.
# ----------------------------------------------------------------------------------------------


def _pad_axis1(x, target, value=0):
  pad = target - x.shape[1]
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, pad)
  return jnp.pad(x, widths, constant_values=value)


def _to_chunks(x, n, c):
  """``[B, n*c, ...]`` -> ``[n, B, c, ...]``."""
  return jnp.moveaxis(x.reshape(x.shape[0], n, c, *x.shape[2:]), 1, 0)


def _tiles(q_side, k_side, q_pos, k_pos, key_valid, q_chunk, k_chunk):
  """The chunked kernels' tiling: pad and split the query side into ``nq`` chunks of ``cq`` and
  the key side into ``nk`` of ``ck`` (``[n, B, c, ...]``); padded keys are invalid.

  Returns ``(cq, nq, qs, qp), (ck, nk, ks, kp, kv)``.
  """
  check_chunks(q_chunk, k_chunk)
  b, lq = q_pos.shape
  lk = k_pos.shape[1]
  cq, ck = min(q_chunk, lq), min(k_chunk, lk)
  nq, nk = -(-lq // cq), -(-lk // ck)
  if key_valid is None:
    key_valid = jnp.ones((b, lk), dtype=bool)
  qs = jax.tree_util.tree_map(lambda x: _to_chunks(_pad_axis1(x, nq * cq), nq, cq), q_side)
  qp = _to_chunks(_pad_axis1(q_pos, nq * cq), nq, cq)
  ks = jax.tree_util.tree_map(lambda x: _to_chunks(_pad_axis1(x, nk * ck), nk, ck), k_side)
  kp = _to_chunks(_pad_axis1(k_pos, nk * ck), nk, ck)
  kv = _to_chunks(_pad_axis1(key_valid, nk * ck, False), nk, ck)
  return (cq, nq, qs, qp), (ck, nk, ks, kp, kv)


def _step_checkpoint(step, num_steps: int):
  """A key step under ``jax.checkpoint`` when the scan has more than one step.

  Each query chunk is itself checkpointed, so its backward pass first recomputes the chunk's
  forward scan; with checkpointed steps the scan's backward then recomputes every step's forward
  once more (three forward evaluations of each tile in all). With a single key step (``Lk <=
  k_chunk``) the step's residuals are one tile either way, so the inner checkpoint only costs
  that third evaluation and is left out (same values, same peak memory).
  """
  return jax.checkpoint(step, prevent_cse=False) if num_steps > 1 else step


def chunked_logsumexp(
    energy_fn: Callable[..., jax.Array],
    q_side: Any,
    k_side: Any,
    *,
    q_pos: jax.Array,
    k_pos: jax.Array,
    key_valid: jax.Array | None = None,
    causal: bool = False,
    q_chunk: int = DEFAULT_Q_CHUNK,
    k_chunk: int = DEFAULT_K_CHUNK,
    dtype=jnp.float32,
) -> jax.Array:
  """``logsumexp_j`` over admissible keys of an energy, tiled as :func:`chunked_attention`.

  O(L) memory: a running max and sum per query chunk, scanned over key chunks (each step under
  ``jax.checkpoint``; tiles with no admissible pair are skipped).

  Args:
    energy_fn: ``(qc, kc, qpos, kpos) -> [B, H, Cq, Ck]`` unmasked energies.
    q_side, k_side: pytrees of ``[B, Lq, ...]`` / ``[B, Lk, ...]`` arrays (sliced per chunk).
    q_pos, k_pos: int ``[B, Lq]`` / ``[B, Lk]`` positions.
    key_valid: optional bool ``[B, Lk]``.
    causal: causal masking by position.
    q_chunk, k_chunk: chunk sizes (clipped to the lengths).
    dtype: accumulation dtype.

  Returns:
    ``[B, Lq, H]``; rows with no admissible key give 0.
  """
  b, lq = q_pos.shape
  (cq, nq, qs, qp), (_, nk, ks, kp, kv) = _tiles(q_side, k_side, q_pos, k_pos, key_valid,
                                                 q_chunk, k_chunk)
  q0 = jax.tree_util.tree_map(lambda x: x[0], qs)
  k0 = jax.tree_util.tree_map(lambda x: x[0], ks)
  num_heads = jax.eval_shape(energy_fn, q0, k0, qp[0], kp[0]).shape[1]

  def key_step(qc, qpc, carry, kargs):
    kc, kpc, kvc = kargs
    adm = admissible(qpc, kpc, kvc, causal)

    def update(carry):
      mx, total = carry
      e = jnp.where(adm, energy_fn(qc, kc, qpc, kpc).astype(dtype), NEG)
      mx_new = jnp.maximum(mx, jax.lax.stop_gradient(jnp.max(e, axis=-1)))
      p = jnp.where(adm, jnp.exp(e - mx_new[..., None]), 0.0)
      return mx_new, total * jnp.exp(mx - mx_new) + jnp.sum(p, axis=-1)

    return jax.lax.cond(jnp.any(adm), update, lambda c: c, carry), None

  def query_chunk(qargs):
    qc, qpc = qargs
    init = (jnp.full((b, num_heads, cq), NEG, dtype), jnp.zeros((b, num_heads, cq), dtype))
    step = _step_checkpoint(functools.partial(key_step, qc, qpc), nk)
    (mx, total), _ = jax.lax.scan(step, init, (ks, kp, kv))
    ok = total > 0
    return jnp.where(ok, mx + jnp.log(jnp.where(ok, total, 1.0)), 0.0)

  lse = jax.lax.map(jax.checkpoint(query_chunk, prevent_cse=False), (qs, qp))  # [nq, B, H, Cq]
  lse = jnp.moveaxis(lse, 0, 2).reshape(b, num_heads, nq * cq)[:, :, :lq]
  return jnp.moveaxis(lse, 1, 2)


def chunked_attention(
    q_side: Any,
    k_side: Any,
    v: jax.Array,
    *,
    score_fn: Callable[..., jax.Array],
    value_weight_fn: Callable[..., jax.Array] | None = None,
    pair_value_fn: Callable[..., jax.Array] | None = None,
    q_pos: jax.Array,
    k_pos: jax.Array,
    key_valid: jax.Array | None = None,
    causal: bool = False,
    q_chunk: int = DEFAULT_Q_CHUNK,
    k_chunk: int = DEFAULT_K_CHUNK,
):
  """Online-softmax attention in O(L) memory with pluggable score functions.

  Per query chunk, scans over key chunks carrying the running max ``m``, denominator ``den``,
  numerator ``num`` (and ``rnum`` for pair values) in float32; every scan step is under
  ``jax.checkpoint`` so the backward pass recomputes tiles instead of storing them, and so is
  each query chunk (the backward pass holds one chunk's key-step carries at a time). Lengths need
  not divide the chunk sizes (inputs are padded and the padding masked). Tiles with no
  admissible pair (e.g. above the causal diagonal) are skipped with ``lax.cond``.

  Args:
    q_side: pytree of ``[B, Lq, ...]`` arrays, sliced per query chunk for ``score_fn``.
    k_side: pytree of ``[B, Lk, ...]`` arrays, sliced per key chunk.
    v: ``[B, Lk, Hkv, dv]`` values.
    score_fn: ``(qc, kc, qpos, kpos) -> f32 [B, H, Cq, Ck]`` unmasked logits.
    value_weight_fn: optional ``(qc, kc, qpos, kpos) -> [B, H, Cq, Ck]`` factor applied to the
      numerator only (AFA's decay).
    pair_value_fn: optional ``(qc, kc) -> [B, Cq, Ck, R]`` pairwise values (relations).
    q_pos, k_pos: int ``[B, Lq]`` / ``[B, Lk]`` positions (causal masking, position terms).
    key_valid: optional bool ``[B, Lk]``.
    causal: causal masking by position.
    q_chunk, k_chunk: chunk sizes (clipped to the lengths).

  Returns:
    ``(out [B, Lq, H, dv] float32, rout [B, Lq, H, R] float32 or None)``.
  """
  q_leaves = jax.tree_util.tree_leaves(q_side)
  b, lq = q_leaves[0].shape[:2]
  (cq, nq, qs, qp), (ck, nk, ks, kp, kv) = _tiles(q_side, k_side, q_pos, k_pos, key_valid,
                                                  q_chunk, k_chunk)
  vs = _to_chunks(_pad_axis1(v, nk * ck), nk, ck)

  # Shapes of one tile's state, from an abstract evaluation of the user's functions.
  q0 = jax.tree_util.tree_map(lambda x: x[0], qs)
  k0 = jax.tree_util.tree_map(lambda x: x[0], ks)
  s_shape = jax.eval_shape(score_fn, q0, k0, qp[0], kp[0]).shape
  num_heads = s_shape[1]
  dv = v.shape[-1]
  r_dim = jax.eval_shape(pair_value_fn, q0, k0).shape[-1] if pair_value_fn else 0
  acc = acc_dtype(v, *q_leaves)

  def key_step(qc, qpc, carry, kargs):
    kc, vc, kpc, kvc = kargs
    adm = admissible(qpc, kpc, kvc, causal)  # [B, 1, Cq, Ck]

    def update(carry):
      m, den, num, rnum = carry
      s = jnp.where(adm, score_fn(qc, kc, qpc, kpc).astype(acc), NEG)
      m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(s, axis=-1)))
      corr = jnp.exp(m - m_new)
      p = jnp.where(adm, jnp.exp(s - m_new[..., None]), 0.0)
      den = corr * den + jnp.sum(p, axis=-1)
      pw = p if value_weight_fn is None else p * value_weight_fn(qc, kc, qpc, kpc)
      num = corr[..., None] * num + jnp.moveaxis(weighted_values(pw, vc), 2, 1)
      if pair_value_fn is not None:
        r = pair_value_fn(qc, kc).astype(acc)
        rnum = corr[..., None] * rnum + jnp.einsum("bhqk,bqkr->bhqr", p, r)
      return m_new, den, num, rnum

    return jax.lax.cond(jnp.any(adm), update, lambda c: c, carry), None

  def query_chunk(qargs):
    qc, qpc = qargs
    init = (
        jnp.full((b, num_heads, cq), NEG, acc),
        jnp.zeros((b, num_heads, cq), acc),
        jnp.zeros((b, num_heads, cq, dv), acc),
        jnp.zeros((b, num_heads, cq, r_dim), acc),
    )
    step = _step_checkpoint(functools.partial(key_step, qc, qpc), nk)
    (_, den, num, rnum), _ = jax.lax.scan(step, init, (ks, vs, kp, kv))
    den = jnp.where(den > 0, den, 1.0)[..., None]
    return jnp.moveaxis(num / den, 1, 2), jnp.moveaxis(rnum / den, 1, 2)

  # The checkpoint keeps one query chunk's key-step residuals alive at a time in the backward
  # pass (without it every chunk's are: O(L^2 / k_chunk) memory).
  out, rout = jax.lax.map(jax.checkpoint(query_chunk, prevent_cse=False),
                          (qs, qp))  # [nq, B, Cq, H, *]
  out = jnp.moveaxis(out, 0, 1).reshape(b, nq * cq, num_heads, dv)[:, :lq]
  if pair_value_fn is None:
    return out, None
  rout = jnp.moveaxis(rout, 0, 1).reshape(b, nq * cq, num_heads, r_dim)[:, :lq]
  return out, rout


# ----------------------------------------------------------------------------------------------
# Standard softmax(q k^T / sqrt(dh)) v on the three implementations.
# ----------------------------------------------------------------------------------------------


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    causal: bool = False,
    impl: str = "xla",
    q_positions: jax.Array | None = None,
    k_positions: jax.Array | None = None,
    scale: float | None = None,
    q_chunk: int = DEFAULT_Q_CHUNK,
    k_chunk: int = DEFAULT_K_CHUNK,
) -> jax.Array:
  """Multi-head softmax attention, the math of ``standard`` and ``memory_efficient``.

  Args:
    q: ``[B, Lq, H, dh]`` queries.
    k: ``[B, Lk, Hkv, dh]`` keys (H must be a multiple of Hkv).
    v: ``[B, Lk, Hkv, dv]`` values.
    mask: optional bool key mask ``[B, Lk]`` (True = real token).
    causal: query i attends to keys with position <= its own.
    impl: ``"xla"`` (einsums, materialises the logits), ``"chunked"`` (Rabe-Staats kernel,
      O(L) memory) or ``"cudnn"`` (``jax.nn.dot_product_attention`` on GPU; bfloat16/float16,
      right-padded masks, default positions only).
    q_positions, k_positions: optional int ``[B, L]`` positions used by the causal mask
      (default ``arange``); decoding passes offsets here.
    scale: logit scale, default ``1/sqrt(dh)``.
    q_chunk, k_chunk: chunk sizes of the chunked kernel.

  Returns:
    ``[B, Lq, H, dv]`` in v's dtype. Rows with no admissible key are zeros.
  """
  _check_impl(impl)
  b, lq, h, dh = q.shape
  lk = k.shape[1]
  scale = 1.0 / math.sqrt(dh) if scale is None else scale
  if impl == "cudnn":
    return _cudnn_attention(q, k, v, mask=mask, causal=causal, scale=scale,
                            custom_positions=q_positions is not None or k_positions is not None)
  q_pos = default_positions(b, lq) if q_positions is None else q_positions
  k_pos = default_positions(b, lk) if k_positions is None else k_positions
  if impl == "xla":
    logits = dot_product_logits(q, k, scale)
    if mask is None and q_positions is None and k_positions is None:
      p = _default_positions_softmax(logits, causal)
    else:
      p = masked_softmax(logits, admissible(q_pos, k_pos, mask, causal))
    return weighted_values(p, v).astype(v.dtype)
  out, _ = chunked_attention(
      q, k, v,
      score_fn=lambda qc, kc, qp, kp: dot_product_logits(qc, kc, scale),
      q_pos=q_pos, k_pos=k_pos, key_valid=mask, causal=causal,
      q_chunk=q_chunk, k_chunk=k_chunk)
  return out.astype(v.dtype)


def _default_positions_softmax(logits, causal: bool) -> jax.Array:
  """:func:`masked_softmax` for default positions and no key mask, without building the
  ``[B, 1, Lq, Lk]`` position mask: a static ``tril`` (key j <= query i), and every row has an
  admissible key (key 0), so no empty-row fix-up."""
  logits = logits.astype(acc_dtype(logits))
  if causal:
    lq, lk = logits.shape[-2:]
    logits = jnp.where(jnp.tril(jnp.ones((lq, lk), bool)), logits, NEG)
  return jax.nn.softmax(logits, axis=-1)


def _cudnn_attention(q, k, v, *, mask, causal, scale, custom_positions):
  """cuDNN fused attention; raises ValueError (before compiling) where it cannot run."""
  if jax.default_backend() != "gpu":
    raise ValueError(f"attention impl='cudnn' needs a GPU; this backend is "
                     f"{jax.default_backend()!r}. Use impl='xla' or 'chunked'.")
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(f"attention impl='cudnn' needs bfloat16 or float16 inputs, got {q.dtype}; "
                     "set the compute dtype to bfloat16 or use impl='xla'.")
  if custom_positions:
    raise ValueError("attention impl='cudnn' supports default positions only (no decoding "
                     "offsets or packed segments); use impl='xla' or 'chunked'.")
  lengths = None if mask is None else jnp.sum(mask, axis=-1).astype(jnp.int32)
  # cuDNN reads the key mask as lengths: correct for right padding (a prefix of real tokens).
  out = jax.nn.dot_product_attention(
      q, k, v, scale=scale, is_causal=causal, key_value_seq_lengths=lengths,
      implementation="cudnn")
  if lengths is not None:
    out = jnp.where((lengths > 0)[:, None, None, None], out, 0)
  return out
