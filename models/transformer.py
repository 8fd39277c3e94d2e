"""The shared transformer: pre-LayerNorm decoder blocks with per-layer attention choice.

* :class:`TransformerConfig` -- frozen, typed; the only thing models read (never ml_collections).
* :class:`DecoderStack` -- blocks + final norm on embeddings ``h_BxLxD``.
* :class:`LanguageModel` -- token embedding, positions (learned, RoPE, none), stack, tied head.

Layers whose queries and keys come from elsewhere (``qk_source`` ``embeddings`` or
``fixed_stream``: the qk-controls, models/attention/README.md §9.4) get that source from the
model: :class:`LanguageModel` embeds the input tokens and the fixed token sequence, and
:class:`DecoderStack` runs the fixed sequence (batch 1, length ``max_len``) through the same
blocks next to the input, handing each such layer the source at its own input, after its
pre-attention LayerNorm, as ``symbols``.

A block is ``h = x + Attn(LN1(x))``, ``out = h + MLP(LN2(h))`` with context broadcasting
(``cb_position``) as a block option: ``mlp_out`` applies CB to the MLP branch before the
residual add (the paper's placement), ``post_residual`` to the block output.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import broadcast
from attnlab.models.checks import check_choice
from attnlab.models.layers import MLP, Embed, LayerNorm
from attnlab.models.params import make_param

POSITIONS = ("learned", "rope", "none")
CB_POSITIONS = ("none", "mlp_out", "post_residual")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and attention choice of the shared transformer.

  Attributes:
    vocab_size: LM vocabulary (256 for bytes).
    d_model, num_layers, num_heads, d_ff: sizes.
    max_len: longest sequence (learned positions; symbol tables).
    train_length: the training sequence length, for attention options that scale with it
      (``adaptive_filter``'s ``ref_length``); default ``max_len``.
    positions: ``learned``, ``rope`` or ``none``.
    attention: the :class:`~attnlab.models.attention.AttentionSpec` (variant, layout, typed
      options) of the layers; a Hybrid layout puts ``standard`` in every second layer.
    causal: causal attention (LMs).
    cb_position: context broadcasting as a block option: ``none``, ``mlp_out``,
      ``post_residual``.
    dropout: residual dropout rate.
    dtype: compute dtype (parameters are float32).
    init_std: std of weights; output projections use ``init_std / sqrt(2 * num_layers)``.
    use_mlp, use_norm, use_residual: switch parts of the block off (attention-only models).
    final_norm: LayerNorm after the last block.

  The model owns four attention fields and sets them on every layer's options: ``dtype``,
  ``init_std``, ``out_init_std`` and ``rope`` (``positions == 'rope'``).
  """

  vocab_size: int = 256
  d_model: int = 256
  num_layers: int = 6
  num_heads: int = 8
  d_ff: int = 1024
  max_len: int = 256
  train_length: int | None = None
  positions: str = "learned"
  attention: attention.AttentionSpec = dataclasses.field(default_factory=attention.AttentionSpec)
  causal: bool = True
  cb_position: str = "none"
  dropout: float = 0.0
  dtype: str = "float32"
  init_std: float = 0.02
  use_mlp: bool = True
  use_norm: bool = True
  use_residual: bool = True
  final_norm: bool = True

  def __post_init__(self):
    check_choice("model.positions", self.positions, POSITIONS)
    check_choice("model.cb_position", self.cb_position, CB_POSITIONS)
    if not isinstance(self.attention, attention.AttentionSpec):
      raise TypeError("TransformerConfig.attention must be an AttentionSpec "
                      "(attnlab.models.attention.spec(name, layout, **options))")
    attention.registry.check_sizes(self.d_model, self.num_heads, self.attention.options.head_dim)
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout={self.dropout} must be in [0, 1)")
    for i in range(self.num_layers):  # options type-check before anything compiles
      self.layer_attention(i)

  def layer_attention(self, i: int) -> tuple[str, attention.AttentionOptions]:
    """The variant and options of layer ``i``, with the model-owned fields set."""
    name, options = self.attention.layer(i)
    return name, dataclasses.replace(
        options, dtype=self.dtype, init_std=self.init_std,
        out_init_std=self.init_std / math.sqrt(2 * self.num_layers),
        rope=self.positions == "rope")


class Block(nnx.Module):
  """One pre-LayerNorm decoder block with a pluggable attention layer."""

  def __init__(self, cfg: TransformerConfig, layer: int, *, rngs: nnx.Rngs):
    self.cfg = cfg
    name, options = cfg.layer_attention(layer)
    self.attn = attention.build(name, options, d_model=cfg.d_model, num_heads=cfg.num_heads,
                                causal=cfg.causal, rngs=rngs,
                                train_length=cfg.train_length or cfg.max_len)
    self.uses_symbols = type(self.attn).uses_symbols
    self.ln1 = LayerNorm(cfg.d_model) if cfg.use_norm else None
    self.ln2 = LayerNorm(cfg.d_model) if (cfg.use_norm and cfg.use_mlp) else None
    self.mlp = (MLP(cfg.d_model, cfg.d_ff, rngs=rngs, init_std=cfg.init_std,
                    out_init_std=cfg.init_std / math.sqrt(2 * cfg.num_layers),
                    dtype=jnp.dtype(cfg.dtype)) if cfg.use_mlp else None)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None

  def attn_input(self, x):
    """What the attention layer reads: ``LN1(x)`` (or x without norms)."""
    return self.ln1(x) if self.ln1 else x

  def _drop(self, x, deterministic):
    return x if self.dropout is None else self.dropout(x, deterministic=deterministic)

  def __call__(self, x, mask=None, *, positions=None, symbols=None, cache=None,
               deterministic=True):
    cfg = self.cfg
    a = self.attn(self.attn_input(x), mask, positions=positions, symbols=symbols,
                  cache=None if cache is None else cache["attn"])
    if cache is not None:
      a, attn_cache = a
    a = self._drop(a, deterministic)
    h = x + a if cfg.use_residual else a
    new_cache = None if cache is None else {"attn": attn_cache}
    if self.mlp is not None:
      m = self._drop(self.mlp(self.ln2(h) if self.ln2 else h), deterministic)
      if cfg.cb_position == "mlp_out":
        m = self._cb(m, mask, cache, new_cache, "cb_mlp")
      h = h + m if cfg.use_residual else m
    if cfg.cb_position == "post_residual":
      h = self._cb(h, mask, cache, new_cache, "cb_out")
    return h if cache is None else (h, new_cache)

  def _cb(self, x, mask, cache, new_cache, key):
    """Context broadcasting; when decoding, reads and advances the running (sum, count)."""
    prefix = None
    if cache is not None:
      prefix = cache[key]
      new_cache[key] = broadcast.advance_prefix(prefix, x, mask)
    return broadcast.context_broadcast(x, mask, self.cfg.causal, prefix=prefix)

  def init_cache(self, batch: int, max_length: int) -> dict:
    """Empty decoding cache of this block (attention and any context-broadcast prefix)."""
    cache = {"attn": self.attn.init_cache(batch, max_length)}
    if self.cfg.cb_position == "mlp_out" and self.mlp is not None:
      cache["cb_mlp"] = broadcast.init_prefix(batch, self.cfg.d_model)
    if self.cfg.cb_position == "post_residual":
      cache["cb_out"] = broadcast.init_prefix(batch, self.cfg.d_model)
    return cache


class DecoderStack(nnx.Module):
  """Blocks and the final norm; owns the symbol retriever when a layer needs symbols."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.num_layers)])
    self.final_ln = LayerNorm(cfg.d_model) if (cfg.use_norm and cfg.final_norm) else None
    symbol_layers = [b.attn for b in self.blocks if b.uses_symbols]
    self.retriever = (type(symbol_layers[0]).make_retriever(
        d_model=cfg.d_model, max_len=cfg.max_len, options=symbol_layers[0].options, rngs=rngs)
        if symbol_layers else None)
    for layer in symbol_layers:  # the shared retriever replaces each layer's own one
      layer.detach_retriever()

  def qk_sources(self, skip_layers: tuple[int, ...] = ()) -> set[str]:
    """The ``qk_source`` kinds other than ``input`` of the blocks that run."""
    return {b.attn.qk_source for i, b in enumerate(self.blocks)
            if i not in skip_layers} - {"input"}

  def fixed_stream_tokens(self) -> np.ndarray:
    """The fixed token sequence (int ``[max_len]``) of the ``fixed_stream`` layers; all such
    layers of one stack must read the same sequence."""
    seqs = [b.attn.fixed_tokens(self.cfg.max_len, self.cfg.vocab_size) for b in self.blocks
            if b.attn.qk_source == "fixed_stream"]
    if any(not np.array_equal(s, seqs[0]) for s in seqs[1:]):
      raise ValueError("the fixed_stream layers of one stack read different token sequences")
    return seqs[0]

  def __call__(self, h, mask=None, *, positions=None, cache=None, deterministic=True,
               skip_layers: tuple[int, ...] = (), qk_inputs: dict | None = None):
    """h ``[B, L, D]`` -> ``[B, L, D]``; with a cache (list per layer) returns (h, cache).

    ``skip_layers`` deletes those blocks at evaluation (the "Skip" configuration).
    ``qk_inputs`` holds the query/key sources of the qk-controls: ``embeddings`` (the input
    tokens' static embeddings ``[B, L, D]``) and ``fixed_stream`` (the embedded fixed sequence
    ``[1, max_len, D]``, run here through the same blocks; a layer reads its state at the
    tokens' positions). Without them those layers use their standalone sources.
    """
    qk_inputs = qk_inputs or {}
    stream = qk_inputs.get("fixed_stream")
    tok_pos = positions
    if stream is not None and tok_pos is None:
      tok_pos = attention.kernels.default_positions(h.shape[0], h.shape[1])
    new_cache = []
    for i, block in enumerate(self.blocks):
      if i in skip_layers:
        new_cache.append(None if cache is None else cache[i])
        continue
      symbols = self._symbols(block, h, positions, mask, qk_inputs.get("embeddings"), stream,
                              tok_pos)
      if stream is not None:  # the fixed sequence's own pass: its layers read themselves
        stream = block(stream, symbols=self._symbols(block, stream, None, None, None, stream,
                                                     None), deterministic=deterministic)
      out = block(h, mask, positions=positions, symbols=symbols,
                  cache=None if cache is None else cache[i], deterministic=deterministic)
      if cache is not None:
        out, c = out
        new_cache.append(c)
      h = out
    if self.final_ln is not None:
      h = self.final_ln(h)
    return h if cache is None else (h, new_cache)

  def _symbols(self, block, h, positions, mask, embeddings, stream, tok_pos):
    """What ``block``'s attention gets as ``symbols``: the relational retriever's symbols, or
    the qk-controls' source (None: the layer's standalone source)."""
    if block.uses_symbols:
      return self.retriever(h, positions=positions, mask=mask)
    kind = block.attn.qk_source
    if kind == "embeddings" and embeddings is not None:
      return block.attn_input(embeddings)
    if kind == "fixed_stream" and stream is not None:
      src = block.attn_input(stream)
      if tok_pos is None:  # the stream itself
        return src
      return jnp.take(src[0], tok_pos, axis=0, mode="clip")
    return None

  def init_cache(self, batch: int, max_length: int) -> list:
    """Empty decoding caches, one per block, for ``batch`` sequences of up to ``max_length``."""
    return [b.init_cache(batch, max_length) for b in self.blocks]


class LanguageModel(nnx.Module):
  """Decoder-only LM: embeddings, positions, :class:`DecoderStack`, tied output head.

  Call ``model(tokens_BxL, mask=None)`` -> float32 logits ``[B, L, vocab]``. For decoding,
  ``cache = model.init_cache(B, max_len)`` then ``logits, cache = model(tokens, cache=cache)``
  token by token (or any chunk length).
  """

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = Embed(cfg.vocab_size, cfg.d_model, rngs=rngs, init_std=cfg.init_std)
    self.pos_embed = (make_param(rngs, nnx.initializers.normal(cfg.init_std),
                                        (cfg.max_len, cfg.d_model), (None, "embed"))
                      if cfg.positions == "learned" else None)
    self.stack = DecoderStack(cfg, rngs=rngs)

  def __call__(self, tokens_BxL, mask=None, *, positions=None, cache=None, deterministic=True,
               skip_layers: tuple[int, ...] = ()):
    b, l = tokens_BxL.shape
    if positions is None:
      offset = 0 if cache is None else cache[0]["attn"]["index"]
      positions = attention.kernels.default_positions(b, l, offset)
    dtype = jnp.dtype(self.cfg.dtype)
    h = self.embed(tokens_BxL, dtype)
    qk_inputs = self._qk_inputs(h, skip_layers)
    if self.pos_embed is not None:
      h = h + jnp.take(self.pos_embed[...], positions, axis=0).astype(h.dtype)
    out = self.stack(h, mask, positions=positions, cache=cache, deterministic=deterministic,
                     skip_layers=skip_layers, qk_inputs=qk_inputs)
    if cache is None:
      return self.embed.attend(out)
    h, cache = out
    return self.embed.attend(h), cache

  def _qk_inputs(self, tok_emb, skip_layers) -> dict:
    """The qk-controls' sources: the static token embeddings ``tok_emb [B, L, D]`` and the
    fixed sequence embedded like an input (token and position embeddings, positions
    ``0 .. max_len-1``), ``[1, max_len, D]``; only those some running layer reads."""
    kinds = self.stack.qk_sources(skip_layers)
    out = {}
    if "embeddings" in kinds:
      out["embeddings"] = tok_emb
    if "fixed_stream" in kinds:
      tokens = jnp.asarray(self.stack.fixed_stream_tokens())[None]
      stream = self.embed(tokens, tok_emb.dtype)
      if self.pos_embed is not None:
        stream = stream + self.pos_embed[...][None, :tokens.shape[1]].astype(stream.dtype)
      out["fixed_stream"] = stream
    return out

  def init_cache(self, batch: int, max_length: int | None = None) -> list:
    """Per-layer decoding caches for ``batch`` sequences of up to ``max_length`` tokens."""
    return self.stack.init_cache(batch, max_length or self.cfg.max_len)
