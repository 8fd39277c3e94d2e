"""Head pruning of trained language models (EIT's robustness claim, arXiv 2212.10197).

Zeroing head ``m``'s output before a layer's output projection is the same as zeroing rows
``m * w : (m + 1) * w`` of the projection's kernel ``wo`` (``[M * w, d_model]``, ``w`` the
width of one head's output), so pruning edits parameters and evaluates the model through its
own code path; nothing in the model changes.

:func:`pruning_curve` zeroes ``k`` of the ``M`` heads of every attention layer, ``k = 0 .. M-1``,
the heads picked by ``orders`` random permutations per layer (the first ``k`` of each), and
returns the validation bits per byte of each (k, order) on the run's own validation windows.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from flax import nnx

from attnlab.train.config_loading import ConfigError


PRUNABLE = ("standard", "memory_efficient", "enhanced_interactive")
"""Variants whose heads are concatenated, head by head, into the output projection ``wo``."""


def prunable_layers(model) -> list:
  """The attention layers of ``model`` (each one of :data:`PRUNABLE`)."""
  layers = [block.attn for block in model.stack.blocks]
  for i, attn in enumerate(layers):
    if attn.name not in PRUNABLE:
      raise ConfigError(f"layer {i} is {attn.name!r}; head pruning needs an output projection "
                        f"over concatenated heads: one of {list(PRUNABLE)}")
  return layers


def zero_heads(model, heads_per_layer: Sequence[Sequence[int]]) -> None:
  """Zero, in place, the ``wo`` rows of the given heads of each attention layer."""
  for attn, heads in zip(prunable_layers(model), heads_per_layer):
    kernel = np.array(attn.wo.kernel[...])
    width = kernel.shape[0] // attn.num_heads
    for m in heads:
      kernel[m * width:(m + 1) * width] = 0.0
    attn.wo.kernel[...] = kernel


def pruning_curve(model, evaluate_bpb, *, orders: int = 5, seed: int = 0) -> dict:
  """Validation bpb with ``k`` heads zeroed per layer, for ``k = 0 .. M - 1``.

  Args:
    model: a trained LanguageModel (left unchanged: each evaluation edits a copy).
    evaluate_bpb: ``evaluate_bpb(model) -> float``, bits per byte on the validation windows.
    orders: random head orders (one permutation per layer and order).
    seed: seed of the permutations.

  Returns:
    ``{"num_heads": M, "base_bpb": b, "k": [0..M-1], "bpb": [[order 0 .. orders-1] per k],
    "orders": [[[head order] per layer] per order]}``.
  """
  layers = prunable_layers(model)
  num_heads = layers[0].num_heads
  rng = np.random.default_rng(seed)
  perms = [[rng.permutation(num_heads).tolist() for _ in layers] for _ in range(orders)]
  base = evaluate_bpb(model)
  curve = [[base] * orders]
  for k in range(1, num_heads):
    row = []
    for perm in perms:
      pruned = nnx.clone(model)
      zero_heads(pruned, [p[:k] for p in perm])
      row.append(evaluate_bpb(pruned))
    curve.append(row)
  return {"num_heads": num_heads, "base_bpb": base, "k": list(range(num_heads)), "bpb": curve,
          "orders": perms}


def lm_evaluator(run, workdir: str):
  """``evaluate_bpb(model)`` on the run's validation windows (its LM task, without the Skip and
  extra-context evaluations)."""
  from attnlab.train.tasks import lm
  settings = dataclasses.replace(run.task_settings, skip_layers=(), eval_contexts=())
  task = lm.Task(dataclasses.replace(run, task_settings=settings), workdir)
  return lambda model: float(task.evaluate(lambda: model)["bpb"])
