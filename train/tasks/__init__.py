"""Tasks: what a run trains. One module per task; :data:`NAMES` is the one task list.

Each task module defines ``parse_settings(config_dict, attention_spec)`` (typed settings from
the config; ConfigError for bad values) and a ``Task`` class, a subclass of
:class:`attnlab.train.tasks.base.Task`, which :mod:`attnlab.train.loop` drives.
"""

from __future__ import annotations

import importlib

NAMES = ("lm", "icl_regression", "icl_garg", "mqar", "match_to_sample", "afa_spiral")
"""The task names a config's ``task`` field may take."""


def get(name: str):
  """The task module for ``name`` (one of :data:`NAMES`)."""
  if name not in NAMES:
    raise ValueError(f"unknown task {name!r}; choose one of {list(NAMES)}")
  return importlib.import_module(f"attnlab.train.tasks.{name}")
