"""Adaptive Filter Attention's math on projected arrays (arXiv 2509.04154): per-head dynamics,
per-distance decay and variance terms, pairwise scores and the filtered estimate.

The layer, its options and its parameters are in :mod:`attnlab.models.attention.adaptive_filter`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.models.attention import kernels

if TYPE_CHECKING:
  from attnlab.models.attention.adaptive_filter import AdaptiveFilterOptions

EPS = 1e-5
"""The reference's epsilon (noise floors, decay offset, small-mu threshold)."""
MIN_EXPONENT, MAX_EXPONENT = -10.0, 10.0


# ----------------------------------------------------------------------------------------------
# Per-head dynamics and per-distance terms.
# ----------------------------------------------------------------------------------------------


def rope_frequencies(m: int) -> np.ndarray:
  """The fixed-rotation base frequencies ``10000^(-k/(m/2))``, ``k < m/2`` (float64, unscaled)."""
  half = m // 2
  return 10000.0 ** (-np.arange(half, dtype=np.float64) / half)


def dynamics(params: dict, m: int, options: AdaptiveFilterOptions, dtype=jnp.float32) -> dict:
  """Per-head quantities from the raw parameters (models/attention/README.md §4.1 step 2).

  Returns:
    dict of ``mu [H]`` (<= 0), ``omega [H, m]`` (interleaved +-pairs), ``sigma2, eta2, gamma2,
    nu [H]``, ``temp [H]`` (the logit factor: tau^2, or softplus(tau) + eps under RFA) and
    ``dof [H]`` (RFA's ``(nu + m)/m``, else 1).
  """
  o = options.for_model()
  p = {k: jnp.asarray(v, dtype) for k, v in params.items() if not isinstance(v, dict)}
  h = p["decay_raw"].shape[0]
  mu = (jax.nn.sigmoid(p["decay_raw"]) - 1.0) * (5.0 / o.ref_length) - EPS
  if o.zero_decay:
    mu = jnp.zeros_like(mu)
  if o.learn_rotations:
    b = p["freq_raw"]
  else:
    b = jnp.broadcast_to(jnp.asarray(rope_frequencies(m), dtype), (h, m // 2))
  omega = jnp.stack([b, -b], axis=-1).reshape(h, m) * (10.0 * math.pi / o.ref_length)
  sigma2 = jax.nn.softplus(p["sigma_raw"])
  eta2 = jax.nn.softplus(p["eta_raw"]) + EPS
  gamma2 = jax.nn.softplus(p["gamma_raw"]) + EPS
  if o.zero_process_noise:
    sigma2 = jnp.zeros_like(sigma2)
  if o.zero_measurement_noise:
    eta2 = jnp.zeros_like(eta2)
  if o.rfa_scoring:
    nu = m * jax.nn.softplus(p["nu_raw"]) + 2.0 + EPS
    temp = jax.nn.softplus(p["tau"]) + EPS
    dof = (nu + m) / m
  else:
    nu = jax.nn.softplus(p["nu_raw"]) + EPS
    temp = p["tau"] ** 2
    dof = jnp.ones_like(nu)
  return dict(mu=mu, omega=omega, sigma2=sigma2, eta2=eta2, gamma2=gamma2, nu=nu, temp=temp,
              dof=dof)


def decay_and_variance(delta, dyn: dict):
  """``E``, ``V`` ``[H, *delta.shape]`` for float distances ``delta >= 0`` (§4.1 step 3)."""
  expand = (slice(None),) + (None,) * delta.ndim
  mu = dyn["mu"][expand]
  log_e = jnp.clip(mu * delta, MIN_EXPONENT, MAX_EXPONENT)
  e = jnp.exp(log_e)
  small = jnp.abs(mu) < EPS
  # Closed form of int_0^dt e^{2 mu s} ds; its series where mu ~ 0 (finite value and gradient).
  frac = jnp.where(small, delta * (1.0 + mu * delta),
                   -jnp.expm1(2.0 * log_e) / jnp.where(small, 1.0, -2.0 * mu))
  v = dyn["sigma2"][expand] * frac + dyn["eta2"][expand] * e * e + dyn["gamma2"][expand]
  return e, v


def distance_terms(delta, dyn: dict, m: int, options: AdaptiveFilterOptions) -> dict:
  """Every term that depends on ``|t_i - t_j|`` only: ``E``, additive ``B``, factor ``S``.

  Args:
    delta: float distances ``[...]`` (a ``[n]`` table or per-pair ``[B, Lq, Lk]``).
    dyn: from :func:`dynamics`.
    m: complex dims per head.
    options: the layer's options.

  Returns:
    dict of ``[H, *delta.shape]`` arrays ``E``, ``B``, ``S`` (and the variance ``V``).
  """
  o = options
  expand = (slice(None),) + (None,) * delta.ndim
  e, v = decay_and_variance(delta, dyn)
  sigma2, eta2, gamma2, nu = (dyn[k][expand] for k in ("sigma2", "eta2", "gamma2", "nu"))
  if o.additive == 0:
    b = jnp.zeros_like(e)
  elif o.additive == 1:
    b = -jnp.log(v)
  elif o.rfa_scoring:
    b = -(sigma2 / (eta2 + gamma2)) * delta
  else:
    b = -nu * delta
  scale = 1.0 if o.rfa_scoring else float(m)
  if o.multiplicative == 0:
    s = jnp.full_like(e, 1.0 / (math.sqrt(m) if o.rfa_scoring else m))
  elif o.multiplicative == 1:
    s = 1.0 / (nu * scale * v)
  else:
    s = 1.0 / (scale * (sigma2 * delta + eta2))
  return dict(E=e, B=b, S=s, V=v)


def distance_table(n: int, dyn: dict, m: int, options: AdaptiveFilterOptions, dtype) -> dict:
  """:func:`distance_terms` for distances ``0 .. n-1``: ``[H, n]`` arrays (Toeplitz rows)."""
  return distance_terms(jnp.arange(n, dtype=dtype), dyn, m, options)


def pair_terms(q_pos, k_pos, dyn, m, options, table=None, names=("E", "B", "S")) -> dict:
  """Per-pair ``[B, H, Lq, Lk]`` distance terms, gathered from ``table`` or evaluated directly."""
  dist = jnp.abs(q_pos[:, :, None] - k_pos[:, None, :])  # int [B, Lq, Lk]
  if table is None:
    terms = distance_terms(dist.astype(dyn["mu"].dtype), dyn, m, options)
    return {k: jnp.moveaxis(terms[k], 0, 1) for k in names}
  idx = jnp.clip(dist, 0, table["E"].shape[-1] - 1)
  # Materialise the table first: XLA would otherwise fuse its transcendental ops into the gather
  # and evaluate them once per pair (several times slower than the direct form on CPU).
  rows = jax.lax.optimization_barrier(tuple(table[k] for k in names))
  # One scalar gather per head, stacked head-major: a gather of [H]-slices would lay the
  # per-pair values (and its scatter-add transpose in the backward pass, the table's gradient)
  # out pair-major, costing a full [H, Lq, Lk] transpose each way.
  return {k: jnp.stack([r[h][idx] for h in range(r.shape[0])], axis=1)
          for k, r in zip(names, rows)}


# ----------------------------------------------------------------------------------------------
# Scores and attention.
# ----------------------------------------------------------------------------------------------


def rotate(x, angle):
  """``e^{i angle} x`` on ``[..., 2m]`` arrays holding ``[re | im]``; angle ``[..., m]``."""
  m = angle.shape[-1]
  re, im = x[..., :m], x[..., m:]
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.concatenate([re * c - im * s, re * s + im * c], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _over_queries(x, lq):
  """``[B, H, Lk]`` -> ``[B, H, Lq, Lk]`` (broadcast along the queries).

  Same as ``jnp.broadcast_to``; only the transpose differs: the sum over queries is done as a
  matrix-vector product. XLA's CPU reduction over the non-minor query axis took 355 ms at
  L = 1024 (8 heads) in the layer's backward pass, more than all of ``standard``'s step.
  """
  return jnp.broadcast_to(x[..., None, :], (*x.shape[:-1], lq, x.shape[-1]))


def _over_queries_fwd(x, lq):
  return _over_queries(x, lq), None


def _over_queries_bwd(lq, _, g):
  ones = jnp.ones((g.shape[0], g.shape[1], 1, lq), g.dtype)
  return (jnp.matmul(ones, g)[..., 0, :],)


_over_queries.defvjp(_over_queries_fwd, _over_queries_bwd)


def _heads_last_to_bh(x):
  """``[B, L, H]`` -> ``[B, H, L]``."""
  return jnp.moveaxis(x, 2, 1)


def pair_scores(qc, kc, q_pos, k_pos, dyn, m, options, table=None):
  """Logits ``s``, gate energy and decay ``E``, each float ``[B, H, Lq, Lk]`` (unmasked).

  Args:
    qc: ``{'x': q~ [B, Lq, H, 2m], 'sq': |q~|^2 [B, Lq, H]}`` (rotated queries).
    kc: the same for the keys.
    q_pos, k_pos: int positions ``[B, Lq]``, ``[B, Lk]``.
    dyn: from :func:`dynamics`.
    m: complex dims per head.
    options: the layer's options.
    table: optional :func:`distance_table` (Toeplitz gather).

  Returns:
    ``(s, energy, E)``; ``energy`` is what the precision gate sums (``s`` itself for AFA; RFA's
    ``B - log1p(r2 S)`` without temperature and Student-t exponent).
  """
  o = options
  bh = (None, slice(None), None, None)
  fused = _one_log_scorer(o)
  terms = pair_terms(q_pos, k_pos, dyn, m, o, table, ("E", "V") if fused else ("E", "B", "S"))
  e = terms["E"]
  dot = kernels.dot_product_logits(qc["x"], kc["x"], 1.0).astype(e.dtype)  # Re<q~, k~>
  r2 = -2.0 * e * dot
  if o.full_residual:
    r2 = r2 + _heads_last_to_bh(qc["sq"])[..., :, None] + (e * e) * _over_queries(
        _heads_last_to_bh(kc["sq"]), e.shape[-2])
  if fused:
    # -log V - log1p(r2 / (nu m V)) = -log(V + r2 / (nu m)): one log per pair and two
    # gathered terms instead of three (the gathers and their scatter-add transposes are most
    # of this variant's extra time on CPU).
    s = -dyn["temp"][bh] * jnp.log(terms["V"] + r2 / (dyn["nu"][bh] * float(m)))
    return s, s, e
  b, s_fac = terms["B"], terms["S"]
  z = r2 * s_fac
  if o.weight == "robust":
    penalty = jnp.log1p(z)
    base = b - dyn["dof"][bh] * penalty
    energy_rfa = b - penalty
  else:
    base = energy_rfa = b - z
  s = dyn["temp"][bh] * base
  return s, (energy_rfa if o.rfa_scoring else s), e


def _one_log_scorer(options) -> bool:
  """The default scorer (robust weight, ``B = -log V``, ``S = 1/(nu m V)``, not RFA), whose
  logit folds into one log of ``V + r2 / (nu m)``."""
  o = options
  return (o.weight == "robust" and o.additive == 1 and o.multiplicative == 1
          and not o.rfa_scoring)


def _xla_attention(qs, ks, vt, *, q_pos, k_pos, key_valid, causal, score, with_lse):
  adm = kernels.admissible(q_pos, k_pos, key_valid, causal)
  s, energy, e = score(qs, ks, q_pos, k_pos)
  probs = kernels.masked_softmax(s, adm)
  y = kernels.weighted_values(probs * e, vt)
  lse = None
  if with_lse:
    lse = jax.nn.logsumexp(jnp.where(adm, energy, kernels.NEG), axis=-1)
    lse = jnp.where(jnp.any(adm, axis=-1), lse, 0.0)
    lse = jnp.moveaxis(lse, 1, 2)
  return y, lse


def filtered_estimate(qs, ks, vt, dyn, *, q_pos, k_pos, key_valid=None, causal=False, m,
                      options, with_lse=False):
  """``sum_j A_ij E_ij v~_j`` (still in the rotated frame) and optionally the gate's lse.

  Args:
    qs: ``{'x': q~ [B, Lq, H, 2m], 'sq': [B, Lq, H]}`` rotated queries and squared norms.
    ks: the same for the keys ``[B, Lk, ...]``.
    vt: rotated values ``[B, Lk, H, 2m]``.
    dyn: from :func:`dynamics`.
    q_pos, k_pos: int positions; key_valid: optional bool ``[B, Lk]``; causal: causal mask.
    m: complex dims per head; options: the layer's options (``impl``, chunk sizes, flags).
    with_lse: also return ``logsumexp_j`` of the gate energy ``[B, Lq, H]``.

  Returns:
    ``(y [B, Lq, H, 2m] float32/64, lse or None)``; rows without admissible keys are 0.
  """
  o = options
  acc = dyn["mu"].dtype
  table = distance_table(k_pos.shape[1], dyn, m, o, acc) if o.toeplitz else None
  score = functools.partial(pair_scores, dyn=dyn, m=m, options=o, table=table)
  kw = dict(q_pos=q_pos, k_pos=k_pos, key_valid=key_valid, causal=causal)
  if o.impl == "xla":
    return _xla_attention(qs, ks, vt, score=score, with_lse=with_lse, **kw)
  y, _ = kernels.chunked_attention(
      qs, ks, vt,
      score_fn=lambda qc, kc, qp, kp: score(qc, kc, qp, kp)[0],
      value_weight_fn=lambda qc, kc, qp, kp: pair_terms(qp, kp, dyn, m, o, table, ("E",))["E"],
      q_chunk=o.q_chunk, k_chunk=o.k_chunk, **kw)
  lse = None
  if with_lse:
    lse = kernels.chunked_logsumexp(lambda qc, kc, qp, kp: score(qc, kc, qp, kp)[1], qs, ks,
                                    q_chunk=o.q_chunk, k_chunk=o.k_chunk, dtype=acc, **kw)
  return y, lse
