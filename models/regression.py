"""Task models for in-context regression.

* :class:`AttentionOnlyRegression` -- He et al. (arXiv 2503.12734): one multi-head attention
  layer, no MLP, norm, residual or bias; every head has full width D = d + n_out; context tokens
  ``z_l = (x_l, y_l)``, query ``z_q = (x_q, 0)`` attending to the context only.
* :class:`PromptRegressionModel` -- Garg et al. (arXiv 2208.01066): interleaved
  ``x_1, y_1, x_2, ...`` prompt, linear read-in, GPT-2-style causal stack, scalar read-out at the
  x positions.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import kernels, registry
from attnlab.models.checks import check_choice
from attnlab.models.attention.registry import AttentionSpec
from attnlab.models.params import Dense, make_param
from attnlab.models.transformer import DecoderStack, TransformerConfig


NORMALIZATIONS = ("softmax", "linear_fixed", "linear_actual")
"""How the query's attention weights are formed: the variant's own (``softmax``), or raw
``standard`` scores divided by the training length or the actual context length (§1.7)."""


def check_normalization(normalization: str, attention_name: str,
                        train_length: int | None) -> None:
  """Raise ValueError (naming ``model.normalization``) unless the combination is allowed."""
  check_choice("model.normalization", normalization, NORMALIZATIONS)
  if normalization != "softmax" and attention_name != "standard":
    raise ValueError(f"model.normalization={normalization!r} replaces the softmax of "
                     f"`standard` attention; attention {attention_name!r} must use 'softmax'")
  if normalization == "linear_fixed" and not train_length:
    raise ValueError("model.normalization='linear_fixed' needs the training prompt length")


class AttentionOnlyRegression(nnx.Module):
  """One attention layer read at the query token (He et al.'s model; any registry variant).

  The prediction is the last ``n_out`` coordinates of the layer's output at the query: with
  ``standard`` attention this is ``sum_h O^h V^h Z softmax(z_q^T Q^hT K^h z_l / sqrt(D))``, the
  paper's model, with ``O^h`` the rows of ``wo`` of head h and the last output columns.
  Init U(+-1/sqrt(fan_in)) (PyTorch's Linear default, the authors' code).
  """

  def __init__(self, d: int, num_heads: int, *, n_out: int = 1,
               attention: AttentionSpec | None = None, normalization: str = "softmax",
               train_length: int | None = None, rngs: nnx.Rngs):
    """Args: ``d`` covariates, ``num_heads`` heads, ``n_out`` outputs; ``attention`` the layer's
    :class:`AttentionSpec` (default ``standard``); ``normalization`` one of
    :data:`NORMALIZATIONS`; ``train_length`` the training number of context pairs.

    The model owns three attention fields: ``head_dim`` (the full token width D = d + n_out,
    or D / H for variants whose heads span the width), ``init='fan_in_uniform'`` and
    ``use_bias=False``.
    """
    spec = attention if attention is not None else AttentionSpec()
    check_normalization(normalization, spec.name, train_length)
    self.d, self.n_out = d, n_out
    self.normalization, self.train_length = normalization, train_length
    width = d + n_out
    head_dim = width
    if registry.variant(spec.name).heads_span_d_model:
      # e.g. `relational`: heads concatenate to the width, so each head gets width / H.
      if width % num_heads:
        raise ValueError(f"attention {spec.name!r} splits the token width d + 1 = {width} "
                         f"between its heads: model.num_heads={num_heads} must divide {width}")
      head_dim = width // num_heads
    options = dataclasses.replace(spec.options, head_dim=head_dim, init="fan_in_uniform",
                                  use_bias=False)
    self.attn = registry.build(spec.name, options, d_model=width, num_heads=num_heads,
                               causal=False, rngs=rngs,
                               train_length=None if train_length is None else train_length + 1)

  @staticmethod
  def tokens(x_BxLxd, y_BxLxo, xq_Bxd):
    """``[B, L+1, d+o]``: context tokens (x, y) then the query (x_q, 0)."""
    ctx = jnp.concatenate([x_BxLxd, y_BxLxo], axis=-1)
    q = jnp.concatenate([xq_Bxd, jnp.zeros((xq_Bxd.shape[0], y_BxLxo.shape[-1]),
                                           x_BxLxd.dtype)], -1)
    return jnp.concatenate([ctx, q[:, None, :]], axis=1)

  def __call__(self, x_BxLxd, y_BxLxo, xq_Bxd, context_mask=None):
    """Predictions ``[B, n_out]`` for the query from L context pairs.

    ``context_mask`` (bool ``[B, L]``) drops context pairs; the query never attends to itself.
    """
    z = self.tokens(x_BxLxd, y_BxLxo, xq_Bxd)
    b, l = x_BxLxd.shape[:2]
    ctx_mask = jnp.ones((b, l), bool) if context_mask is None else context_mask
    if self.normalization != "softmax":
      return self._linear(z, ctx_mask)
    mask = jnp.concatenate([ctx_mask, jnp.zeros((b, 1), bool)], axis=1)
    out = self.attn(z, mask)
    return out[:, -1, self.d:].astype(jnp.float32)

  def _linear(self, z_BxLxD, ctx_mask_BxL):
    """Linear attention of the query over the context with the same projections: weights
    ``q.k / sqrt(D)`` divided by the training length (``linear_fixed``) or by the number of
    context pairs (``linear_actual``) instead of a softmax
    (experiments/icl_regression/README.md §1.7)."""
    h, dh = self.attn.num_heads, self.attn.head_dim
    z = z_BxLxD.astype(jnp.float32)
    ctx, zq = z[:, :-1], z[:, -1]
    q_BxHxc = (zq @ self.attn.wq.kernel[...]).reshape(-1, h, dh)
    k_BxLxHxc = (ctx @ self.attn.wk.kernel[...]).reshape(*ctx.shape[:2], h, dh)
    v_BxLxHxc = (ctx @ self.attn.wv.kernel[...]).reshape(*ctx.shape[:2], h, dh)
    scores = jnp.einsum("bhc,blhc->bhl", q_BxHxc, k_BxLxHxc) / jnp.sqrt(dh)
    scores = jnp.where(ctx_mask_BxL[:, None, :], scores, 0.0)
    if self.normalization == "linear_fixed":
      denom = jnp.full((z.shape[0], 1, 1), float(self.train_length))
    else:
      denom = jnp.maximum(jnp.sum(ctx_mask_BxL, axis=1), 1)[:, None, None].astype(jnp.float32)
    o = jnp.einsum("bhl,blhc->bhc", scores / denom, v_BxLxHxc).reshape(z.shape[0], h * dh)
    return (o @ self.attn.wo.kernel[...])[:, self.d:]


class PromptRegressionModel(nnx.Module):
  """Garg et al.'s GPT-2-style in-context learner with any attention variant.

  ``model(xs_BxKxd, ys_BxK)`` -> predictions ``[B, K]`` of ``y_k`` from ``x_1, y_1, ...,
  x_k`` (read at the x positions of the interleaved prompt).
  """

  def __init__(self, d: int, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.d = d
    self.read_in = Dense(d, cfg.d_model, axes=(None, "embed"), rngs=rngs,
                         init=nnx.initializers.normal(cfg.init_std), use_bias=True)
    self.pos_embed = make_param(rngs, nnx.initializers.normal(cfg.init_std),
                                (cfg.max_len, cfg.d_model), (None, "embed"))
    self.stack = DecoderStack(cfg, rngs=rngs)
    self.read_out = Dense(cfg.d_model, 1, axes=("embed", None), rngs=rngs,
                          init=nnx.initializers.normal(cfg.init_std), use_bias=True)
    self.dtype = jnp.dtype(cfg.dtype)

  @staticmethod
  def interleave(xs_BxKxd, ys_BxK):
    """``[B, 2K, d]``: x_1, (y_1, 0, ..., 0), x_2, ..."""
    b, k, d = xs_BxKxd.shape
    ys = jnp.zeros_like(xs_BxKxd).at[..., 0].set(ys_BxK)
    return jnp.stack([xs_BxKxd, ys], axis=2).reshape(b, 2 * k, d)

  def __call__(self, xs_BxKxd, ys_BxK, *, deterministic=True):
    z = self.interleave(xs_BxKxd, ys_BxK)
    b, l, _ = z.shape
    h = self.read_in(z, self.dtype) + self.pos_embed[:l].astype(self.dtype)
    positions = kernels.default_positions(b, l)
    h = self.stack(h, positions=positions, deterministic=deterministic)
    return self.read_out(h[:, ::2], self.dtype)[..., 0].astype(jnp.float32)
