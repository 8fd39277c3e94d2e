"""``adaptive_filter``: isotropic Adaptive Filter Attention (AFA; Racioppo, arXiv 2509.04154).

Tokens are read as noisy measurements of a latent linear SDE with one complex eigenvalue pair
family per head: decay ``mu`` and frequencies ``omega``. Every key is propagated to the query time
(decay ``E = exp(mu |t_i - t_j|)`` and rotation), and weighted by its propagated precision
``1 / V`` times a robust residual factor; the output is the precision-weighted fusion of the
propagated values (models/attention/README.md §4). Per pair, with complex
``q, k, v [B, L, H, m]`` and ``q~ = e^{-i w t} q`` (same for k, v):

  ``r2 = |q~_i|^2 + E^2 |k~_j|^2 - 2 E Re<q~_i, k~_j>``,
  ``s = tau^2 [-log V - log1p(r2 / (nu m V))]``,  ``A = softmax_j(where(adm, s, NEG))``,
  ``y_i = e^{+i w t_i} sum_j A_ij E_ij v~_j``,  ``u = g y + (1 - g) v``,
  ``out = [Re u (all heads) | Im u (all heads)] @ wo``.

Complex numbers are stored as real pairs: a projection ``D -> 2 H m`` gives the real parts in its
first ``H m`` outputs and the imaginary parts in the last ``H m``, each half split head-major;
inside the layer a head holds ``[re (m) | im (m)]`` along its last axis ``[B, L, H, 2m]``.
``m = complex_dims / H``; ``complex_dims`` defaults to ``H * head_dim / 2`` (= d/2: projections
4 d^2, as ``standard``); ``complex_dims = d`` is the authors' sizing (8 d^2).

Parameters (names as in ``nnx.state``; reference = PCR-git/Adaptive-Filter-Attention
``model/multihead_isotropic_AFA.py``, whose ``nn.Linear.weight`` is our kernel transposed):

* ``wq``, ``wk``, ``wv``: ``kernel [D, 2Hm]`` (columns ``[Re | Im]``), ``bias [2Hm]`` if
  ``use_bias``; reference ``W_q``, ``W_k``, ``W_v`` (weight ``[2Hm, D]``).
* ``wo``: ``kernel [2Hm, D]`` (rows ``[Re; Im]``), ``bias [D]``; reference ``W_o``.
* ``decay_raw [H]``: ``mu_v``. ``freq_raw [H, m/2]``: ``lambda_imag_v`` (absent with fixed
  rotations, where the reference uses a buffer).
* ``sigma_raw``, ``eta_raw``, ``gamma_raw [H]``: ``sigma_v``, ``eta_v``, ``gamma_v``.
* ``tau [H]``: ``tau`` (RFA ``tau_param``). ``nu_raw [H]``: ``nu_sqrt`` (RFA ``nu_param``).
* ``gate [H, m]`` (``gate='learned'``): ``P_scale`` with ``use_total_precision_gate=2``.
* ``gate_scale``, ``gate_prior [H, m]`` (``gate='precision'``): ``P_scale``, ``P_prior_param``
  with ``use_total_precision_gate=1`` (RFA: ``P_scale_log``, ``P_prior_log``).

Logical axes: ``embed``/``heads`` on the projections, ``heads`` on every per-head parameter.

Derived quantities (``eps = 1e-5``, ``L_ref = ref_length``, a fixed option):
``mu = (sigmoid(decay_raw) - 1) 5 / L_ref - eps``; ``omega = (+b_0, -b_0, +b_1, -b_1, ...)
10 pi / L_ref``; ``sigma2 = softplus(sigma_raw)``; ``eta2 = softplus(eta_raw) + eps``;
``gamma2 = softplus(gamma_raw) + eps``; ``nu = softplus(nu_raw) + eps``; temperature ``tau^2``.
``V = sigma2 (-expm1(2 lE)) / (-2 mu) + eta2 E^2 + gamma2`` with ``lE = clip(mu |dt|, -10, 10)``.

Decisions (models/attention/README.md §4.4 and this module):

* the gate is learnable ``[H, m]`` initialised at 0 (g = 1/2); keys share the value dynamics;
  next-step prediction is off by default; ``L_ref`` never follows the current length.
* E, V and every term that depends only on ``|t_i - t_j|`` are computed once per distance and
  gathered (``toeplitz=True``); the table has one entry per key position, so positions must
  satisfy ``|t_i - t_j| < L_k`` (arange, cache offsets and per-segment positions do); use
  ``toeplitz=False`` for arbitrary positions (direct per-pair evaluation, same values; on CPU
  about as fast, since XLA fuses the per-pair transcendentals).
* for ``|mu| < 1e-5`` the fraction ``(-expm1(2 mu dt)) / (-2 mu)`` is its first-order series
  ``dt (1 + mu dt)`` (the reference uses ``dt``: same value at ``mu = 0``, but the series also
  gives the right gradient in ``mu`` there).
* the common ``rope`` option is ignored: AFA's rotations are its position encoding.
* ``gate='precision'`` learns ``gate_scale = gate_prior = 1`` at init,
  ``g = sigmoid(gate_scale^2 lse_j(s_ij) - log(gate_prior^2 + eps))`` (the reference's are
  random non-learnable tensors hard-coded for H=2, m=64). Under ``rfa_scoring`` the gate is the
  RFA one: ``g = sigmoid(exp(gate_scale) (sg(lse_j e_ij) + log((nu-2+eps)/(nu+eps))) -
  gate_prior)`` with init -2 / 0, on the energy ``e = B - log1p(r2 S)`` (no temperature); the
  RFA file keeps these per head, ours are ``[H, m]`` (equal at init).
* ``rfa_scoring`` changes only the scorer (nu, tau, the Student-t exponent, the gate): the decay is
  the same positive-rate kernel ``E = exp(-|mu| dt)`` and V is AFA's closed form.
* rows with no admissible key have a zero filtered estimate ``y``; the inner residual still
  carries their own value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import common
from attnlab.models.checks import check_choice
from attnlab.models.attention.registry import register
from attnlab.models.attention.adaptive_filter_core import (  # noqa: F401  (re-exported)
    EPS, decay_and_variance, distance_table, distance_terms, dynamics, filtered_estimate,
    pair_scores, pair_terms, rope_frequencies, rotate)

WEIGHTS = ("robust", "gaussian")
GATES = ("learned", "precision", "residual", "none")
PROJ_INITS = ("complex_glorot", "common")
TERM_TYPES = (0, 1, 2)


DEFAULT_REF_LENGTH = 101
"""``L_ref`` of a standalone layer (the authors' toy); a model supplies its training length."""


def _choice(field: str, value: Any, allowed) -> None:
  check_choice(f"adaptive_filter option {field}", value, allowed)


@dataclasses.dataclass(frozen=True)
class AdaptiveFilterOptions(common.AttentionOptions):
  """Options of ``adaptive_filter`` (the common ones plus the reference's flags).

  Attributes:
    complex_dims: total complex dimensions ``H * m`` (default ``H * head_dim / 2``, i.e. d/2:
      4 d^2 projection parameters like ``standard``; d gives the authors' 8 d^2).
    ref_length: ``L_ref``, the training length that scales mu and omega; fixed at inference.
      None (default) takes the model's training length when a model builds the layer
      (:meth:`for_model`), else :data:`DEFAULT_REF_LENGTH` (the authors' toy).
    weight: ``robust`` (``-log1p(r2 S)``) or ``gaussian`` (``-r2 S``).
    additive: additive term B: 0 none, 1 ``-log V``, 2 ``-nu dt`` (RFA: ``-sigma2/(eta2+gamma2)
      dt``).
    multiplicative: factor S of r2: 0 ``1/m`` (RFA ``1/sqrt(m)``), 1 ``1/(nu m V)`` (RFA
      ``1/(nu V)``), 2 ``1/(m (sigma2 dt + eta2))`` (RFA without m).
    full_residual: full ``r2``; False keeps only ``-2 E Re<q~, k~>`` (needs ``weight='gaussian'``).
    learn_rotations: learned frequencies ``freq_raw``; False uses RoPE frequencies
      ``10000^(-k/(m/2))`` (still scaled by ``10 pi / L_ref``) and has no ``freq_raw``.
    zero_decay: mu = 0 (reference ``lambda_real_zero``).
    zero_process_noise: sigma2 = 0.
    zero_measurement_noise: eta2 = 0 (reference ``zero_key_measurement_noise``).
    gate: ``learned`` (``g = sigmoid(gate)``), ``precision`` (total-precision gate),
      ``residual`` (``u = y + v``) or ``none`` (``u = y``, no inner residual).
    next_step: next-step prediction ``u <- e^mu e^{i w} u`` (the filtering toy; off in LMs).
    rfa_scoring: the RFA (v4+) scorer: ``nu = m softplus(nu_raw) + 2 + eps`` (init 4),
      ``tau = softplus(tau) + eps``, ``s = tau [B - ((nu + m)/m) log1p(r2 S)]``, RFA gate.
    toeplitz: gather per-distance terms from a table (needs ``|t_i - t_j| < L_k``) instead of
      evaluating them per pair.
    proj_init: ``complex_glorot`` (magnitude N(0, 2/(fan_in + fan_out)), uniform phase; the
      authors') or ``common`` (the variant-wide ``init``/``init_std``/``out_init_std``).
  """

  complex_dims: int | None = None
  ref_length: int | None = None
  weight: str = "robust"
  additive: int = 1
  multiplicative: int = 1
  full_residual: bool = True
  learn_rotations: bool = True
  zero_decay: bool = False
  zero_process_noise: bool = False
  zero_measurement_noise: bool = False
  gate: str = "learned"
  next_step: bool = False
  rfa_scoring: bool = False
  toeplitz: bool = True
  proj_init: str = "complex_glorot"

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")

  def __post_init__(self):
    super().__post_init__()
    _choice("weight", self.weight, WEIGHTS)
    _choice("additive", self.additive, TERM_TYPES)
    _choice("multiplicative", self.multiplicative, TERM_TYPES)
    _choice("gate", self.gate, GATES)
    _choice("proj_init", self.proj_init, PROJ_INITS)
    for name in ("full_residual", "learn_rotations", "zero_decay", "zero_process_noise",
                 "zero_measurement_noise", "next_step", "rfa_scoring", "toeplitz"):
      _choice(name, getattr(self, name), (False, True))
    if self.ref_length is not None and (not isinstance(self.ref_length, int)
                                        or isinstance(self.ref_length, bool)
                                        or self.ref_length <= 0):
      raise ValueError(f"adaptive_filter option ref_length must be a positive integer (the "
                       f"training length), got {self.ref_length!r}")
    if self.complex_dims is not None and (not isinstance(self.complex_dims, int)
                                          or self.complex_dims <= 0):
      raise ValueError(f"adaptive_filter option complex_dims must be a positive integer, got "
                       f"{self.complex_dims!r}")
    if not self.full_residual and self.weight == "robust":
      raise ValueError("adaptive_filter option full_residual=False needs weight='gaussian' "
                       "(log1p of the signed dot-product term is undefined below -1)")
    if self.multiplicative == 2 and self.zero_process_noise and self.zero_measurement_noise:
      raise ValueError("adaptive_filter option multiplicative=2 divides by sigma2*dt + eta2: it "
                       "needs zero_process_noise=False or zero_measurement_noise=False")

  def for_model(self, *, train_length: int | None = None) -> "AdaptiveFilterOptions":
    """Fill an unset ``ref_length`` with the model's training length (else the default)."""
    if self.ref_length is not None:
      return self
    return dataclasses.replace(self, ref_length=train_length or DEFAULT_REF_LENGTH)


def complex_dims_per_head(d_model: int, num_heads: int, options: AdaptiveFilterOptions) -> int:
  """``m``: complex dimensions per head (even: frequencies come in conjugate pairs)."""
  head_dim = options.head_dim or d_model // num_heads
  total = options.complex_dims or (num_heads * head_dim) // 2
  if total % num_heads:
    raise ValueError(f"adaptive_filter option complex_dims={total} must be a multiple of "
                     f"num_heads={num_heads}")
  m = total // num_heads
  if m % 2:
    raise ValueError(f"adaptive_filter needs an even number of complex dims per head "
                     f"(complex_dims / num_heads = {m}): frequencies come in +-omega pairs")
  return m


def _gate_mix(params, y, v, lse, dyn, options):
  """The inner residual (§4.1 step 8): ``u`` from the estimate ``y`` and the value ``v``."""
  o = options
  if o.gate == "none":
    return y
  if o.gate == "residual":
    return y + v
  if o.gate == "learned":
    g = jax.nn.sigmoid(params["gate"].astype(y.dtype))  # [H, m]
  else:
    scale = params["gate_scale"].astype(y.dtype)
    prior = params["gate_prior"].astype(y.dtype)
    lse = lse[..., None]  # [B, L, H, 1]
    if o.rfa_scoring:
      nu = dyn["nu"][:, None]
      calibrated = jax.lax.stop_gradient(lse) + jnp.log(nu - 2.0 + EPS) - jnp.log(nu + EPS)
      g = jax.nn.sigmoid(jnp.exp(scale) * calibrated - prior)
    else:
      g = jax.nn.sigmoid(scale ** 2 * lse - jnp.log(prior ** 2 + EPS))
  g = jnp.concatenate([g, g], axis=-1)
  return g * y + (1.0 - g) * v


def _project(p, x, num_heads, m, dtype):
  """Dense ``D -> 2Hm`` read as ``[B, L, H, 2m]`` (per head ``[re | im]``)."""
  b, l, _ = x.shape
  z = common.dense(p, x, dtype)
  hm = num_heads * m
  re = z[..., :hm].reshape(b, l, num_heads, m)
  im = z[..., hm:].reshape(b, l, num_heads, m)
  return jnp.concatenate([re, im], axis=-1)


def _rotated_side(x, angle, dtype):
  """``{'x': e^{-i angle} x in the compute dtype, 'sq': |e^{-i angle} x|^2 in float}``."""
  xt = rotate(x.astype(angle.dtype), -angle)
  return {"x": xt.astype(dtype), "sq": jnp.sum(xt * xt, axis=-1)}


def adaptive_filter_core(q, k, v, dyn, *, q_pos, k_pos, mask=None, causal=False, options,
                         with_lse=False):
  """AFA on projected arrays: rotate, filter, rotate back (§4.1 steps 3-7).

  Args:
    q: ``[B, Lq, H, 2m]`` queries (per head ``[re | im]``); k, v: ``[B, Lk, H, 2m]``.
    dyn: from :func:`dynamics` (its dtype is the accumulation dtype).
    q_pos, k_pos: int positions ``[B, Lq]``, ``[B, Lk]`` (the times t).
    mask: optional bool key mask ``[B, Lk]``; causal: causal masking.
    options: :class:`AdaptiveFilterOptions`.
    with_lse: also return the gate's ``logsumexp`` ``[B, Lq, H]``.

  Returns:
    ``(y [B, Lq, H, 2m], lse or None)`` with ``y_i = e^{i w t_i} sum_j A_ij E_ij v~_j``.
  """
  acc = dyn["mu"].dtype
  m = q.shape[-1] // 2
  omega = dyn["omega"]
  q_ang = q_pos.astype(acc)[:, :, None, None] * omega
  k_ang = k_pos.astype(acc)[:, :, None, None] * omega
  qs, ks = _rotated_side(q, q_ang, q.dtype), _rotated_side(k, k_ang, k.dtype)
  vt = rotate(v.astype(acc), -k_ang).astype(v.dtype)
  y, lse = filtered_estimate(qs, ks, vt, dyn, q_pos=q_pos, k_pos=k_pos, key_valid=mask,
                             causal=causal, m=m, options=options, with_lse=with_lse)
  return rotate(y, q_ang), lse


def adaptive_filter_apply(params: dict, x: jax.Array, *, num_heads: int, options=None,
                          causal=False, mask=None, positions=None, cache=None, symbols=None):
  """Pure isotropic AFA layer on ``params`` (names in the module docstring).

  Args:
    params: nested dict of arrays (``wq``, ``wk``, ``wv``, ``wo`` with ``kernel``/``bias``, and
      the per-head parameters).
    x: ``[B, L, D]``.
    num_heads: H.
    options: :class:`AdaptiveFilterOptions` (None: the defaults, computing in x's dtype; an
      unset ``ref_length`` is the standalone default :data:`DEFAULT_REF_LENGTH`).
    causal: causal masking.
    mask: optional bool key mask ``[B, L]`` (True = real token).
    positions: optional int times ``[B, L]`` (default ``arange``, offset by the cache index).
    cache: optional cache from :meth:`AdaptiveFilterAttention.init_cache`; then returns
      ``(y, new_cache)``.
    symbols: unused (part of the shared signature).

  Returns:
    y ``[B, L, D]`` in the compute dtype (and the updated cache when one was given).
  """
  del symbols
  o = common.options_or_default(options, AdaptiveFilterOptions, x).for_model()
  d = x.shape[-1]
  m = complex_dims_per_head(d, num_heads, o)
  dtype = o.compute_dtype
  acc = jnp.result_type(jnp.float32, dtype)
  positions = common.resolve_positions(x, positions, cache)
  dyn = dynamics(params, m, o, acc)
  q, k, v = (_project(params[n], x, num_heads, m, dtype) for n in ("wq", "wk", "wv"))
  # Query and key angles are separate terms (equal values) so that gradients accumulate in the
  # same order as in adaptive_filter_core.
  q_ang = positions.astype(acc)[:, :, None, None] * dyn["omega"]
  k_ang = positions.astype(acc)[:, :, None, None] * dyn["omega"]
  qs, ks = _rotated_side(q, q_ang, dtype), _rotated_side(k, k_ang, dtype)
  vt = rotate(v.astype(acc), -k_ang).astype(dtype)
  keys, key_valid, q_pos, _, cache = common.cached_keys(
      cache, {"k": ks["x"], "k_sq": ks["sq"], "v": vt, "t": positions}, mask, positions)
  y, lse = filtered_estimate(
      qs, {"x": keys["k"], "sq": keys["k_sq"]}, keys["v"], dyn, q_pos=q_pos, k_pos=keys["t"],
      key_valid=key_valid, causal=causal, m=m, options=o, with_lse=o.gate == "precision")
  u = _gate_mix(params, rotate(y, q_ang), v.astype(acc), lse, dyn, o)
  if o.next_step:  # one step of the learned dynamics: e^{mu} e^{i omega} u
    u = jnp.exp(dyn["mu"])[:, None] * rotate(u, dyn["omega"])
  b, l = x.shape[:2]
  flat = jnp.concatenate([u[..., :m].reshape(b, l, num_heads * m),
                          u[..., m:].reshape(b, l, num_heads * m)], axis=-1)
  return common.with_cache(common.dense(params["wo"], flat, dtype), cache)


# One compiled function per shape: eager calls would otherwise compile every primitive separately.
_apply_jit = jax.jit(adaptive_filter_apply, static_argnames=("num_heads", "causal", "options"))


# ----------------------------------------------------------------------------------------------
# The NNX module.
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("shape", "dtype", "scale", "axis"))
def _complex_glorot_sample(key, *, shape, dtype, scale, axis):
  half = list(shape)
  half[axis] //= 2
  k_mag, k_phase = jax.random.split(key)
  mag = scale * jax.random.normal(k_mag, half, dtype)
  phase = 2.0 * math.pi * jax.random.uniform(k_phase, half, dtype)
  return jnp.concatenate([mag * jnp.cos(phase), mag * jnp.sin(phase)], axis=axis)


def complex_glorot(fan_a: int, fan_b: int, layout: str):
  """Kernel init: complex weights of magnitude ``N(0, 2/(fan_a + fan_b))``, uniform phase.

  ``layout='in'``: kernel ``[D, 2n]`` = ``[Re | Im]`` columns; ``'out'``: ``[2n, D]`` rows.
  """
  scale = math.sqrt(2.0 / (fan_a + fan_b))
  axis = 1 if layout == "in" else 0
  return lambda key, shape, dtype=jnp.float32: _complex_glorot_sample(
      key, shape=tuple(shape), dtype=jnp.dtype(dtype), scale=scale, axis=axis)


@register("adaptive_filter")
class AdaptiveFilterAttention(common.AttentionLayer):
  """Isotropic Adaptive Filter Attention (models/attention/README.md §4). Call as
  ``layer(x, mask=None)``.

  Args:
    d_model: width of x and of the output.
    num_heads: heads H (one decay, noise triple, temperature and robustness per head).
    causal: causal masking.
    options: :class:`AdaptiveFilterOptions`.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  Options = AdaptiveFilterOptions
  apply = staticmethod(_apply_jit)

  def __init__(self, *, d_model: int, num_heads: int, causal: bool,
               options: AdaptiveFilterOptions, rngs: nnx.Rngs):
    o = options.for_model()
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=o)
    self.m = complex_dims_per_head(d_model, num_heads, o)
    h, n = num_heads, num_heads * self.m
    if o.proj_init == "complex_glorot":
      init_in, init_out = complex_glorot(d_model, n, "in"), complex_glorot(n, d_model, "out")
    else:
      init_in, init_out = common.kernel_init(o, d_model), common.kernel_init(o, 2 * n, out=True)
    for name in ("wq", "wk", "wv"):
      setattr(self, name, common.Dense(d_model, 2 * n, axes=("embed", "heads"), rngs=rngs,
                                       init=init_in, use_bias=o.use_bias))
    self.wo = common.Dense(2 * n, d_model, axes=("heads", "embed"), rngs=rngs, init=init_out,
                           use_bias=o.use_bias)
    normal, const = nnx.initializers.normal(1.0), nnx.initializers.constant
    per_head = lambda init, shape=(h,): common.make_param(  # noqa: E731
        rngs, init, shape, ("heads",) + (None,) * (len(shape) - 1))
    self.decay_raw = per_head(normal)
    self.freq_raw = per_head(normal, (h, self.m // 2)) if o.learn_rotations else None
    self.sigma_raw, self.eta_raw, self.gamma_raw = (per_head(normal) for _ in range(3))
    self.tau = per_head(const(1.0))
    self.nu_raw = per_head(const(4.0 if o.rfa_scoring else 1.0))
    self.gate = per_head(nnx.initializers.zeros, (h, self.m)) if o.gate == "learned" else None
    if o.gate == "precision":
      self.gate_scale = per_head(const(-2.0 if o.rfa_scoring else 1.0), (h, self.m))
      self.gate_prior = per_head(const(0.0 if o.rfa_scoring else 1.0), (h, self.m))

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> dict:
    """An empty cache: rotated keys ``k``, values ``v`` ``[B, Lmax, H, 2m]``, ``k_sq``, times."""
    shape = (self.num_heads, 2 * self.m)
    cache = common.init_kv_cache(batch_size, max_length, {"k": shape, "v": shape},
                                 dtype or self.options.compute_dtype)
    acc = jnp.result_type(jnp.float32, self.options.compute_dtype)
    cache["k_sq"] = jnp.zeros((batch_size, max_length, self.num_heads), acc)
    cache["t"] = jnp.zeros((batch_size, max_length), jnp.int32)
    return cache
