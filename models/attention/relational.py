"""``relational``: dual attention of the Dual Attention Transformer (arXiv 2405.16727).

Sensory heads are standard attention; relational heads select senders the same way but
retrieve the *relations* between receiver and sender (R learned inner products) plus a *symbol*
identifying the sender (models/attention/README.md §3). With T = H_sa + H_ra heads of width
dh = d / T:

* sensory part (``self_attention``): ``standard`` with H_sa heads and ``wo [H_sa*dh, H_sa*dh]``;
* relational part (``relational_attention``), H = H_ra heads::

    alpha^h_ij = softmax_j(where(adm, <Qa^h_i, Ka^h_j> / sqrt(dh), NEG))   Qa = x Wq_attn, ...
    r_ij,l     = act(<Qr_il, Kr_jl> / sqrt(dr))                          Qr = x Wq_rel [R, dr]
    A^h_i      = sum_j alpha^h_ij SV^h_j + wr[h] sum_j alpha^h_ij r_ij     SV = symbols Wv
    out        = concat_h(A^h) Wo

* output ``concat([sensory, relational], -1)`` (a block-diagonal W_O).

Parameters (kernels ``[in, out]``, no biases): ``self_attention.{wq, wk, wv, wo}.kernel``;
``relational_attention.{wq_attn [d, H*dk], wk_attn [d, Hkv*dk], wq_rel [d, R*dr], wk_rel (absent
with symmetric_rels: wq_rel serves both), wr [H, dh, R], wv [d, Hkv*dh], wo [H*dh, H*dh]}``.
PyTorch (``dual-attention`` 0.0.7) Linear weights transpose to these; ``wr`` is stored as is.

Symbols come from a retriever (:mod:`attnlab.models.attention.symbols`). In a model, the
:class:`~attnlab.models.transformer.DecoderStack` builds ONE retriever with
:meth:`DualAttention.make_retriever`, shares it across layers and passes ``symbols=``; it then
removes each layer's own retriever (:meth:`DualAttention.detach_retriever`). A standalone layer
(``layer(x, mask=None)``: registry contract, tests, the one-layer regression model) uses the
retriever it created at construction when ``symbols`` is None.

Kernels: ``xla`` materialises alpha ``[B,H,L,L]`` and relations ``[B,L,L,R]``; ``chunked`` is
the online-softmax kernel with the relations as pair values (O(L) memory). With
``rel_impl="rewrite"`` (identity relation activation only) the exact identity
``sum_j alpha_ij r_ij,l = <Qr_il, sum_j alpha_ij Kr_jl> / sqrt(dr)`` turns the relational heads
into ordinary attention with values ``[SV || Kr]``, run by the standard kernel.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from attnlab.models.checks import check_choice
from attnlab.models.attention import common, kernels, standard, symbols as symbols_lib
from attnlab.models.attention.registry import register
from attnlab.models.attention.relational_core import (  # noqa: F401  (re-exported)
    REL_ACTIVATIONS, REL_IMPLS, pair_values, project_relational, relational_core)

DEFAULT_STANDALONE_MAX_LEN = 1024


@dataclasses.dataclass(frozen=True)
class RelationalOptions(common.AttentionOptions):
  """Options of ``relational`` (dual attention). Defaults follow ``dual-attention`` 0.0.7.

  Attributes:
    sa_heads: sensory heads H_sa (default ``num_heads // 2``, or ``num_heads - ra_heads``).
    ra_heads: relational heads H_ra (default ``num_heads - sa_heads``). Either may be 0.
    n_relations: R (default H_ra).
    rel_proj_dim: dr (default ``dh * H_ra / R``); ``R * dr`` must equal ``H_ra * dh``. Pass
      it explicitly: its default changed across reference versions
      (models/attention/README.md §3.8).
    key_dim: dk of the relational attention projections (default dh; scale stays 1/sqrt(dh)).
    num_kv_heads: key/value heads of each group (default: that group's head count).
    rel_activation: one of :data:`REL_ACTIVATIONS` (default ``identity``).
    symmetric_rels: one relation projection ``wq_rel`` for both sides.
    share_attn_params: the sensory heads use ``wq_attn``/``wk_attn`` as their wq/wk (needs
      H_sa = H_ra, dk = dh).
    rel_impl: ``pairwise`` (relations r_ij materialised, per tile on ``chunked``) or
      ``rewrite`` (the exact [SV || Kr] form; identity activation, per-token symbols only).
    symbol_type: ``positional``, ``position_relative`` or ``symbolic``.
    n_symbols: library size of symbolic attention.
    symbol_heads: heads of symbolic attention (default: the layer's num_heads).
    trainable_symbols: train the symbolic library S (F is always trained).
    max_rel_pos: K of position-relative symbols (offsets clipped to [-K, K]).
    max_len: table size of positional symbols (default: the model's max_len in a transformer,
      1024 for a standalone layer); positions beyond it are clipped.
  """

  sa_heads: int | None = None
  ra_heads: int | None = None
  n_relations: int | None = None
  rel_proj_dim: int | None = None
  key_dim: int | None = None
  num_kv_heads: int | None = None
  rel_activation: str = "identity"
  symmetric_rels: bool = False
  share_attn_params: bool = False
  rel_impl: str = "pairwise"
  symbol_type: str = "symbolic"
  n_symbols: int = 1024
  symbol_heads: int | None = None
  trainable_symbols: bool = True
  max_rel_pos: int = 16
  max_len: int | None = None

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")

  def __post_init__(self):
    super().__post_init__()
    check_choice("attention.rel_activation", self.rel_activation, tuple(REL_ACTIVATIONS))
    check_choice("attention.rel_impl", self.rel_impl, REL_IMPLS)
    check_choice("attention.symbol_type", self.symbol_type, symbols_lib.SYMBOL_TYPES)
    if self.use_bias:
      raise ValueError("attention.use_bias=True is not supported by `relational`: its "
                       "projections have no biases (as in the dual-attention reference); "
                       "use use_bias=False")
    for field in ("sa_heads", "ra_heads"):
      value = getattr(self, field)
      if value is not None and (not isinstance(value, int) or value < 0):
        raise ValueError(f"attention.{field} must be a non-negative integer, got {value!r}")
    for field in ("n_relations", "rel_proj_dim", "key_dim", "num_kv_heads", "symbol_heads",
                  "max_len", "n_symbols", "max_rel_pos"):
      value = getattr(self, field)
      if value is not None and (not isinstance(value, int) or value <= 0):
        raise ValueError(f"attention.{field} must be a positive integer, got {value!r}")
    if self.rel_impl == "rewrite":
      if self.rel_activation != "identity":
        raise ValueError("attention.rel_impl='rewrite' needs rel_activation='identity', got "
                         f"{self.rel_activation!r}; use rel_impl='pairwise'")
      if self.symbol_type == "position_relative":
        raise ValueError("attention.rel_impl='rewrite' needs per-token symbols; symbol_type="
                         "'position_relative' requires rel_impl='pairwise'")


# ----------------------------------------------------------------------------------------------
# The pure layer.
# ----------------------------------------------------------------------------------------------


def _sensory_params(params: dict) -> dict:
  """Sensory wq/wk/wv/wo, taking wq/wk from the relational heads under share_attn_params."""
  sa = dict(params["self_attention"])
  if "wq" not in sa:
    sa["wq"] = params["relational_attention"]["wq_attn"]
    sa["wk"] = params["relational_attention"]["wk_attn"]
  return sa


def relational_apply(params: dict, x, *, num_heads: int, options=None, causal=False, mask=None,
                     positions=None, cache=None, symbols=None):
  """Dual attention (sensory + relational heads) on ``params`` (pure form).

  Sizes are read from the parameter shapes: dh = d / num_heads, the kv heads, dk, R and dr.

  Args:
    params: ``{'self_attention': {...}, 'relational_attention': {...}}`` (a group with zero
      heads is absent); names in the module docstring.
    x: ``[B, L, d]``.
    num_heads: all heads, H_sa + H_ra (split by ``options.sa_heads`` / ``ra_heads``).
    options: :class:`RelationalOptions` (None: the defaults, computing in x's dtype);
      ``rel_activation``, ``impl`` and ``rel_impl`` as in :func:`relational_core`; ``rope``
      rotates the attention queries/keys (not the relations).
    causal: causal masking.
    mask: optional bool ``[B, L]`` key mask (True = real token).
    positions: optional int ``[B, L]`` (RoPE); default ``arange`` offset by the cache index.
    cache: optional cache from :meth:`DualAttention.init_cache`; then returns ``(y, cache)``.
    symbols: ``[B, L, d]`` symbols of the new tokens, or a ``[2K+1, d]`` position-relative
      table; required when there are relational heads.

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
  """
  o = common.options_or_default(options, RelationalOptions, x)
  sa_heads, ra_heads = _resolve_heads(num_heads, o)
  rope, rope_theta, dtype = o.rope, o.rope_theta, o.compute_dtype
  b, l, d = x.shape
  dh = d // (sa_heads + ra_heads)
  positions = common.resolve_positions(x, positions, cache)
  new = {}
  if sa_heads:
    sa_params = _sensory_params(params)
    q, k, v = standard.project_qkv(
        sa_params, x, num_heads=sa_heads, num_kv_heads=sa_params["wk"]["kernel"].shape[1] // dh,
        head_dim=dh, positions=positions, rope=rope, rope_theta=rope_theta, dtype=dtype)
    new.update(k=k, v=v)
  if ra_heads:
    if symbols is None:
      raise ValueError("relational heads need symbols (from a symbol retriever)")
    ra_params = params["relational_attention"]
    qa, ka, qr, kr, sv = project_relational(ra_params, x, symbols, num_heads=ra_heads,
                                            positions=positions, rope=rope,
                                            rope_theta=rope_theta, dtype=dtype)
    new.update(ka=ka, kr=kr)
    if sv.ndim == 4:
      new["sv"] = sv
  keys, key_mask, q_pos, k_pos, cache = common.cached_keys(
      cache, new, mask, kernels.default_positions(b, l) if cache is None else positions)
  kw = dict(causal=causal, impl=o.impl, q_chunk=o.q_chunk, k_chunk=o.k_chunk)
  outs = []
  if sa_heads:
    # The full pass masks by token order (the kernel's default positions).
    out = kernels.dot_product_attention(
        q, keys["k"], keys["v"], mask=key_mask, q_positions=None if cache is None else q_pos,
        k_positions=None if cache is None else k_pos, **kw)
    outs.append(common.dense(sa_params["wo"], out.reshape(b, l, sa_heads * dh), dtype))
  if ra_heads:
    a = relational_core(qa, keys["ka"], qr, keys["kr"], keys["sv"] if sv.ndim == 4 else sv,
                        ra_params["wr"], q_pos=q_pos, k_pos=k_pos, key_valid=key_mask,
                        rel_activation=o.rel_activation, rel_impl=o.rel_impl, **kw)
    outs.append(common.dense(ra_params["wo"], a.astype(dtype).reshape(b, l, ra_heads * dh),
                             dtype))
  y = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
  return common.with_cache(y, cache)


# ----------------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------------


class SensoryHeads(nnx.Module):
  """Parameters of the sensory heads: ``wq, wk [d, Hkv*dh], wv, wo [H*dh, H*dh]``."""

  def __init__(self, d_model, num_heads, num_kv_heads, head_dim, *, shared_qk: bool,
               options: RelationalOptions, rngs: nnx.Rngs):
    hd, kvd = num_heads * head_dim, num_kv_heads * head_dim
    init_in = common.kernel_init(options, d_model)
    if not shared_qk:
      self.wq = common.Dense(d_model, hd, axes=("embed", "heads"), rngs=rngs, init=init_in)
      self.wk = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in)
    self.wv = common.Dense(d_model, kvd, axes=("embed", "kv_heads"), rngs=rngs, init=init_in)
    self.wo = common.Dense(hd, hd, axes=("heads", "embed"), rngs=rngs,
                           init=common.kernel_init(options, hd, out=True))


class RelationalHeads(nnx.Module):
  """Parameters of the relational heads (names and shapes in the module docstring)."""

  def __init__(self, d_model, num_heads, num_kv_heads, head_dim, key_dim, n_relations,
               rel_proj_dim, *, options: RelationalOptions, rngs: nnx.Rngs):
    o = options
    init_in = common.kernel_init(o, d_model)
    rd = n_relations * rel_proj_dim
    self.wq_attn = common.Dense(d_model, num_heads * key_dim, axes=("embed", "heads"),
                                rngs=rngs, init=init_in)
    self.wk_attn = common.Dense(d_model, num_kv_heads * key_dim, axes=("embed", "kv_heads"),
                                rngs=rngs, init=init_in)
    self.wq_rel = common.Dense(d_model, rd, axes=("embed", "heads"), rngs=rngs, init=init_in)
    if not o.symmetric_rels:
      self.wk_rel = common.Dense(d_model, rd, axes=("embed", "heads"), rngs=rngs, init=init_in)
    # wr: N(0, init_std) as the reference LM; fan_in_uniform = PyTorch's kaiming_uniform(a=sqrt 5)
    # on [H, dh, R], i.e. U(+-1/sqrt(dh * R)).
    self.wr = common.make_param(rngs, common.kernel_init(o, head_dim * n_relations),
                                (num_heads, head_dim, n_relations), ("heads", None, None))
    self.wv = common.Dense(d_model, num_kv_heads * head_dim, axes=("embed", "kv_heads"),
                           rngs=rngs, init=init_in)
    hd = num_heads * head_dim
    self.wo = common.Dense(hd, hd, axes=("heads", "embed"), rngs=rngs,
                           init=common.kernel_init(o, hd, out=True))


def _resolve_heads(num_heads: int, o: RelationalOptions) -> tuple[int, int]:
  sa, ra = o.sa_heads, o.ra_heads
  if sa is None and ra is None:
    sa = num_heads // 2
  if sa is None:
    sa = num_heads - ra
  if ra is None:
    ra = num_heads - sa
  if sa < 0 or ra < 0 or sa + ra != num_heads:
    raise ValueError(f"attention.sa_heads={sa} + attention.ra_heads={ra} must equal "
                     f"num_heads={num_heads}")
  if sa + ra == 0:
    raise ValueError("relational attention needs at least one sensory or relational head")
  return sa, ra


@register("relational")
class DualAttention(common.AttentionLayer):
  """Dual attention: sensory + relational heads (models/attention/README.md §3).
  ``layer(x, mask=None)``.

  In a :class:`~attnlab.models.transformer.DecoderStack`, symbols come from the stack's shared
  retriever (``symbols=``); standalone, the layer's own retriever (``self.retriever``, built
  at construction from the options) supplies them when ``symbols`` is None.

  Args:
    d_model: width of x and of the output.
    num_heads: total heads T = H_sa + H_ra (dh = d_model / T).
    causal: causal masking.
    options: :class:`RelationalOptions`.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  Options = RelationalOptions
  apply = staticmethod(relational_apply)
  uses_symbols: ClassVar[bool] = True
  # The head outputs are concatenated without an output projection: head_dim x num_heads must
  # be d_model (read by models that otherwise pick their own head width).
  heads_span_d_model: ClassVar[bool] = True

  def __init__(self, *, d_model: int, num_heads: int, causal: bool,
               options: RelationalOptions, rngs: nnx.Rngs):
    o = options
    sa, ra = _resolve_heads(num_heads, o)
    dh = o.head_dim or d_model // num_heads
    if dh * num_heads != d_model:
      raise ValueError(f"head_dim={dh} x num_heads={num_heads} must equal d_model={d_model}: "
                       "the sensory and relational outputs are concatenated")
    hkv_sa, hkv_ra = (o.num_kv_heads or sa), (o.num_kv_heads or ra)
    for group, heads, kv in (("sa_heads", sa, hkv_sa), ("ra_heads", ra, hkv_ra)):
      if heads and heads % kv:
        raise ValueError(f"attention.{group}={heads} must be a multiple of "
                         f"attention.num_kv_heads={kv}")
    dk = o.key_dim or dh
    n_rel = o.n_relations or max(ra, 1)
    dr = o.rel_proj_dim or (dh * ra) // n_rel
    if ra and (dr <= 0 or n_rel * dr != ra * dh):
      raise ValueError(f"attention.n_relations={n_rel} x attention.rel_proj_dim={dr} must equal "
                       f"ra_heads x head_dim = {ra} x {dh}")
    if o.rope and dk % 2:
      raise ValueError(f"RoPE needs an even attention.key_dim, got {dk}")
    if o.share_attn_params and (sa != ra or dk != dh or hkv_sa != hkv_ra):
      raise ValueError(f"attention.share_attn_params needs sa_heads == ra_heads (got {sa}, {ra})"
                       f" and key_dim == head_dim (got {dk}, {dh})")
    if o.symbol_heads is None:
      o = dataclasses.replace(o, symbol_heads=num_heads)
    if o.symbol_type == "symbolic" and d_model % o.symbol_heads:
      raise ValueError(f"attention.symbol_heads={o.symbol_heads} must divide d_model={d_model}")
    super().__init__(d_model=d_model, num_heads=num_heads, causal=causal, options=o)
    self.sa_heads, self.ra_heads, self.head_dim = sa, ra, dh
    self.kv_heads = (hkv_sa, hkv_ra)
    self.key_dim, self.n_relations, self.rel_proj_dim = dk, n_rel, dr
    self.self_attention = (SensoryHeads(d_model, sa, hkv_sa, dh, shared_qk=o.share_attn_params,
                                        options=o, rngs=rngs) if sa else None)
    self.relational_attention = (RelationalHeads(d_model, ra, hkv_ra, dh, dk, n_rel, dr,
                                                 options=o, rngs=rngs) if ra else None)
    self.retriever = (type(self).make_retriever(d_model=d_model, max_len=None, options=o,
                                                rngs=rngs) if ra else None)

  @classmethod
  def make_retriever(cls, *, d_model: int, max_len: int | None, options: RelationalOptions,
                     rngs: nnx.Rngs) -> nnx.Module:
    """The symbol retriever these layers consume (the stack builds one and shares it).

    Args:
      d_model: model width.
      max_len: the model's longest sequence (positional table size unless
        ``options.max_len`` is set; None means 1024).
      options: the layer's options (``layer.options``).
      rngs: random streams.

    Returns:
      An NNX module called as ``retriever(h, positions=..., mask=...)``.
    """
    o = options
    table = o.max_len or max_len or DEFAULT_STANDALONE_MAX_LEN
    return symbols_lib.make_retriever(
        o.symbol_type, d_model=d_model, max_len=table, max_rel_pos=o.max_rel_pos,
        n_symbols=o.n_symbols, symbol_heads=o.symbol_heads or 1,
        trainable_symbols=o.trainable_symbols, init=o.init, init_std=o.init_std,
        dtype=o.compute_dtype, rngs=rngs)

  def detach_retriever(self) -> None:
    """Drop the layer's own retriever (the stack passes shared symbols instead)."""
    self.retriever = None

  def params(self) -> dict:
    """The attention parameters as a nested dict (without the retriever)."""
    out = {}
    if self.self_attention is not None:
      out["self_attention"] = common.params_of(self.self_attention)
    if self.relational_attention is not None:
      out["relational_attention"] = common.params_of(self.relational_attention)
    return out

  def __call__(self, x, mask=None, *, positions=None, cache=None, symbols=None):
    """x ``[B, L, d]``, optional key mask ``[B, L]`` -> ``[B, L, d]`` (plus cache if given).

    ``symbols``: from the shared retriever (``[B, L, d]``, or the ``[2K+1, d]`` table for
    position-relative symbols); None uses this layer's own retriever.
    """
    common.check_inputs(x, mask, self.d_model)
    if symbols is None and self.ra_heads:
      if self.retriever is None:
        raise ValueError("this layer's retriever was detached (it runs inside a stack with a "
                         "shared retriever): pass symbols=")
      pos = common.resolve_positions(x, positions, cache)
      symbols = self.retriever(x, positions=pos, mask=mask)
    return super().__call__(x, mask, positions=positions, cache=cache, symbols=symbols)

  def cache_arrays(self) -> dict[str, tuple]:
    """Sensory ``k, v``; relational ``ka, kr`` and ``sv`` (none for position-relative
    symbols, which depend only on offsets)."""
    arrays = {}
    hkv_sa, hkv_ra = self.kv_heads
    if self.sa_heads:
      arrays.update(k=(hkv_sa, self.head_dim), v=(hkv_sa, self.head_dim))
    if self.ra_heads:
      arrays.update(ka=(hkv_ra, self.key_dim), kr=(self.n_relations, self.rel_proj_dim))
      if self.options.symbol_type != "position_relative":
        arrays["sv"] = (hkv_ra, self.head_dim)
    return arrays
