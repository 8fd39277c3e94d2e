"""Context broadcasting (arXiv 2210.08457): ``CB(X)_t = (X_t + c_t) / 2`` with ``c`` the
(masked, optionally causal) mean of the tokens. Used by the ``uniform_broadcast`` layer and by
the transformer block option ``cb_position``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def acc_dtype(x):
  """Accumulation dtype of the means: float32, or float64 for float64 inputs."""
  return jnp.result_type(jnp.float32, x.dtype)


def context_mean(x, mask=None, causal: bool = False, prefix=None):
  """Uniform attention over admissible tokens, accumulated in float32 (float64 for float64).

  Args:
    x: ``[B, L, D]``.
    mask: optional bool ``[B, L]`` (True = real token).
    causal: prefix means ``c_t = sum_{s<=t} m_s x_s / max(1, sum_{s<=t} m_s)``.
    prefix: optional ``(sum [B, D], count [B])`` of earlier tokens (causal decoding).

  Returns:
    ``[B, L, D]`` in the accumulation dtype (bidirectional: the masked mean broadcast to every
    position).
  """
  acc = acc_dtype(x)
  xf = x.astype(acc)
  m = jnp.ones(x.shape[:2], acc) if mask is None else mask.astype(acc)
  xm = xf * m[..., None]
  if causal:
    total, count = jnp.cumsum(xm, axis=1), jnp.cumsum(m, axis=1)
    if prefix is not None:
      total, count = total + prefix[0][:, None, :], count + prefix[1][:, None]
  else:
    total, count = xm.sum(1, keepdims=True), m.sum(1, keepdims=True)
  return total / jnp.maximum(count, 1.0)[..., None]


def context_broadcast(x, mask=None, causal: bool = False, scale=None, prefix=None):
  """``CB(X) = (X + s * mean) / 2``; ``scale`` s ``[D]`` gives CB_S (None = CB)."""
  c = context_mean(x, mask, causal, prefix)
  if scale is not None:
    c = c * scale.astype(c.dtype)
  return (0.5 * (x.astype(c.dtype) + c)).astype(x.dtype)


def init_prefix(batch: int, d: int):
  """Empty decoding state ``(sum [B, D], count [B])`` for causal context broadcasting."""
  return jnp.zeros((batch, d), jnp.float32), jnp.zeros((batch,), jnp.float32)


def advance_prefix(prefix, x, mask=None):
  """The decoding state after the tokens ``x [B, T, D]`` (masked ones excluded)."""
  acc = acc_dtype(x)
  m = jnp.ones(x.shape[:2], acc) if mask is None else mask.astype(acc)
  return (prefix[0] + (x.astype(acc) * m[..., None]).sum(1), prefix[1] + m.sum(1))
