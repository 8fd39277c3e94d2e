"""Tasks: what a run trains. Each task module defines ``parse_settings(config_dict)`` and a
``Task`` class (model, batches, loss, evaluation) used by :mod:`attnlab.train.loop`."""

from __future__ import annotations

import importlib

_MODULES = {
    "lm": "attnlab.train.tasks.lm",
    "icl_regression": "attnlab.train.tasks.icl_regression",
    "icl_garg": "attnlab.train.tasks.icl_garg",
}


def get(name: str):
  """The task module for ``name`` (one of ``lm``, ``icl_regression``, ``icl_garg``)."""
  if name not in _MODULES:
    raise ValueError(f"unknown task {name!r}; choose one of {sorted(_MODULES)}")
  return importlib.import_module(_MODULES[name])
