"""The one validator of enumerated settings, shared by the layers and the config boundary."""

from __future__ import annotations

from typing import Any, Iterable


def check_choice(field: str, value: Any, allowed: Iterable, error: type = ValueError) -> None:
  """Raise ``error`` naming ``field`` and the allowed values unless ``value`` is one of them.

  Booleans and integers are kept apart (``True`` is not accepted for ``1`` and vice versa).
  """
  allowed = tuple(allowed)
  is_bool = isinstance(value, bool)
  if value not in allowed or (allowed and is_bool != any(isinstance(a, bool) for a in allowed)):
    raise error(f"{field}={value!r} is not allowed; choose one of {allowed}")
