"""``uniform_broadcast``: ``standard`` attention whose output is context-broadcast (CB).

``y = CB(MHA(x))`` with ``CB(X)_t = (X_t + c_t) / 2`` (arXiv 2210.08457;
models/attention/README.md §5): ``c`` is the masked mean of the attention outputs, or their
causal prefix mean
``c_t = sum_{s<=t} m_s X_s / max(1, sum_{s<=t} m_s)`` when the layer is causal (float32 sums,
float64 for float64 inputs).
CB_S (``cb_scaled=True``) uses ``(X_t + s * c_t) / 2`` with a learnable ``cb_scale [d]``
initialised to 1.

Parameters: ``standard``'s (``wq, wk, wv, wo``; a ``standard`` checkpoint loads into it) plus
``cb_scale`` with CB_S. Decoding caches ``standard``'s keys and values and the running
``cb_sum [B, d]`` / ``cb_count [B]`` of the attention outputs seen so far.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import broadcast, common
from attnlab.models.attention.registry import register
from attnlab.models.attention.standard import (StandardAttention, StandardOptions,
                                               standard_apply)


@dataclasses.dataclass(frozen=True)
class UniformBroadcastOptions(StandardOptions):
  """Options of ``uniform_broadcast``: ``standard``'s plus the CB form.

  Attributes:
    cb_scaled: CB_S, a learnable per-feature scale ``cb_scale [d]`` (init 1) on the mean.
    softmax_heads: False gives the uniform map alone, ``y_t = c_t(W_o W_v x)`` (the causal or
      masked mean of the value/output projections, no query-key scores): the input-independent
      control of experiments/lm_ablation/README.md §3.2. ``wq`` / ``wk`` stay in the tree
      (unused), so the parameter layout is ``standard``'s.
  """

  cb_scaled: bool = False
  softmax_heads: bool = True


def _mean_step(o, mask, causal, state):
  """``(c, new_state)``: the float32 context mean of ``o`` (``[B, T, d]``, or ``[B, 1, d]`` for a
  bidirectional decoding step), continuing the decoding ``state`` when one is given."""
  if state is None:
    return broadcast.context_mean(o, mask, causal), None
  new_state = broadcast.advance_prefix(state, o, mask)
  if causal:
    return broadcast.context_mean(o, mask, True, prefix=state), new_state
  return (new_state[0] / jnp.maximum(new_state[1], 1.0)[:, None])[:, None, :], new_state


def broadcast_step(o, *, mask=None, causal=False, scale=None, state=None):
  """CB of the attention output ``o [B, T, d]``, optionally continuing a decoding state.

  Args:
    o: ``[B, T, d]`` attention outputs of the T new tokens.
    mask: optional bool ``[B, T]`` for those tokens.
    causal: prefix means (else the mean of all tokens so far, broadcast to every position).
    scale: optional ``[d]`` (CB_S).
    state: optional ``(sum [B, d], count [B])`` of earlier tokens (decoding).

  Returns:
    ``CB(o)`` and the new state (None when ``state`` is None).
  """
  c, new_state = _mean_step(o, mask, causal, state)
  if scale is not None:
    c = c * scale.astype(c.dtype)
  return (0.5 * (o.astype(c.dtype) + c)).astype(o.dtype), new_state


def uniform_only_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                       mask=None, cache=None):
  """Pure uniform attention ``y_t = s * c_t(W_o W_v x)`` (``softmax_heads=False``).

  Uniform weights are the same for every head, so the mean is taken after the output map (a
  mean of affine maps is the affine map of the mean). With a cache, the running
  ``cb_sum`` / ``cb_count`` of the projected tokens is the whole decoding state (the cache's
  values are written so its index advances like ``standard``'s).
  """
  o = common.options_or_default(options, UniformBroadcastOptions, x)
  b, l, d = x.shape
  num_kv_heads = o.num_kv_heads or num_heads
  head_dim = o.head_dim or d // num_heads
  dtype = o.compute_dtype
  v = common.dense(params["wv"], x, dtype).reshape(b, l, num_kv_heads, head_dim)
  v_all = jnp.repeat(v, num_heads // num_kv_heads, axis=2).reshape(b, l, num_heads * head_dim)
  out = common.dense(params["wo"], v_all, dtype)
  scale = params.get("cb_scale")
  c, state = _mean_step(out, mask, causal,
                        None if cache is None else (cache["cb_sum"], cache["cb_count"]))
  y = c if scale is None else c * scale.astype(c.dtype)
  y = jnp.broadcast_to(y, out.shape).astype(out.dtype)
  *_, cache = common.cached_keys(cache, {"v": v}, mask, None)
  if cache is not None:
    cache = {**cache, "cb_sum": state[0], "cb_count": state[1]}
  return common.with_cache(y, cache)


def uniform_broadcast_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                            mask=None, positions=None, cache=None, symbols=None):
  """Pure ``CB(MHA(x))`` on ``params`` (``standard``'s plus optional ``cb_scale``).

  Args:
    params: ``{'wq', 'wk', 'wv', 'wo'}`` dense dicts, optionally ``'cb_scale' [d]`` (CB_S).
    x: ``[B, L, d]``.
    num_heads: query heads.
    options: :class:`UniformBroadcastOptions` (None: the defaults, computing in x's dtype);
      ``softmax_heads=False`` gives the uniform map alone (:func:`uniform_only_apply`).
    causal: causal attention and causal (prefix-mean) broadcasting.
    mask: optional bool ``[B, L]`` key mask; masked tokens are left out of the mean too.
    positions: optional int ``[B, L]``.
    cache: optional cache from :meth:`UniformBroadcastAttention.init_cache`; then returns
      ``(y, new_cache)``.
    symbols: unused (part of the shared signature).

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
  """
  o = common.options_or_default(options, UniformBroadcastOptions, x)
  if not o.softmax_heads:
    return uniform_only_apply(params, x, num_heads=num_heads, options=o, causal=causal,
                              mask=mask, cache=cache)
  out = standard_apply(params, x, num_heads=num_heads, options=o, mask=mask, causal=causal,
                       positions=positions, cache=cache, symbols=symbols)
  scale = params.get("cb_scale")
  if cache is None:
    return broadcast_step(out, mask=mask, causal=causal, scale=scale)[0]
  attn, cache = out
  y, (total, count) = broadcast_step(attn, mask=mask, causal=causal, scale=scale,
                                     state=(cache["cb_sum"], cache["cb_count"]))
  return y, {**cache, "cb_sum": total, "cb_count": count}


@register("uniform_broadcast")
class UniformBroadcastAttention(StandardAttention):
  """Multi-head attention followed by context broadcasting (models/attention/README.md §5).

  Same constructor and call as :class:`StandardAttention`; ``cb_scaled`` adds ``cb_scale``.
  """

  Options = UniformBroadcastOptions
  apply = staticmethod(uniform_broadcast_apply)

  def __init__(self, *, d_model: int, num_heads: int, causal: bool,
               options: UniformBroadcastOptions, rngs: nnx.Rngs):
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=options,
                     rngs=rngs)
    if options.cb_scaled:
      self.cb_scale = common.make_param(rngs, nnx.initializers.ones, (d_model,), ("embed",))

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> dict:
    """``standard``'s KV cache plus the running ``cb_sum [B, d]`` and ``cb_count [B]``."""
    cache = super().init_cache(batch_size, max_length, dtype)
    cache["cb_sum"], cache["cb_count"] = broadcast.init_prefix(batch_size, self.d_model)
    return cache
