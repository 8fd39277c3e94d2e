"""The one place where a variant name becomes a module: ``REGISTRY``, ``spec`` and ``build``.

A config's attention section becomes an :class:`AttentionSpec` (name, layout and the variant's
typed ``Options``) once, at the settings boundary; everything below reads that object.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import nnx

from attnlab.models.attention.common import AttentionLayer, AttentionOptions
from attnlab.models.checks import check_choice

REGISTRY: dict[str, type[AttentionLayer]] = {}
"""Variant name -> layer class (an :class:`AttentionLayer` with an ``Options`` dataclass)."""

LAYOUTS = ("uniform", "hybrid")
"""``uniform``: the variant in every layer; ``hybrid``: the variant in odd layers (1-indexed),
``standard`` in even ones ("Deconstructing Attention", arXiv 2510.11602)."""

KERNEL_FIELDS = ("impl", "q_chunk", "k_chunk", "head_dim")
"""The options a Hybrid's ``standard`` layers take from the variant: kernel and head width."""


def register(name: str):
  """Class decorator adding an attention layer to :data:`REGISTRY` under ``name``."""

  def wrap(cls):
    if name in REGISTRY:
      raise ValueError(f"attention variant {name!r} registered twice")
    if not (isinstance(cls, type) and issubclass(cls, AttentionLayer)):
      raise TypeError(f"attention variant {name!r} must subclass common.AttentionLayer")
    if not issubclass(cls.Options, AttentionOptions):
      raise TypeError(f"{cls.__name__}.Options must subclass common.AttentionOptions")
    cls.name = name
    REGISTRY[name] = cls
    return cls

  return wrap


def variant(name: str) -> type[AttentionLayer]:
  """The layer class of ``name``: the one check of a variant name."""
  if name not in REGISTRY:
    raise ValueError(f"unknown attention variant {name!r}; choose one of {sorted(REGISTRY)}")
  return REGISTRY[name]


def mechanisms() -> list[str]:
  """The registered attention mechanisms: every variant except the ablation controls
  (``is_control``), sorted by name."""
  return sorted(n for n, cls in REGISTRY.items() if not cls.is_control)


def _check_options_type(name: str, options) -> type[AttentionLayer]:
  """The layer class of ``name``; TypeError unless ``options`` is exactly its Options class."""
  cls = variant(name)
  if type(options) is not cls.Options:
    raise TypeError(f"attention {name!r} takes {cls.Options.__name__}, got "
                    f"{type(options).__name__}")
  return cls


def options_for(name: str, **options: Any) -> AttentionOptions:
  """The typed options of variant ``name``; ValueError lists allowed names/fields."""
  cls = variant(name).Options
  allowed = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for attention variant {name!r}; "
                     f"allowed: {allowed}")
  return cls(**options)


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
  """A checked attention choice: variant ``name``, ``layout`` and its typed ``options``.

  Build it with :func:`spec`. A model asks :meth:`layer` for each layer's (name, options).
  """

  name: str = "standard"
  options: AttentionOptions | None = None
  layout: str = "uniform"

  def __post_init__(self):
    check_choice("attention.layout", self.layout, LAYOUTS)
    if self.options is None:
      object.__setattr__(self, "options", variant(self.name).Options())
    else:
      _check_options_type(self.name, self.options)

  def layer(self, index: int) -> tuple[str, AttentionOptions]:
    """The variant and options of layer ``index`` (0-based) of a stack.

    Hybrid stacks put ``standard`` in every second layer; those layers take the variant's
    :data:`KERNEL_FIELDS` and ``standard``'s defaults for everything else.
    """
    if self.layout == "hybrid" and index % 2 == 1:
      return "standard", options_for("standard", **{f: getattr(self.options, f)
                                                    for f in KERNEL_FIELDS})
    return self.name, self.options


def spec(name: str = "standard", layout: str = "uniform", **options: Any) -> AttentionSpec:
  """An :class:`AttentionSpec` from a variant name, a layout and option keywords."""
  return AttentionSpec(name, options_for(name, **options), layout)


def check_sizes(d_model: int, num_heads: int, head_dim: int | None = None) -> None:
  """Positive sizes; d_model divisible by num_heads unless head_dim is given explicitly."""
  if d_model <= 0 or num_heads <= 0:
    raise ValueError(f"d_model={d_model} and num_heads={num_heads} must be positive")
  if head_dim is None and d_model % num_heads:
    raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")


def build(name: str, options: AttentionOptions, *, d_model: int, num_heads: int, causal: bool,
          rngs: nnx.Rngs, train_length: int | None = None) -> AttentionLayer:
  """Build variant ``name`` from its typed ``options``.

  ``train_length`` (the model's training sequence length) fills the options that depend on it
  (:meth:`AttentionOptions.for_model`).
  """
  cls = _check_options_type(name, options)
  options = options.for_model(train_length=train_length)
  check_sizes(d_model, num_heads, options.head_dim)
  return cls(d_model=d_model, num_heads=num_heads, causal=causal, options=options, rngs=rngs)


def make(name: str, *, d_model: int, num_heads: int, causal: bool, rngs: nnx.Rngs,
         dtype: Any = None, train_length: int | None = None, **options: Any) -> AttentionLayer:
  """Build attention variant ``name`` from option keywords.

  Args:
    name: a key of :data:`REGISTRY`.
    d_model: model width (input and output features).
    num_heads: number of heads.
    causal: causal masking.
    rngs: NNX random streams (``params``).
    dtype: compute dtype, a name (``'bfloat16'``) or a dtype (``jnp.bfloat16``).
    train_length: the training sequence length, for options that scale with it.
    **options: other fields of the variant's ``Options`` dataclass.

  Returns:
    A layer called as ``layer(x, mask=None)`` with x ``[B, L, d_model]``.

  Raises:
    ValueError: unknown name or option, or sizes/options that do not fit.
  """
  if dtype is not None:
    options["dtype"] = jnp.dtype(dtype).name
  return build(name, options_for(name, **options), d_model=d_model, num_heads=num_heads,
               causal=causal, rngs=rngs, train_length=train_length)
