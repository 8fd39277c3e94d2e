"""A transformer over continuous token vectors (no vocabulary): read-in, positions,
:class:`~attnlab.models.transformer.DecoderStack`, optional pooling and read-out.

Used by the tasks whose tokens are vectors (experiments/match_to_sample/README.md §1,
experiments/afa_spiral/README.md §1).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import kernels
from attnlab.models.params import Dense, make_param
from attnlab.models.transformer import DecoderStack, TransformerConfig

POOLS = ("none", "mean", "candidates", "compare")


class VectorSequenceModel(nnx.Module):
  """``model(x_BxLxI)`` -> ``[B, L, O]`` (``pool='none'``), ``[B, O]`` (``pool='mean'``) or
  ``[B, G - 1]`` (``pool='candidates'``).

  Args:
    cfg: the stack's :class:`TransformerConfig` (``vocab_size`` is unused; ``positions``
      ``learned`` adds a learned table, ``rope``/``none`` add nothing here).
    in_dim: width of the input vectors, read in by a learned linear map with bias; None feeds
      the inputs to the stack as they are (they must then be ``d_model`` wide).
    out_dim: width of a learned linear read-out with bias; None returns the stack's output.
    pool: ``none`` (per position), ``mean`` (the mean over positions, before the read-out) or
      ``candidates``: the sequence is ``G`` consecutive groups of ``group_size`` tokens, the
      first the sample and the others candidates; each candidate group's mean is scored by the
      read-out (which must then have ``out_dim=1``), giving one logit per candidate (the same
      weights score every candidate, so no candidate slot is favoured by construction);
      ``compare``: as ``candidates``, but each candidate is scored by a shared one-hidden-layer
      ReLU MLP (width ``d_model``) of ``[sample mean, candidate mean, their product]``.
    group_size: tokens per group for ``pool='candidates'`` and ``segments``.
    segments: add learned group (sample, candidate 1, ...) and position-in-group embeddings
      (``group_size`` must be set), on top of ``cfg.positions``.
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  def __init__(self, cfg: TransformerConfig, *, in_dim: int | None = None,
               out_dim: int | None = None, pool: str = "none", group_size: int | None = None,
               segments: bool = False, rngs: nnx.Rngs):
    if pool not in POOLS:
      raise ValueError(f"pool={pool!r} is not allowed; choose one of {list(POOLS)}")
    grouped = pool in ("candidates", "compare")
    if (grouped or segments) and not group_size:
      raise ValueError("pool='candidates' and segments need group_size")
    if grouped and out_dim != 1:
      raise ValueError(f"pool={pool!r} scores each candidate: out_dim must be 1, got {out_dim}")
    self.cfg, self.pool, self.group_size = cfg, pool, group_size
    init = nnx.initializers.normal(cfg.init_std)
    self.read_in = (Dense(in_dim, cfg.d_model, axes=(None, "embed"), rngs=rngs, init=init,
                          use_bias=True) if in_dim else None)
    self.pos_embed = (make_param(rngs, init, (cfg.max_len, cfg.d_model), (None, "embed"))
                      if cfg.positions == "learned" else None)
    n_groups = -(-cfg.max_len // group_size) if segments else 0
    self.group_embed = (make_param(rngs, init, (n_groups, cfg.d_model), (None, "embed"))
                        if segments else None)
    self.slot_embed = (make_param(rngs, init, (group_size, cfg.d_model), (None, "embed"))
                       if segments else None)
    self.stack = DecoderStack(cfg, rngs=rngs)
    self.compare = (Dense(3 * cfg.d_model, cfg.d_model, axes=(None, "embed"), rngs=rngs,
                          init=init, use_bias=True) if pool == "compare" else None)
    self.read_out = (Dense(cfg.d_model, out_dim, axes=("embed", None), rngs=rngs, init=init,
                           use_bias=True) if out_dim else None)

  def __call__(self, x_BxLxI, *, deterministic: bool = True):
    dtype = jnp.dtype(self.cfg.dtype)
    b, l, _ = x_BxLxI.shape
    h = self.read_in(x_BxLxI, dtype) if self.read_in is not None else x_BxLxI.astype(dtype)
    if self.pos_embed is not None:
      h = h + self.pos_embed[:l].astype(dtype)
    if self.group_embed is not None:
      pos = jnp.arange(l)
      h = h + (self.group_embed[pos // self.group_size]
               + self.slot_embed[pos % self.group_size]).astype(dtype)
    h = self.stack(h, positions=kernels.default_positions(b, l), deterministic=deterministic)
    if self.pool == "mean":
      h = jnp.mean(h, axis=1)
    elif self.pool in ("candidates", "compare"):
      if l % self.group_size:
        raise ValueError(f"length {l} is not a multiple of group_size={self.group_size}")
      g = jnp.mean(h.reshape(b, l // self.group_size, self.group_size, -1), axis=2)
      h = g[:, 1:]  # [B, G - 1, D]
      if self.compare is not None:
        src = jnp.broadcast_to(g[:, :1], h.shape)
        h = nnx.relu(self.compare(jnp.concatenate([src, h, src * h], -1), dtype))
      return self.read_out(h, dtype)[..., 0].astype(jnp.float32)  # [B, G - 1]
    out = self.read_out(h, dtype) if self.read_out is not None else h
    return out.astype(jnp.float32)
