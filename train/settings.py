"""The one boundary where an ml_collections ConfigDict becomes frozen, typed dataclasses.

Everything after :func:`from_config` (tasks, loop, models) reads these dataclasses only.
Every check here runs before anything compiles and raises :class:`ConfigError` naming the field
and the allowed values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from attnlab.models import attention
from attnlab.models.checks import check_choice
from attnlab.train.config_loading import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant")


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """optax optimizer: ``name`` in OPTIMIZERS, ``schedule`` in SCHEDULES."""

  name: str = "adamw"
  lr: float = 1e-3
  schedule: str = "warmup_cosine"
  warmup_steps: int = 100
  min_lr_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class MeshSettings:
  """Device mesh ``(data, model)``; -1 takes the remaining devices. ``fsdp`` shards the
  ``embed`` axis of parameters over ``data``; ``heads``/``mlp``/``vocab`` always map to
  ``model`` (tensor parallel when model > 1)."""

  data: int = -1
  model: int = 1
  fsdp: bool = False


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  """Orbax checkpoints every ``every`` steps, keep ``max_to_keep``; ``init_from`` a directory."""

  every: int = 500
  max_to_keep: int = 2
  async_save: bool = True
  init_from: str = ""


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """A whole run. ``task`` picks the task module; ``task_settings`` is its typed section;
  ``attention`` the checked attention choice every model of the run is built from."""

  task: str
  steps: int
  seed: int
  batch_size: int
  grad_accum_steps: int
  log_every: int
  eval_every: int
  optimizer: OptimizerSettings
  mesh: MeshSettings
  checkpoint: CheckpointSettings
  attention: attention.AttentionSpec
  task_settings: Any
  config_dict: Mapping[str, Any]


def _section(cls, cd: ml_collections.ConfigDict, name: str):
  values = cd.get(name, ml_collections.ConfigDict()).to_dict()
  allowed = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - allowed)
  if unknown:
    raise ConfigError(f"unknown field(s) {unknown} in config.{name}; allowed: {sorted(allowed)}")
  return cls(**values)


def _choice(field: str, value, allowed) -> None:
  check_choice(f"config.{field}", value, allowed, error=ConfigError)


def _positive(field: str, value, allow_zero=False) -> None:
  if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
    raise ConfigError(f"config.{field} must be a {'non-negative' if allow_zero else 'positive'} "
                      f"integer, got {value!r}")


def _optimizer_numbers(opt: OptimizerSettings) -> None:
  """Learning rate finite and > 0; the other optimizer numbers in their ranges."""
  import math
  def number(field, value, ok, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and ok(value)):
      raise ConfigError(f"config.optimizer.{field} must be {what}, got {value!r}")
  number("lr", opt.lr, lambda v: v > 0, "a finite number > 0")
  number("min_lr_ratio", opt.min_lr_ratio, lambda v: 0 <= v <= 1, "in [0, 1]")
  number("b1", opt.b1, lambda v: 0 <= v < 1, "in [0, 1)")
  number("b2", opt.b2, lambda v: 0 <= v < 1, "in [0, 1)")
  number("eps", opt.eps, lambda v: v >= 0, ">= 0")
  number("weight_decay", opt.weight_decay, lambda v: v >= 0, ">= 0")
  number("clip_norm", opt.clip_norm, lambda v: v >= 0, ">= 0 (0 turns clipping off)")
  if isinstance(opt.warmup_steps, bool) or not isinstance(opt.warmup_steps, int) \
      or opt.warmup_steps < 0:
    raise ConfigError(f"config.optimizer.warmup_steps must be a non-negative integer, "
                      f"got {opt.warmup_steps!r}")


def from_config(cd: ml_collections.ConfigDict) -> RunSettings:
  """Validate ``cd`` and turn it into :class:`RunSettings` (raises ConfigError)."""
  from attnlab.train import tasks  # task modules register their parsers

  _choice("task", cd.task, tasks.NAMES)
  for field in ("steps", "batch_size", "grad_accum_steps", "log_every", "eval_every"):
    _positive(field, cd[field], allow_zero=field == "steps")
  if cd.batch_size % cd.grad_accum_steps:
    raise ConfigError(f"config.batch_size={cd.batch_size} is not divisible by "
                      f"config.grad_accum_steps={cd.grad_accum_steps}")
  optimizer = _section(OptimizerSettings, cd, "optimizer")
  _choice("optimizer.name", optimizer.name, OPTIMIZERS)
  _choice("optimizer.schedule", optimizer.schedule, SCHEDULES)
  _optimizer_numbers(optimizer)
  mesh = _section(MeshSettings, cd, "mesh")
  checkpoint = _section(CheckpointSettings, cd, "checkpoint")
  _positive("checkpoint.every", checkpoint.every)
  _positive("checkpoint.max_to_keep", checkpoint.max_to_keep)
  spec = attention_spec(cd)
  try:
    task_settings = tasks.get(cd.task).parse_settings(cd, spec)
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  return RunSettings(task=cd.task, steps=cd.steps, seed=cd.seed, batch_size=cd.batch_size,
                     grad_accum_steps=cd.grad_accum_steps, log_every=cd.log_every,
                     eval_every=cd.eval_every, optimizer=optimizer, mesh=mesh,
                     checkpoint=checkpoint, attention=spec, task_settings=task_settings,
                     config_dict=cd.to_dict())


def attention_spec(cd: ml_collections.ConfigDict) -> attention.AttentionSpec:
  """The typed attention choice from ``config.attention`` (name, impl, layout, options).

  The one place a config's attention section is read: an unknown variant, layout, option or
  option value is a ConfigError naming the field and the allowed values.
  """
  att = cd.attention
  options = dict(att.options.to_dict()) if "options" in att else {}
  options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
  if att.get("impl") is not None:
    options["impl"] = att.impl
  try:
    return attention.spec(att.name, att.get("layout", "uniform"), **options)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.attention: {e}") from None
