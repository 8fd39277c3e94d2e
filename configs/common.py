"""Shared pieces of the study configs: the base ConfigDict and the attention section."""

from __future__ import annotations

import dataclasses

import ml_collections

from attnlab.train.config_loading import parse_arg  # noqa: F401  (configs call common.parse_arg)

# Options every run sets elsewhere (model dtype, positions, init), not per-variant options.
_COMMON_FIELDS = ("impl", "dtype", "rope", "rope_theta", "init", "init_std", "out_init_std",
                  "head_dim", "q_chunk", "k_chunk", "use_bias")


def derived(config: ml_collections.ConfigDict, field: str, fn) -> ml_collections.FieldReference:
  """A value that follows ``config[field]`` through ``fn`` (an ml_collections FieldReference):
  ``c.eval_every = derived(c, "steps", lambda s: s // 4)`` moves with ``--config.steps=...``
  unless ``--config.eval_every=...`` sets it explicitly. ``config.json`` records the value."""
  return config.get_ref(field)._apply_op(fn)  # pylint: disable=protected-access


def check_arg_keys(args: dict, allowed) -> None:
  """Raises ValueError naming the unknown keys of ``args`` and the allowed ones."""
  unknown = sorted(set(args) - set(allowed))
  if unknown:
    raise ValueError(f"unknown config argument(s) {unknown}; allowed: {sorted(allowed)}")


def attention_section(name: str, impl: str | None = None, layout: str = "uniform",
                      **options) -> ml_collections.ConfigDict:
  """``config.attention``: name, impl (default: the variant's own), layout and the variant's
  own options (all its fields with their defaults, so ``--config.attention.options.X=...``
  works under lock_config). The settings boundary turns it into an ``AttentionSpec``."""
  from attnlab.models import attention
  option_cls = attention.variant(name).Options
  fields = {f.name: f.default for f in dataclasses.fields(option_cls)
            if f.name not in _COMMON_FIELDS and f.default is not dataclasses.MISSING}
  fields.update(options)
  return ml_collections.ConfigDict({"name": name, "impl": impl or option_cls.impl,
                                    "layout": layout,
                                    "options": ml_collections.ConfigDict(fields)})


def base(task: str) -> ml_collections.ConfigDict:
  """Top-level fields every config has."""
  c = ml_collections.ConfigDict()
  c.task = task
  c.steps = 1000
  c.seed = 0
  c.batch_size = 32
  c.grad_accum_steps = 1
  c.log_every = 50
  c.eval_every = 500
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=100, min_lr_ratio=0.1,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1, fsdp=False))
  c.checkpoint = ml_collections.ConfigDict(dict(every=500, max_to_keep=2, async_save=True,
                                                init_from=""))
  return c
