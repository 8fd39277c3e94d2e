"""The one place where a variant name becomes a module: ``REGISTRY`` and ``make``."""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

REGISTRY: dict[str, type[nnx.Module]] = {}
"""Variant name -> NNX module class. Each class has an ``Options`` dataclass attribute."""


def register(name: str):
  """Class decorator adding an attention module to :data:`REGISTRY` under ``name``."""

  def wrap(cls):
    if name in REGISTRY:
      raise ValueError(f"attention variant {name!r} registered twice")
    cls.name = name
    REGISTRY[name] = cls
    return cls

  return wrap


def options_for(name: str, **options: Any):
  """The typed options dataclass of variant ``name``; ValueError lists allowed names/fields."""
  if name not in REGISTRY:
    raise ValueError(f"unknown attention variant {name!r}; choose one of {sorted(REGISTRY)}")
  cls = REGISTRY[name].Options
  allowed = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for attention variant {name!r}; "
                     f"allowed: {allowed}")
  return cls(**options)


def check_sizes(d_model: int, num_heads: int, head_dim: int | None = None) -> None:
  """Positive sizes; d_model divisible by num_heads unless head_dim is given explicitly."""
  if d_model <= 0 or num_heads <= 0:
    raise ValueError(f"d_model={d_model} and num_heads={num_heads} must be positive")
  if head_dim is None and d_model % num_heads:
    raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")


def make(name: str, *, d_model: int, num_heads: int, causal: bool, rngs: nnx.Rngs,
         **options: Any) -> nnx.Module:
  """Build attention variant ``name``.

  Args:
    name: a key of :data:`REGISTRY`.
    d_model: model width (input and output features).
    num_heads: number of heads.
    causal: causal masking.
    rngs: NNX random streams (``params``).
    **options: fields of the variant's ``Options`` dataclass.

  Returns:
    An NNX module called as ``layer(x, mask=None)`` with x ``[B, L, d_model]``.

  Raises:
    ValueError: unknown name or option, or sizes/options that do not fit.
  """
  opts = options_for(name, **options)
  check_sizes(d_model, num_heads, getattr(opts, "head_dim", None))
  return REGISTRY[name](d_model=d_model, num_heads=num_heads, causal=causal, options=opts,
                        rngs=rngs)
