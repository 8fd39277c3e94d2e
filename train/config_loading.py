"""Config files: locate ``get_config(arg)`` by path or module name, apply ``--config.k=v``.

A config is named ``configs/lm.py``, ``lm``, or ``attnlab.configs.lm``, optionally followed by
``:arg`` (structural choices such as ``attention=relational,heads=2,runlocal``). Overrides
``--config.a.b=value`` are parsed to the type of the existing field; an unknown field is an error
(the ConfigDict is locked).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
from types import ModuleType

import ml_collections


class ConfigError(ValueError):
  """A bad config: unknown field or value; the CLI prints it on one line and exits 2."""


def load_module(name: str) -> ModuleType:
  """The config module for a path (``configs/lm.py``) or module name (``lm``)."""
  if name.endswith(".py") or os.sep in name:
    if not os.path.exists(name):
      raise ConfigError(f"config file {name!r} does not exist")
    spec = importlib.util.spec_from_file_location(
        "attnlab_config_" + os.path.basename(name)[:-3], name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
  candidates = [name] if "." in name else [f"attnlab.configs.{name}"]
  for candidate in candidates:
    try:
      return importlib.import_module(candidate)
    except ModuleNotFoundError as e:
      if e.name != candidate:
        raise
  from attnlab import configs  # noqa: F401  (lists what exists)
  available = sorted(f[:-3] for f in os.listdir(os.path.dirname(configs.__file__))
                     if f.endswith(".py") and not f.startswith("_") and f != "common.py")
  raise ConfigError(f"unknown config {name!r}; available: {available}")


def split_spec(spec: str) -> tuple[str, str]:
  """``'configs/lm.py:runlocal'`` -> ``('configs/lm.py', 'runlocal')``."""
  path, _, arg = spec.partition(":")
  return path, arg


def parse_pairs(text: str) -> list[tuple[str, str | None]]:
  """The one ``k=v`` list parser: ``'attention=relational,runlocal'`` ->
  ``[('attention', 'relational'), ('runlocal', None)]`` (in order; a bare flag has None; empty
  items and surrounding spaces dropped). Config args, sweep run names and corpus specs use it."""
  pairs = []
  for part in filter(None, (p.strip() for p in text.split(","))):
    key, eq, value = part.partition("=")
    pairs.append((key.strip(), value.strip() if eq else None))
  return pairs


def parse_arg(arg: str) -> dict[str, str]:
  """``'attention=relational,heads=2,runlocal'`` -> {'attention': 'relational', 'heads': '2',
  'runlocal': 'True'}."""
  return {key: "True" if value is None else value for key, value in parse_pairs(arg)}


def get_config(spec: str, overrides: dict[str, str] | None = None) -> ml_collections.ConfigDict:
  """Load ``spec`` (``path[:arg]``), apply overrides, return the locked ConfigDict."""
  path, arg = split_spec(spec)
  module = load_module(path)
  try:
    config = module.get_config(arg)
  except KeyError as e:  # a lookup of an argument's value in the config's table of choices
    key = e.args[0] if e.args else None
    named = [f"{k}={v}" for k, v in parse_arg(arg).items() if v == str(key)]
    what = f"{' / '.join(named)} is not a known choice" if named else f"unknown key {key!r}"
    hint = _choices_hint(module, key, [n.split("=")[0] for n in named])
    raise ConfigError(f"config {spec!r}: {what}{hint}") from None
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config {spec!r}: {e}") from None
  config.lock()
  for key, value in (overrides or {}).items():
    set_field(config, key, value)
  return config


def _choices_hint(module, key, argnames) -> str:
  """``"; choose one of [...]"`` from the config module's table for the argument (a
  module-level dict named after it, e.g. ``PRESET_STEPS`` or ``PRESETS`` for ``preset``)."""
  for name, value in vars(module).items():
    if (isinstance(value, dict) and value and key not in value
        and any(name.upper().startswith(a.upper()) for a in argnames if a)):
      return f"; choose one of {sorted(map(str, value))}"
  return ""


def parse_value(text: str, current):
  """Parse ``text`` to the type of ``current``."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"expected a boolean, got {text!r}")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(current, (tuple, list)) and isinstance(value, (list, tuple)):
    return type(current)(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (str, int, float)):
    return type(current)((value,))  # one plain item: `--config.data.data_files=/x.txt`
  return value


def set_field(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Set ``config.a.b = parse(text)``; ConfigError names the field and what exists."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, part in enumerate(parents):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parents[:i]) or "<top>"
      raise ConfigError(f"unknown config field {dotted!r}: {where} has no field {part!r}")
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    allowed = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    raise ConfigError(f"unknown config field {dotted!r}; fields here: {allowed}")
  current = node[leaf]
  if text is True and not isinstance(current, bool):
    raise ConfigError(f"--config.{dotted} needs a value (--config.{dotted}=VALUE; the field "
                      f"holds {current!r}); only boolean fields may be given bare")
  try:
    value = parse_value(text, current) if isinstance(text, str) else text
    with node.unlocked() if current is None else _nullcontext():
      node[leaf] = value
  except (ValueError, TypeError) as e:
    raise ConfigError(f"bad value {text!r} for config field {dotted!r}: {e}") from None


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
