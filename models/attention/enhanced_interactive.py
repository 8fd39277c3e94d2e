"""``enhanced_interactive``: EIT's enhanced multi-head attention (EMHA), arXiv 2212.10197.

With M heads (subspaces) of width dh, EMHA scores all M² (query subspace i, key subspace j)
pairs ``S^(i,j) = <Q^i, K^j> / sqrt(dh)`` (channel ``i*M + j``, query-major), then mixes the
maps point-wise in (t, s) with two small ReLU networks (1x1 convolutions over the map axis):

* ISI (grouped, M groups, ``H_isi`` hidden per group): the M maps of query subspace i -> one map
  ``S'^i``;
* CSI (dense, C hidden): the M maps ``S'`` -> M logits ``S''^m``.

Head m's output is ``softmax_s(S''^m) V^m``; heads are concatenated and projected by ``wo``.
The mask enters only right before the softmax (models/attention/README.md §2.5).

Parameters (kernels ``[in, out]``):

* ``wq, wk, wv, wo`` as ``standard`` (with biases by default);
* ``isi_w0 [M, H_isi, M]``, ``isi_b0 [M, H_isi]``, ``isi_w1 [M, H_isi]``, ``isi_b1 [M]``;
* ``csi_w0 [C, M]``, ``csi_b0 [C]``, ``csi_w1 [M, C]``, ``csi_b1 [M]``.

Porting PyTorch 1x1 convolutions (weight ``[Cout, Cin/G, 1, 1]``): ``isi_w0 =
W_f0.reshape(M, H_isi, M)``, ``isi_w1 = W_f1.reshape(M, H_isi)``, ``csi_w0 = W_g0[:, :, 0, 0]``,
``csi_w1 = W_g1[:, :, 0, 0]``; biases likewise.

E-EIT (``efficient=True``, a project decision, models/attention/README.md §2.4): ISI layer 1
with 2 hidden channels per group (2M in all), ReLU, then one dense map straight to M logits:
parameters ``isi_w0 [M, 2, M]``, ``isi_b0 [M, 2]``, ``csi_w1 [M, 2M]`` (hidden channel
``i*2 + c``), ``csi_b1 [M]``.
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
from attnlab.models.attention.standard import project_from_options

EFFICIENT_HIDDEN_PER_GROUP = 2
"""E-EIT's hidden channels per group (2M in all, models/attention/README.md §2.4)."""

@dataclasses.dataclass(frozen=True)
class EnhancedInteractiveOptions(common.AttentionOptions):
  """Options of ``enhanced_interactive``.

  Attributes:
    use_bias: biases on wq/wk/wv/wo (default True for this variant).
    isi_hidden_per_group: ISI hidden channels per query subspace (H_isi).
    csi_hidden: CSI hidden channels C (default 4 * num_heads).
    mixed_key: compute ISI layer 1 as ``<Q^i, sum_j A0[i,c,j] K^j>`` (M*H_isi maps instead of
      M², exact; cheaper when H_isi < M).
    efficient: E-EIT (ISI layer 1 with 2 hidden per group, ReLU, dense map to M logits).
    csi_after_softmax: softmax the ISI maps, run CSI on the probabilities and re-mask the
      result (rows then no longer sum to one); xla only.
  """

  use_bias: bool = True
  isi_hidden_per_group: int = 8
  csi_hidden: int | None = None
  mixed_key: bool = False
  efficient: bool = False
  csi_after_softmax: bool = False

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")

  def __post_init__(self):
    super().__post_init__()
    if self.isi_hidden_per_group <= 0:
      raise ValueError(f"isi_hidden_per_group must be positive, got {self.isi_hidden_per_group}")
    if self.csi_hidden is not None and self.csi_hidden <= 0:
      raise ValueError(f"csi_hidden must be positive, got {self.csi_hidden}")
    if self.csi_after_softmax and self.efficient:
      raise ValueError("csi_after_softmax needs a CSI stage; efficient=True has none")
    if self.csi_after_softmax and self.impl != "xla":
      raise ValueError("csi_after_softmax=True needs the full softmax before CSI: use "
                       f"impl='xla' (got {self.impl!r})")


# ----------------------------------------------------------------------------------------------
# The score maps: M² dot products -> ISI -> CSI, point-wise in (t, s).
# ----------------------------------------------------------------------------------------------


def mix_keys(params, k, scale=1.0):
  """Mixed keys ``K~[b,s,i,c] = scale * sum_j isi_w0[i,c,j] K^j_s``: ``[B,S,M,dh]`` ->
  ``[B,S,M,H,dh]`` in the accumulation dtype (the score scale is folded into the weights)."""
  w = params["isi_w0"].astype(kernels.acc_dtype(k)) * scale
  return jnp.einsum("icj,bsjd->bsicd", w.astype(k.dtype), k,
                    preferred_element_type=kernels.acc_dtype(k))


# Layout of the maps: map-leading, ``[B, channels, Tq*Tk]``, and every contraction a
# ``lax.dot_general`` whose batch axes lead both operands (the small weights broadcast over B,
# the queries and keys over the other subspace index). XLA then emits each 1x1 convolution, the
# M² (or M*H_isi) score maps and all their gradients as batched matmuls on arrays in their stored
# order: no layout copy of an L x L tensor in the forward or backward pass. The earlier
# channels-last layout (``[B, Tq, Tk, channels]`` via einsum) made XLA transpose the score maps,
# ReLU hidden maps and their cotangents (the bulk of the step's time on CPU, see
# experiments/benchmarks/README.md).


def _bmm(a, b, nbatch, acc):
  """``a [*batch, m, k] @ b [*batch, k, n]`` over the leading ``nbatch`` axes."""
  batch = tuple(range(nbatch))
  return jax.lax.dot_general(a, b, (((nbatch + 1,), (nbatch,)), (batch, batch)),
                             preferred_element_type=acc)


def _bmm_nt(a, b, nbatch, acc):
  """``a [*batch, m, k] @ b[*batch, n, k]^T`` over the leading ``nbatch`` axes."""
  batch = tuple(range(nbatch))
  return jax.lax.dot_general(a, b, (((nbatch + 1,), (nbatch + 1,)), (batch, batch)),
                             preferred_element_type=acc)


@jax.custom_vjp
def _mix(w, x):
  """1x1 convolution of map-leading maps: ``w [*g, C, K]``, ``x [B, *g, K, N]`` ->
  ``[B, *g, C, N]`` (``g``: at most one group axis), in x's dtype.

  Its gradient is written out (:func:`_mix_bwd`) so that both backward contractions are batched
  matmuls in stored order too; JAX's transpose of the forward dot gives XLA a ``[N, K]``
  product that it then transposes (a full copy of the maps, seen at B = 1).
  """
  nb = w.ndim - 1
  return _bmm(jnp.broadcast_to(w, (x.shape[0], *w.shape)).astype(x.dtype), x, nb, x.dtype)


def _mix_fwd(w, x):
  return _mix(w, x), (w, x)


def _mix_bwd(res, g):
  w, x = res
  nb = w.ndim - 1
  wt = jnp.swapaxes(w, -1, -2).astype(x.dtype)
  dx = _bmm(jnp.broadcast_to(wt, (x.shape[0], *wt.shape)), g, nb, x.dtype)
  dw = jnp.sum(_bmm_nt(g, x, nb, x.dtype), axis=0)
  return dw.astype(w.dtype), dx


_mix.defvjp(_mix_fwd, _mix_bwd)


def isi_hidden(params, q, k, scale, *, mixed_key):
  """ISI layer 1 after its ReLU: ``[B, M, H_isi, Tq*Tk]`` in the accumulation dtype.

  Args:
    params: the mixing parameters.
    q: ``[B, Tq, M, dh]``.
    k: ``[B, Tk, M, dh]`` keys, or ``[B, Tk, M, H_isi, dh]`` mixed keys (scale folded in, from
      :func:`mix_keys`) when ``mixed_key``.
    scale: ``1/sqrt(dh)`` (folded into ``isi_w0`` on the plain path).
    mixed_key: whether ``k`` holds mixed keys.
  """
  acc = kernels.acc_dtype(q, k)
  b, tq, m, dh = q.shape
  tk = k.shape[1]
  qh = jnp.swapaxes(q, 1, 2)  # [B, M, Tq, dh]
  if mixed_key:
    h = k.shape[3]
    kh = jnp.transpose(k, (0, 2, 3, 1, 4))  # [B, M, H, Tk, dh]
    qb = jnp.broadcast_to(qh[:, :, None].astype(k.dtype), (b, m, h, tq, dh))
    pre = _bmm_nt(qb, kh, 3, acc).reshape(b, m, h, tq * tk)
  else:
    h = params["isi_w0"].shape[1]
    qb = jnp.broadcast_to(qh[:, :, None], (b, m, m, tq, dh))  # [B, i, j, Tq, dh]
    kb = jnp.broadcast_to(jnp.swapaxes(k, 1, 2)[:, None], (b, m, m, tk, dh))
    s = _bmm_nt(qb, kb, 3, acc).reshape(b, m, m, tq * tk)  # [B, i, j, Tq*Tk]
    pre = _mix(params["isi_w0"].astype(acc) * scale, s)  # [B, i, c, Tq*Tk]
  return jax.nn.relu(pre + params["isi_b0"].astype(acc)[None, :, :, None])


def isi_out(params, h):
  """ISI layer 2 (grouped): ``[B, M, H_isi, N]`` -> ``[B, M, N]``."""
  b, m, _, n = h.shape
  s = _mix(params["isi_w1"][:, None, :].astype(h.dtype), h).reshape(b, m, n)
  return s + params["isi_b1"].astype(h.dtype)[None, :, None]


def csi(params, s):
  """CSI (dense, ReLU hidden): ``[B, M, N]`` -> ``[B, M, N]``."""
  u = _mix(params["csi_w0"].astype(s.dtype), s)
  u = jax.nn.relu(u + params["csi_b0"].astype(s.dtype)[None, :, None])
  return csi_last(params, u)


def csi_last(params, u):
  """The last dense map ``csi_w1`` from ``[B, C, N]`` hidden maps to M logits ``[B, M, N]``."""
  s = _mix(params["csi_w1"].astype(u.dtype), u)
  return s + params["csi_b1"].astype(u.dtype)[None, :, None]


def eit_logits(params, q, k, scale, *, mixed_key=False, efficient=False):
  """The M unmasked EMHA logit maps ``[B, M, Tq, Tk]`` (ISI then CSI, or E-EIT)."""
  b, tq = q.shape[:2]
  tk = k.shape[1]
  h = isi_hidden(params, q, k, scale, mixed_key=mixed_key)
  if efficient:
    out = csi_last(params, h.reshape(b, -1, tq * tk))  # hidden channel i*2 + c
  else:
    out = csi(params, isi_out(params, h))
  return out.reshape(b, -1, tq, tk)


def mixed_key_is_cheaper(params, q, k) -> bool:
  """Whether ISI layer 1 costs fewer FLOPs on mixed keys (and loses no precision there).

  Per (t, s) pixel and query subspace, the naive path computes M dot products of width dh and
  then the grouped map ``M -> H_isi`` (``2 M dh + 2 M H_isi`` FLOPs); the mixed-key path
  computes the H_isi dot products with mixed keys directly (``2 H_isi dh``). Both are the same
  sum reassociated (exact up to round-off). On CPU the mixed path is also far fewer memory
  passes: it skips the ``[B, M, M, Tq*Tk]`` score tensor and its backward (forward+backward of
  the default layer at L = 1024: 4.8x instead of 10.9x ``standard``'s time on the loaded
  machine, see experiments/benchmarks/README.md). Mixed keys are kept in the accumulation dtype,
  so the switch is made only when q and k already are in it (float32/float64): a bfloat16
  layer keeps its bfloat16 score matmul unless ``mixed_key=True`` is asked for.
  """
  m, dh = q.shape[-2], q.shape[-1]
  h = params["isi_w0"].shape[1]
  if q.dtype != kernels.acc_dtype(q, k) or k.dtype != q.dtype:
    return False
  return h * dh < m * dh + m * h


def score_keys(params, q, k, scale, mixed_key=False):
  """``(keys, mixed)``: the keys ISI layer 1 reads and whether they are mixed.

  Keys are mixed (:func:`mix_keys`) when ``mixed_key`` asks for it or when
  :func:`mixed_key_is_cheaper`; otherwise ``k`` itself is returned.
  """
  mixed = mixed_key or mixed_key_is_cheaper(params, q, k)
  return (mix_keys(params, k, scale) if mixed else k), mixed


def layer_logits(params, q, k, *, mixed_key=False, efficient=False):
  """The unmasked logits ``[B, M, Tq, Tk]`` the layer's softmax reads (default form).

  ``q``, ``k`` are the projected ``[B, T, M, dh]`` arrays. This is the one place the layer's
  score path is assembled: :func:`enhanced_interactive_core` (xla path) and the attention
  diagnostics both call it.
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  kk, mixed = score_keys(params, q, k, scale, mixed_key)
  return eit_logits(params, q, kk, scale, mixed_key=mixed, efficient=efficient)


def _remask(p, adm, remask):
  return p * adm if remask else p


def enhanced_interactive_core(params, q, k, v, *, q_pos, k_pos, key_valid=None, causal=False,
                              impl="xla", mixed_key=False, efficient=False,
                              csi_after_softmax=False, remask=True,
                              q_chunk=kernels.DEFAULT_Q_CHUNK, k_chunk=kernels.DEFAULT_K_CHUNK):
  """EMHA on projected arrays.

  Args:
    params: dict with the ISI/CSI parameters (see the module docstring).
    q, k, v: ``[B, Tq, M, dh]``, ``[B, Tk, M, dh]``, ``[B, Tk, M, dv]``.
    q_pos, k_pos: int ``[B, Tq]`` / ``[B, Tk]`` positions.
    key_valid: optional bool ``[B, Tk]``.
    causal: causal masking by position.
    impl: ``xla`` or ``chunked``.
    mixed_key, efficient, csi_after_softmax: see :class:`EnhancedInteractiveOptions`.
    remask: multiply the CSI-on-probabilities output by the admissible mask (only used with
      ``csi_after_softmax``; False exists to show the leak in tests).
    q_chunk, k_chunk: chunk sizes of the chunked kernel.

  Returns:
    ``[B, Tq, M, dv]`` in v's dtype; rows with no admissible key are zeros.
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  if impl == "chunked":
    if csi_after_softmax:
      raise ValueError("csi_after_softmax=True is supported by impl='xla' only")
    kk, mixed_key = score_keys(params, q, k, scale, mixed_key)
    out, _ = kernels.chunked_attention(
        q, kk, v,
        score_fn=lambda qc, kc, qp, kp: eit_logits(params, qc, kc, scale, mixed_key=mixed_key,
                                                   efficient=efficient),
        q_pos=q_pos, k_pos=k_pos, key_valid=key_valid, causal=causal,
        q_chunk=q_chunk, k_chunk=k_chunk)
    return out.astype(v.dtype)
  if impl != "xla":
    raise ValueError(f"enhanced_interactive supports impl 'xla' and 'chunked', got {impl!r}")
  adm = kernels.admissible(q_pos, k_pos, key_valid, causal)  # [B, 1, Tq, Tk]
  if csi_after_softmax:
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    kk, mixed_key = score_keys(params, q, k, scale, mixed_key)
    h = isi_hidden(params, q, kk, scale, mixed_key=mixed_key)
    p_isi = kernels.masked_softmax(isi_out(params, h).reshape(b, -1, tq, tk), adm)
    p_csi = csi(params, p_isi.reshape(b, -1, tq * tk)).reshape(b, -1, tq, tk)
    p = _remask(p_csi, adm, remask)
  else:
    logits = layer_logits(params, q, k, mixed_key=mixed_key, efficient=efficient)
    p = kernels.masked_softmax(logits, adm)
  return kernels.weighted_values(p, v).astype(v.dtype)


def enhanced_interactive_apply(params: dict, x: jax.Array, *, num_heads: int, options=None,
                               causal=False, mask=None, positions=None, cache=None,
                               symbols=None):
  """Pure EMHA layer on ``params`` (names as in the module docstring).

  Args:
    params: ``{'wq', 'wk', 'wv', 'wo'}`` dense dicts plus the ISI/CSI arrays.
    x: ``[B, L, d]``.
    num_heads: M, the number of subspaces (= value heads).
    options: :class:`EnhancedInteractiveOptions` (None: the defaults, computing in x's dtype);
      ``head_dim`` defaults to ``d // M``; ``rope`` rotates Q and K before any key mixing
      (exact: the rotation is shared).
    causal: causal masking.
    mask: optional bool ``[B, L]`` key mask (True = real token).
    positions: optional int ``[B, L]`` (RoPE, causal order); default ``arange(L)`` offset by the
      cache index when decoding.
    cache: optional cache from :meth:`EnhancedInteractiveAttention.init_cache`; then returns
      ``(y, new_cache)``. The cache holds plain keys (mixed keys are recomputed from them).
    symbols: not read (every variant's pure function takes it).

  Returns:
    ``y [B, L, d]``, or ``(y, new_cache)`` when decoding.
  """
  o = common.options_or_default(options, EnhancedInteractiveOptions, x)
  del symbols
  q, k, v, positions = project_from_options(params, x, o, num_heads=num_heads,
                                            num_kv_heads=num_heads, positions=positions,
                                            cache=cache)
  keys, key_valid, q_pos, k_pos, cache = common.cached_keys(cache, {"k": k, "v": v}, mask,
                                                            positions)
  out = enhanced_interactive_core(params, q, keys["k"], keys["v"], q_pos=q_pos, k_pos=k_pos,
                                  key_valid=key_valid, causal=causal, impl=o.impl,
                                  mixed_key=o.mixed_key, efficient=o.efficient,
                                  csi_after_softmax=o.csi_after_softmax, q_chunk=o.q_chunk,
                                  k_chunk=o.k_chunk)
  y = common.dense(params["wo"], out.reshape(*out.shape[:2], -1), o.compute_dtype)
  return common.with_cache(y, cache)


# ----------------------------------------------------------------------------------------------
# The NNX module.
# ----------------------------------------------------------------------------------------------


def _uniform(fan_in: int):
  """PyTorch's Conv2d default init U(+-1/sqrt(fan_in)) for weights and biases."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)


def mixing_shapes(num_heads: int, options: EnhancedInteractiveOptions) -> dict:
  """Name -> (shape, fan_in) of the ISI/CSI parameters for M = ``num_heads``."""
  m = num_heads
  if options.efficient:
    h = EFFICIENT_HIDDEN_PER_GROUP
    return {"isi_w0": ((m, h, m), m), "isi_b0": ((m, h), m),
            "csi_w1": ((m, m * h), m * h), "csi_b1": ((m,), m * h)}
  h = options.isi_hidden_per_group
  c = options.csi_hidden or 4 * m
  return {"isi_w0": ((m, h, m), m), "isi_b0": ((m, h), m),
          "isi_w1": ((m, h), h), "isi_b1": ((m,), h),
          "csi_w0": ((c, m), m), "csi_b0": ((c,), m),
          "csi_w1": ((m, c), c), "csi_b1": ((m,), c)}


@register("enhanced_interactive")
class EnhancedInteractiveAttention(common.AttentionLayer):
  """EIT's enhanced multi-head attention (models/attention/README.md §2). Call as
  ``layer(x, mask=None)``.

  Args:
    d_model: width of x and of the output.
    num_heads: M, the number of subspaces.
    causal: causal masking.
    options: :class:`EnhancedInteractiveOptions`.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  Options = EnhancedInteractiveOptions
  apply = staticmethod(enhanced_interactive_apply)

  def __init__(self, *, d_model: int, num_heads: int, causal: bool,
               options: EnhancedInteractiveOptions, rngs: nnx.Rngs):
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=options)
    o = options
    self.head_dim = o.head_dim or d_model // num_heads
    hd = num_heads * self.head_dim
    init_in = common.kernel_init(o, d_model)
    for name in ("wq", "wk", "wv"):
      setattr(self, name, common.Dense(d_model, hd, axes=("embed", "heads"), rngs=rngs,
                                       init=init_in, use_bias=o.use_bias))
    self.wo = common.Dense(hd, d_model, axes=("heads", "embed"), rngs=rngs,
                           init=common.kernel_init(o, hd, out=True), use_bias=o.use_bias)
    for name, (shape, fan_in) in mixing_shapes(num_heads, o).items():
      setattr(self, name, common.make_param(rngs, _uniform(fan_in), shape, (None,) * len(shape)))

  def cache_arrays(self) -> dict[str, tuple]:
    """Plain keys and values ``[M, dh]`` per token."""
    shape = (self.num_heads, self.head_dim)
    return {"k": shape, "v": shape}
