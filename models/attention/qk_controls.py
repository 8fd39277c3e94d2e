"""Controls of "Deconstructing Attention" (arXiv 2510.11602, Section 3) whose queries and keys
do not come from the layer's input: values are ``x W_v`` as in ``standard``, queries and keys
are ``src W_q`` and ``src W_k`` of another source ``src`` (models/attention/README.md §9.4).

* ``random_seq_qk`` (paper: RndEmbQK): src = the hidden state, at this layer, of a fixed random
  token sequence run through the same model (:func:`random_tokens`).
* ``fixed_text_qk`` (paper: FixedSeqQK): the same with a fixed natural-text sequence, the bytes
  of the Zen of Python (:func:`text_tokens`).
* ``static_embedding_qk`` (paper: StaticEmbQK): src = the static embeddings of the input tokens
  (embedding-table rows, before positions and blocks).

Parameters, projections, masking, kernels and KV cache are ``standard``'s; the source arrives as
``symbols [B, L, d]`` (one row per token of x, batch 1 broadcasts), which
:class:`~attnlab.models.transformer.DecoderStack` provides for the layers whose ``qk_source``
says so, after the layer's own pre-attention LayerNorm. Standalone (``symbols=None``: the
registry tests, models without token embeddings) the sources are built here: the fixed-sequence
controls embed their token at each position with a fixed seeded N(0, 1) byte table (no
parameters, nothing depends on x); ``static_embedding_qk`` uses the layer's own input token by
token, so standalone it computes ``standard``'s math.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.models.attention import common, kernels, standard
from attnlab.models.attention.controls import StandardShapedLayer
from attnlab.models.attention.registry import register
from attnlab.models.attention.standard import StandardOptions

RANDOM_PERIOD = 4096
"""``random_tokens`` repeats after this many tokens (so every prefix of it is the same)."""

STANDALONE_VOCAB = 256
"""Vocabulary of the standalone sources' fixed byte table."""

TEXT_TABLE_SEED = 0
"""Seed of ``fixed_text_qk``'s standalone byte table."""


@functools.lru_cache(maxsize=None)
def zen_bytes() -> bytes:
  """The Zen of Python (856 bytes): ROT13-decoded ``this.s``; the import's print is swallowed."""
  with contextlib.redirect_stdout(io.StringIO()):
    import this  # pylint: disable=import-outside-toplevel
  return codecs.decode(this.s, "rot_13").encode("utf-8")


@functools.lru_cache(maxsize=None)
def _random_period(seed: int, vocab_size: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab_size, RANDOM_PERIOD).astype(np.int32)


def random_tokens(seed: int, vocab_size: int, length: int) -> np.ndarray:
  """int32 ``[length]``: uniform random tokens from ``default_rng(seed)``, period 4096."""
  return _random_period(seed, vocab_size)[np.arange(length) % RANDOM_PERIOD]


def text_tokens(vocab_size: int, length: int) -> np.ndarray:
  """int32 ``[length]``: the bytes of :func:`zen_bytes` (repeated), modulo ``vocab_size``."""
  text = np.frombuffer(zen_bytes(), np.uint8).astype(np.int32)
  return text[np.arange(length) % len(text)] % vocab_size


def standalone_source(tokens, positions, d_model: int, seed: int, dtype):
  """``[B, L, d]``: row ``E[tokens[pos % len(tokens)]]`` of a fixed N(0, 1) table
  ``E [256, d]`` (``jax.random.key(seed)``) for every position: the standalone query/key source
  of the fixed-sequence controls."""
  table = jax.random.normal(jax.random.key(seed), (STANDALONE_VOCAB, d_model), jnp.float32)
  toks = jnp.asarray(np.asarray(tokens) % STANDALONE_VOCAB)[positions % len(tokens)]
  return jnp.take(table, toks, axis=0).astype(dtype)


@dataclasses.dataclass(frozen=True)
class RandomSeqQKOptions(StandardOptions):
  """Options of ``random_seq_qk``: ``standard``'s plus the seed of the fixed random sequence.

  Attributes:
    qk_seed: seed of :func:`random_tokens` (and of the standalone byte table); fixed, not the
      run's seed, so every seed of a study reads the same sequence.
  """

  qk_seed: int = 0


@dataclasses.dataclass(frozen=True)
class FixedTextQKOptions(StandardOptions):
  """Options of ``fixed_text_qk``: ``standard``'s."""


@dataclasses.dataclass(frozen=True)
class StaticEmbeddingQKOptions(StandardOptions):
  """Options of ``static_embedding_qk``: ``standard``'s."""


def project_qk(params: dict, src, o, *, num_heads: int, positions):
  """q ``[B, L, H, dh]`` and k ``[B, L, Hkv, dh]`` from the source (RoPE if asked)."""
  b, l, d = src.shape
  dh = o.head_dim or d // num_heads
  q = common.dense(params["wq"], src, o.compute_dtype).reshape(b, l, num_heads, dh)
  k = common.dense(params["wk"], src, o.compute_dtype).reshape(b, l, -1, dh)
  if o.rope:
    q = common.apply_rope(q, positions, o.rope_theta)
    k = common.apply_rope(k, positions, o.rope_theta)
  return q, k


def qk_logits(params: dict, src, *, num_heads: int, options, positions=None):
  """Float32 scores ``[B, H, L, L]`` (``q.k / sqrt(dh)``) of a source ``src [B, L, d]``: what
  the attention weights of these controls are a softmax of (before masking)."""
  positions = common.resolve_positions(src, positions, None)
  q, k = project_qk(params, src, options, num_heads=num_heads, positions=positions)
  return kernels.dot_product_logits(q, k, 1.0 / np.sqrt(q.shape[-1]))


def _check_source(src, x):
  if getattr(src, "ndim", None) != 3 or src.shape[1:] != x.shape[1:] or (
      src.shape[0] not in (1, x.shape[0])):
    raise ValueError(f"the query/key source (symbols) must be [batch or 1, length, d_model] = "
                     f"{tuple(x.shape)}, got shape {tuple(getattr(src, 'shape', ()))}")
  return jnp.broadcast_to(src, x.shape)


def qk_source_attention(params: dict, x, src, *, num_heads: int, options, causal=False,
                        mask=None, positions=None, cache=None):
  """Softmax attention with queries/keys from ``src [B or 1, L, d]`` and values from x.

  Otherwise exactly ``standard_apply`` (GQA, RoPE, the three kernels, the KV cache): with
  ``src = x`` it is ``standard``.
  """
  o = options
  src = _check_source(src, x)
  b, l, d = x.shape
  positions = common.resolve_positions(x, positions, cache)
  q, k = project_qk(params, src, o, num_heads=num_heads, positions=positions)
  v = common.dense(params["wv"], x, o.compute_dtype).reshape(b, l, k.shape[2], q.shape[-1])
  return standard.attend_and_project(params, q, k, v, o, mask=mask, causal=causal,
                                     positions=positions, cache=cache)


_ARGS_DOC = """
  Args:
    params: ``standard``'s ``{'wq', 'wk', 'wv', 'wo'}``.
    x: ``[B, L, d]``, the values' input.
    num_heads: query heads.
    options: the variant's options (None: the defaults, computing in x's dtype).
    causal, mask, positions, cache: as ``standard_apply``.
    symbols: the query/key source ``[B or 1, L, d]`` for x's tokens (a model passes it); None:
      the standalone source described in the module docstring.

  Returns:
    y ``[B, L, d]`` (and the updated cache when one was given).
"""


def random_seq_qk_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                        mask=None, positions=None, cache=None, symbols=None):
  o = common.options_or_default(options, RandomSeqQKOptions, x)
  if symbols is None:
    pos = common.resolve_positions(x, positions, cache)
    symbols = standalone_source(random_tokens(o.qk_seed, STANDALONE_VOCAB, RANDOM_PERIOD), pos,
                                x.shape[-1], o.qk_seed, o.compute_dtype)
  return qk_source_attention(params, x, symbols, num_heads=num_heads, options=o, causal=causal,
                             mask=mask, positions=positions, cache=cache)


def fixed_text_qk_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                        mask=None, positions=None, cache=None, symbols=None):
  o = common.options_or_default(options, FixedTextQKOptions, x)
  if symbols is None:
    pos = common.resolve_positions(x, positions, cache)
    text = text_tokens(STANDALONE_VOCAB, len(zen_bytes()))
    symbols = standalone_source(text, pos, x.shape[-1], TEXT_TABLE_SEED, o.compute_dtype)
  return qk_source_attention(params, x, symbols, num_heads=num_heads, options=o, causal=causal,
                             mask=mask, positions=positions, cache=cache)


def static_embedding_qk_apply(params: dict, x, *, num_heads: int, options=None, causal=False,
                              mask=None, positions=None, cache=None, symbols=None):
  o = common.options_or_default(options, StaticEmbeddingQKOptions, x)
  return qk_source_attention(params, x, x if symbols is None else symbols, num_heads=num_heads,
                             options=o, causal=causal, mask=mask, positions=positions,
                             cache=cache)


random_seq_qk_apply.__doc__ = ("Queries/keys from a fixed random token sequence's hidden state "
                               "(paper: RndEmbQK); values from x.\n" + _ARGS_DOC)
fixed_text_qk_apply.__doc__ = ("Queries/keys from a fixed text's hidden state (paper: "
                               "FixedSeqQK); values from x.\n" + _ARGS_DOC)
static_embedding_qk_apply.__doc__ = ("Queries/keys from the input tokens' static embeddings "
                                     "(paper: StaticEmbQK); values from x.\n" + _ARGS_DOC)


@register("random_seq_qk")
class RandomSeqQKAttention(StandardShapedLayer):
  """Queries and keys from a fixed random token sequence run through the model (paper:
  RndEmbQK; models/attention/README.md §9.4). ``standard``'s parameters and cache."""

  Options = RandomSeqQKOptions
  apply = staticmethod(random_seq_qk_apply)
  qk_source = "fixed_stream"

  def fixed_tokens(self, length: int, vocab_size: int) -> np.ndarray:
    """:func:`random_tokens` with this layer's ``qk_seed``."""
    return random_tokens(self.options.qk_seed, vocab_size, length)


@register("fixed_text_qk")
class FixedTextQKAttention(StandardShapedLayer):
  """Queries and keys from a fixed natural text (the Zen of Python's bytes) run through the
  model (paper: FixedSeqQK; models/attention/README.md §9.4). ``standard``'s parameters."""

  Options = FixedTextQKOptions
  apply = staticmethod(fixed_text_qk_apply)
  qk_source = "fixed_stream"

  def fixed_tokens(self, length: int, vocab_size: int) -> np.ndarray:
    """:func:`text_tokens`."""
    return text_tokens(vocab_size, length)


@register("static_embedding_qk")
class StaticEmbeddingQKAttention(StandardShapedLayer):
  """Queries and keys from the static embeddings of the input tokens (paper: StaticEmbQK;
  models/attention/README.md §9.4). ``standard``'s parameters and cache."""

  Options = StaticEmbeddingQKOptions
  apply = staticmethod(static_embedding_qk_apply)
  qk_source = "embeddings"

