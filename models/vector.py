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

POOLS = ("none", "mean")


class VectorSequenceModel(nnx.Module):
  """``model(x_BxLxI)`` -> ``[B, L, O]`` (``pool='none'``) or ``[B, O]`` (``pool='mean'``).

  Args:
    cfg: the stack's :class:`TransformerConfig` (``vocab_size`` is unused; ``positions``
      ``learned`` adds a learned table, ``rope``/``none`` add nothing here).
    in_dim: width of the input vectors, read in by a learned linear map with bias; None feeds
      the inputs to the stack as they are (they must then be ``d_model`` wide).
    out_dim: width of a learned linear read-out with bias; None returns the stack's output.
    pool: ``none`` (per position) or ``mean`` (the mean over positions, before the read-out).
    rngs: ``nnx.Rngs`` with a ``params`` stream.
  """

  def __init__(self, cfg: TransformerConfig, *, in_dim: int | None = None,
               out_dim: int | None = None, pool: str = "none", rngs: nnx.Rngs):
    if pool not in POOLS:
      raise ValueError(f"pool={pool!r} is not allowed; choose one of {list(POOLS)}")
    self.cfg, self.pool = cfg, pool
    init = nnx.initializers.normal(cfg.init_std)
    self.read_in = (Dense(in_dim, cfg.d_model, axes=(None, "embed"), rngs=rngs, init=init,
                          use_bias=True) if in_dim else None)
    self.pos_embed = (make_param(rngs, init, (cfg.max_len, cfg.d_model), (None, "embed"))
                      if cfg.positions == "learned" else None)
    self.stack = DecoderStack(cfg, rngs=rngs)
    self.read_out = (Dense(cfg.d_model, out_dim, axes=("embed", None), rngs=rngs, init=init,
                           use_bias=True) if out_dim else None)

  def __call__(self, x_BxLxI, *, deterministic: bool = True):
    dtype = jnp.dtype(self.cfg.dtype)
    b, l, _ = x_BxLxI.shape
    h = self.read_in(x_BxLxI, dtype) if self.read_in is not None else x_BxLxI.astype(dtype)
    if self.pos_embed is not None:
      h = h + self.pos_embed[:l].astype(dtype)
    h = self.stack(h, positions=kernels.default_positions(b, l), deterministic=deterministic)
    if self.pool == "mean":
      h = jnp.mean(h, axis=1)
    out = self.read_out(h, dtype) if self.read_out is not None else h
    return out.astype(jnp.float32)
