"""Pieces every attention variant shares: options, the layer base class, RoPE, caches.

Parameters are built with :mod:`attnlab.models.params` (float32 ``nnx.Param`` with logical axis
names); the training code maps those names to mesh axes, so layers never see a mesh.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention import kernels
from attnlab.models.checks import check_choice
from attnlab.models.params import Dense, dense, make_param, params_of  # noqa: F401

DTYPES = ("float32", "bfloat16", "float16", "float64")
INITS = ("normal", "fan_in_uniform")


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
  """Options every variant accepts; variants subclass this with their own fields.

  Attributes:
    impl: kernel, one of the variant's ``supported_impls`` (``xla``, ``chunked``, ``cudnn``).
    dtype: compute dtype of projections and attention inputs (parameters stay float32; logits,
      softmax and normalisers are float32 whatever this is).
    rope: rotary position embedding on queries and keys (interleaved pairs).
    rope_theta: RoPE base.
    q_chunk, k_chunk: chunk sizes of the chunked kernel.
    init: ``normal`` (N(0, init_std), GPT-2 style) or ``fan_in_uniform`` (U(+-1/sqrt(fan_in)),
      PyTorch's Linear default, used by the in-context-regression model).
    init_std: std of the normal init of input projections.
    out_init_std: std of the output projection (default ``init_std``; the transformer passes
      ``init_std / sqrt(2 * num_layers)``).
    use_bias: biases on the projections.
    head_dim: per-head width (default ``d_model // num_heads``).
  """

  impl: str = "xla"
  dtype: str = "float32"
  rope: bool = False
  rope_theta: float = 10000.0
  q_chunk: int = kernels.DEFAULT_Q_CHUNK
  k_chunk: int = kernels.DEFAULT_K_CHUNK
  init: str = "normal"
  init_std: float = 0.02
  out_init_std: float | None = None
  use_bias: bool = False
  head_dim: int | None = None

  supported_impls: ClassVar[tuple[str, ...]] = ("xla", "chunked")

  def __post_init__(self):
    check_choice("attention.impl", self.impl, self.supported_impls)
    check_choice("attention.dtype", self.dtype, DTYPES)
    check_choice("attention.init", self.init, INITS)
    kernels.check_chunks(self.q_chunk, self.k_chunk)
    if self.head_dim is not None and self.head_dim <= 0:
      raise ValueError(f"head_dim must be positive, got {self.head_dim}")

  @property
  def compute_dtype(self):
    """``dtype`` as a ``jnp.dtype``: what the layer computes in."""
    return jnp.dtype(self.dtype)

  def for_model(self, *, train_length: int | None = None) -> "AttentionOptions":
    """These options with every data-length default filled in from the model.

    A variant whose math depends on the training length (``adaptive_filter``'s ``ref_length``)
    overrides this; the models call it with their training sequence length when they build a
    layer, so configs never have to repeat that length.
    """
    del train_length
    return self


# ----------------------------------------------------------------------------------------------
# Parameters (the builders live in :mod:`attnlab.models.params`; variants use them through here).
# ----------------------------------------------------------------------------------------------


def kernel_init(opts: AttentionOptions, fan_in: int, out: bool = False):
  """The variant-wide init of a dense kernel from the options."""
  if opts.init == "fan_in_uniform":
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
  std = opts.out_init_std if (out and opts.out_init_std is not None) else opts.init_std
  return nnx.initializers.normal(std)


# ----------------------------------------------------------------------------------------------
# Positions.
# ----------------------------------------------------------------------------------------------


def apply_rope(x, positions, theta: float = 10000.0):
  """Rotary embedding on interleaved pairs (2k, 2k+1); angles in float32.

  Args:
    x: ``[B, L, H, d]`` with even d.
    positions: int ``[B, L]``.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"RoPE needs an even head dimension, got {d}")
  inv_freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # [d/2]
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, d/2]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], d // 2, 2)
  x0, x1 = xf[..., 0], xf[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def resolve_positions(x, positions, cache):
  """Positions ``[B, L]``: given ones, else ``arange`` offset by the cache index."""
  if positions is not None:
    return positions.astype(jnp.int32)
  offset = 0 if cache is None else cache["index"]
  return kernels.default_positions(x.shape[0], x.shape[1], offset)


# ----------------------------------------------------------------------------------------------
# Key/value caches for incremental decoding.
# ----------------------------------------------------------------------------------------------


def init_kv_cache(batch: int, max_length: int, arrays: dict[str, tuple], dtype) -> dict:
  """A cache dict: ``arrays`` maps name -> per-token trailing shape; plus ``mask`` and ``index``.

  ``index`` counts the tokens written; ``mask[b, j]`` is True for written, real tokens.
  """
  cache = {name: jnp.zeros((batch, max_length, *shape), dtype) for name, shape in arrays.items()}
  cache["mask"] = jnp.zeros((batch, max_length), bool)
  cache["index"] = jnp.zeros((), jnp.int32)
  return cache


def update_kv_cache(cache: dict, new: dict[str, jax.Array], mask) -> tuple[dict, jax.Array]:
  """Write the new tokens' arrays at ``cache['index']``; returns (cache, key positions).

  Args:
    cache: from :func:`init_kv_cache`.
    new: name -> ``[B, T, ...]`` arrays for the T new tokens.
    mask: optional bool ``[B, T]`` for the new tokens.
  """
  idx = cache["index"]
  out = dict(cache)
  for name, value in new.items():
    out[name] = jax.lax.dynamic_update_slice_in_dim(cache[name], value.astype(cache[name].dtype),
                                                    idx, axis=1)
  b, t = next(iter(new.values())).shape[:2]
  new_mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
  out["mask"] = jax.lax.dynamic_update_slice_in_dim(cache["mask"], new_mask, idx, axis=1)
  out["index"] = idx + t
  k_pos = kernels.default_positions(b, cache["mask"].shape[1])
  return out, k_pos


def cached_keys(cache: dict | None, new: dict[str, jax.Array], mask, positions):
  """The one decoding path: what the new queries attend to.

  Args:
    cache: None (a full forward pass) or a cache from :func:`init_kv_cache`.
    new: name -> ``[B, T, ...]`` per-token arrays of the T new tokens (keys, values, ...).
    mask: optional bool ``[B, T]`` key mask of the new tokens.
    positions: the new tokens' positions as the variant's kernel reads them (None for the
      kernel's default ``arange``).

  Returns:
    ``(keys, key_valid, q_pos, k_pos, cache)``: without a cache, ``new``, ``mask`` and
    ``positions`` twice, and None; with one, the cache after writing the new tokens, its mask,
    ``positions``, the cache slots' positions ``0 .. Lmax-1`` and the updated cache.
  """
  if cache is None:
    return new, mask, positions, positions, None
  cache, k_pos = update_kv_cache(cache, new, mask)
  return cache, cache["mask"], positions, k_pos, cache


def with_cache(y, cache):
  """A layer's return value: ``y`` alone for a full pass, ``(y, cache)`` when decoding."""
  return y if cache is None else (y, cache)


# ----------------------------------------------------------------------------------------------
# The layer contract.
# ----------------------------------------------------------------------------------------------


def options_or_default(options, cls, x):
  """``options``, or for a bare pure-function call ``cls()`` computing in x's dtype."""
  if options is not None:
    return options
  name = jnp.dtype(x.dtype).name
  return cls(dtype=name) if name in DTYPES else cls()


def check_inputs(x, mask, d_model: int) -> None:
  """Clear errors for inputs a layer cannot take (instead of shape errors deep inside)."""
  if getattr(x, "ndim", None) != 3 or x.shape[-1] != d_model:
    raise ValueError(f"attention input x must be [batch, length, d_model={d_model}], got shape "
                     f"{getattr(x, 'shape', None)}")
  if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
    raise ValueError(f"attention mask must be a [batch, length] = {tuple(x.shape[:2])} key mask "
                     f"(True = real token), got shape {tuple(mask.shape)}; causal masking is the "
                     "layer's `causal` flag, not part of the mask")


class AttentionLayer(nnx.Module):
  """Base class of every registered attention layer: the contract the models rely on.

  A variant subclasses this, sets ``Options`` (a subclass of :class:`AttentionOptions`) and
  ``apply`` (its pure function, a ``staticmethod``), calls ``super().__init__`` and builds its
  parameters. Everything else has a default:

  * ``layer(x, mask=None, *, positions=None, cache=None, symbols=None)`` runs
    ``apply(self.params(), x, options=..., num_heads=..., causal=..., ...)``;
  * ``init_cache(batch, max_length)`` builds a decoding cache from :meth:`cache_arrays`;
  * ``uses_symbols`` / :meth:`make_retriever` / :meth:`detach_retriever`: a layer that reads
    symbols (``relational``) gets them from a retriever the stack builds once and shares;
  * ``is_control``: an ablation control of *Deconstructing Attention* (arXiv 2510.11602;
    models/attention/README.md §9) rather than an attention mechanism; studies that compare
    mechanisms (the in-context regression tables) leave controls out (``registry.mechanisms``);
  * ``heads_span_d_model``: the heads' outputs are concatenated to ``d_model`` without an output
    projection, so models must give each head ``d_model / num_heads`` features;
  * ``qk_source`` / :meth:`fixed_tokens`: where a model takes the layer's queries and keys from
    (the input, or the side inputs of the qk-controls, models/attention/README.md §9.4).

  The pure function has one signature for every variant::

    apply(params, x, *, num_heads, options=None, causal=False, mask=None, positions=None,
          cache=None, symbols=None) -> y | (y, cache)

  with ``x [B, L, d]``, ``mask`` an optional bool ``[B, L]`` key mask, ``positions`` optional int
  ``[B, L]``, ``options`` the variant's typed options (None: its defaults).
  """

  name: ClassVar[str] = ""
  Options: ClassVar[type] = AttentionOptions
  uses_symbols: ClassVar[bool] = False
  heads_span_d_model: ClassVar[bool] = False
  is_control: ClassVar[bool] = False
  qk_source: ClassVar[str] = "input"
  """Where queries and keys come from inside a model: ``input`` (the layer's input x), or, for
  the qk-controls (models/attention/README.md §9.4), ``embeddings`` (the static embeddings of
  the input tokens) or ``fixed_stream`` (the hidden state of the fixed token sequence
  :meth:`fixed_tokens` run through the same blocks). The stack hands the source to the layer as
  ``symbols`` (``[B, L, d]``, aligned with x); standalone, such a layer builds its own."""

  def __init__(self, *, d_model: int, num_heads: int, causal: bool, options: AttentionOptions):
    self.d_model, self.num_heads, self.causal, self.options = d_model, num_heads, causal, options

  @staticmethod
  def apply(params, x, *, num_heads, options=None, causal=False, mask=None, positions=None,
            cache=None, symbols=None):
    """The layer as a pure function of ``params`` (see each variant's ``*_apply``): ``x``
    ``[B, L, d]`` to ``y [B, L, d]``, or ``(y, new_cache)`` when ``cache`` is given."""
    raise NotImplementedError("an attention variant must define its pure `apply`")

  def params(self) -> dict:
    """The parameters ``apply`` reads, as a nested dict of arrays."""
    return params_of(self)

  def apply_kwargs(self) -> dict:
    """The keywords that make ``apply(self.params(), x, mask=..., **kw)`` equal ``self(x)``."""
    return dict(num_heads=self.num_heads, options=self.options, causal=self.causal)

  def __call__(self, x, mask=None, *, positions=None, cache=None, symbols=None):
    """x ``[B, L, d_model]``, optional key mask ``[B, L]`` -> ``[B, L, d_model]``.

    With a ``cache`` (from :meth:`init_cache`) returns ``(y, new_cache)``.
    """
    check_inputs(x, mask, self.d_model)
    return type(self).apply(self.params(), x, mask=mask, positions=positions, cache=cache,
                            symbols=symbols, **self.apply_kwargs())

  def cache_arrays(self) -> dict[str, tuple]:
    """Name -> per-token trailing shape of what decoding caches (keys, values, ...)."""
    raise NotImplementedError(f"attention variant {self.name!r} does not support decoding")

  def init_cache(self, batch_size: int, max_length: int, dtype=None) -> dict:
    """An empty decoding cache for up to ``max_length`` tokens."""
    return init_kv_cache(batch_size, max_length, self.cache_arrays(),
                         dtype or self.options.compute_dtype)

  @classmethod
  def make_retriever(cls, *, d_model: int, max_len: int | None, options: AttentionOptions,
                     rngs: nnx.Rngs):
    """The symbol retriever a stack shares between layers of this variant (None: no symbols)."""
    del d_model, max_len, options, rngs
    return None

  def fixed_tokens(self, length: int, vocab_size: int):
    """The fixed token sequence (int ``[length]`` NumPy) of a ``fixed_stream`` layer."""
    del length, vocab_size
    raise NotImplementedError(f"attention variant {self.name!r} has no fixed token stream")

  def detach_retriever(self) -> None:
    """Drop the layer's own retriever once the stack passes shared symbols (no-op here)."""
